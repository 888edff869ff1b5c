"""The per-cycle view every strategy reads, the termination order, and replica arithmetic. Pure.

`build_view` reads the routes of one deployment once: it counts the routes that are going away but
still hold their resources (`releasing`: `terminating`, or failed before their process exited), drops
the routes that no longer count (`terminating`, `terminated`), sorts the rest into the termination order
once, and splits them into the groups of docs/strategies.md ("Words"): target routes (provisioning,
unready, ready, counted failures) and other routes (provisioning, unready, ready). Every group keeps the
termination order, so a rule that terminates k routes of a group takes its first k. The view also
carries the deployment's capacity for its target revision (`capacity`, docs/strategies.md "Capacity").

`min_ready_seconds` (the policy's, every strategy): a route of the TARGET revision that is ready by
`RouteView.is_ready` but became so less than `min_ready_seconds` ago (`now - status_updated_at`) is
*warming*: it counts as not ready (an unready route) everywhere in the view, ranks after the other
not-ready routes in the termination order, and `CycleView.ready_wait` says when the first of them will
count. Routes of the other revisions are never warming: they already serve, and counting one that
turned healthy a moment ago (a rollout started right after a scale-up) as not ready would let the rules
terminate it as "serving nothing" (docs/strategies.md, "Decisions").
The strategy modules (`rolling`, `blue_green`, `recreate`, `canary`) and the engine read `CycleView`; nothing else
builds one.

Also here, because more than one strategy needs them: `resolve_int_or_percent` and
`resolve_rolling_limits` (the Kubernetes-style arithmetic of `max_surge` / `max_unavailable`) and
`pick_surplus` (which routes go when there are too many).

Must not: read the clock, do I/O, or import anything but `rollwise.model` and the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from rollwise.model import (
    CapacityView,
    DeploymentView,
    Health,
    Mode,
    RouteStatus,
    RouteView,
    Traffic,
    TrafficChange,
)
from rollwise.model.policy import IntOrPercent

# --------------------------------------------------------------------------------------------------
# Route predicates (docs/strategies.md, "Words, as implemented")


def is_failed(route: RouteView) -> bool:
    """A route that failed: `failed` is set, or it reached `failed_to_start` (which implies failure)."""
    return route.failed or route.status is RouteStatus.FAILED_TO_START


def is_alive(route: RouteView) -> bool:
    """`provisioning` or `running`, and not failed (a failed route is on its way out, never alive)."""
    return route.status.is_alive and not is_failed(route)


def is_ignored(route: RouteView) -> bool:
    """`terminating` / `terminated`: never alive, never terminated again (still counted if failed)."""
    return route.status in (RouteStatus.TERMINATING, RouteStatus.TERMINATED)


def is_releasing(route: RouteView) -> bool:
    """On its way out but still holding what it was given (docs/strategies.md, "Capacity"): status
    `terminating` (its process drains), or failed while its status is still `provisioning` / `running`
    (its process has not exited yet). `terminated` and `failed_to_start` routes hold nothing."""
    return route.status is RouteStatus.TERMINATING or (is_failed(route) and route.status.is_alive)


# --------------------------------------------------------------------------------------------------
# Termination order


class TerminationRank(IntEnum):
    """Who goes first when a rule terminates k routes of a set (lower goes first)."""

    PROVISIONING = 0
    UNHEALTHY = 1
    NOT_CHECKED = 2
    WARMING = 3
    """Healthy, but for less than `min_ready_seconds`: not ready yet, the last of the not-ready to go."""
    DEGRADED = 4
    """Ready (it serves and counts), but some probes failed: the first of the ready routes to go."""
    READY = 5


_UNREADY_RANK = {
    Health.UNHEALTHY: TerminationRank.UNHEALTHY,
    Health.NOT_CHECKED: TerminationRank.NOT_CHECKED,
}


NO_IDS: frozenset[str] = frozenset()


def termination_rank(route: RouteView, warming: frozenset[str] = NO_IDS) -> TerminationRank:
    """The route's rank in the termination order; `warming`: ids of routes that are ready by their
    health but not yet for `min_ready_seconds` (they count as not ready)."""
    if route.status is RouteStatus.PROVISIONING:
        return TerminationRank.PROVISIONING
    if route.id in warming and route.is_ready:
        return TerminationRank.WARMING
    if route.is_ready:
        return TerminationRank.DEGRADED if route.health is Health.DEGRADED else TerminationRank.READY
    # Not ready while running: unhealthy or not yet checked (degraded and healthy are ready).
    return _UNREADY_RANK.get(route.health, TerminationRank.NOT_CHECKED)


def termination_key(route: RouteView, warming: frozenset[str] = NO_IDS) -> tuple[int, datetime, str]:
    """Not ready before ready (provisioning, unhealthy, not_checked, warming), then ready (degraded
    before healthy); then older `created_at` first; then `id`."""
    return (termination_rank(route, warming), route.created_at, route.id)


def in_termination_order(routes: Iterable[RouteView], warming: frozenset[str] = NO_IDS) -> tuple[RouteView, ...]:
    return tuple(sorted(routes, key=lambda r: termination_key(r, warming)))


def pick_surplus(alive: Sequence[RouteView], count: int, warming: frozenset[str] = NO_IDS) -> tuple[RouteView, ...]:
    """The `count` routes to drop from `alive` (one revision's alive routes, in termination order)
    when it has more than needed: every not-ready route first (termination order), then ready routes,
    degraded before healthy, each newest first (the rolling update's completion rule; Kubernetes also
    scales down the newest first).
    Example: alive p1 (provisioning), u1 (unhealthy), ready r1 (oldest), r2, r3 (newest); count 3
    -> p1, u1, r3. With r1 degraded: p1, u1, r1.
    """
    if count <= 0:
        return ()

    def is_ready(r: RouteView) -> bool:
        return r.is_ready and r.id not in warming

    not_ready = [r for r in alive if not is_ready(r)]
    # termination_key ranks degraded before healthy; reversing it would put healthy first, so the
    # rank is kept ascending and only (created_at, id) is reversed: newest first within each rank.
    ready = sorted((r for r in alive if is_ready(r)), key=termination_key, reverse=True)
    ready.sort(key=termination_rank)  # stable: keeps newest-first inside each rank
    return tuple((not_ready + ready)[:count])


# --------------------------------------------------------------------------------------------------
# Replica arithmetic (max_surge / max_unavailable)

_PERCENT = re.compile(r"^\s*(\d+)%\s*$")


def resolve_int_or_percent(value: IntOrPercent, total: int, *, round_up: bool) -> int:
    """A replica count as written (`3` or `"25%"`) resolved against `total` replicas.

    Integers are used as they are. A percentage p of D is ceil(D * p / 100) when `round_up` (surge)
    and floor(D * p / 100) otherwise (unavailable), in exact integer arithmetic:
    D=10 "25%" -> 3 up, 2 down; D=1 "25%" -> 1 up, 0 down; D=0 -> 0.
    Percentages are whole numbers (the policy rejects "12.5%", as Kubernetes does).
    """
    if isinstance(value, int):
        return value
    m = _PERCENT.match(value)
    if m is None:  # the policy validator never lets this through
        raise ValueError(f"{value!r} is not an integer or a percentage like \"25%\"")
    scaled = total * int(m.group(1))
    return -(-scaled // 100) if round_up else scaled // 100


@dataclass(frozen=True, slots=True)
class RollingLimits:
    """`max_surge` / `max_unavailable` resolved against the current D."""

    surge: int
    unavailable: int


def resolve_rolling_limits(max_surge: IntOrPercent, max_unavailable: IntOrPercent, desired: int) -> RollingLimits:
    """surge = ceil(D * p) (or the integer); unavailable = floor(D * p) (or the integer);
    if both resolve to 0, unavailable becomes 1; finally unavailable is clamped to D.

    The clamp comes last (as in Kubernetes' `MaxUnavailable`), so unavailable <= D always holds;
    this only matters for D = 0, where (0, 0) and (0, 1) decide exactly the same routes.
    Examples: D=10 "25%"/"25%" -> (3, 2); D=1 "25%"/"25%" -> (1, 0); D=3 "0%"/"10%" -> (0, 1);
    D=3 1/5 -> (1, 3); D=0 "25%"/0 -> (0, 0).
    """
    surge = resolve_int_or_percent(max_surge, desired, round_up=True)
    unavailable = resolve_int_or_percent(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return RollingLimits(surge=surge, unavailable=min(unavailable, desired))


# --------------------------------------------------------------------------------------------------
# The per-cycle view


@dataclass(frozen=True, slots=True)
class CycleView:
    """One deployment as one cycle sees it, for one target revision. Built by `build_view`.

    Every route tuple is in termination order. `routes` holds every route that still counts (not
    `terminating` / `terminated`), so the engine can re-split the same snapshot for a rollback.
    """

    now: datetime
    deployment: DeploymentView
    mode: Mode
    target: str
    """T: `deploying_revision` in forward mode, `current_revision` while rolling back."""
    routes: tuple[RouteView, ...]
    target_provisioning: tuple[RouteView, ...]
    target_unready: tuple[RouteView, ...]
    target_ready: tuple[RouteView, ...]
    target_failed: tuple[RouteView, ...]
    """Failed target routes that count against the failure threshold (created at/after the rollout
    started, when that is known); includes failed routes already `terminating`/`terminated`."""
    other_provisioning: tuple[RouteView, ...]
    other_unready: tuple[RouteView, ...]
    other_ready: tuple[RouteView, ...]
    releasing: int
    """Routes of this deployment (any revision) going away but still holding their resources
    (`is_releasing`); counted before `terminating` routes are dropped from `routes`."""
    capacity: CapacityView
    """Room for the target revision: the deployment's capacity, or "nothing placeable, not known for
    this revision" in a view re-split for another mode (see `capacity_known`)."""
    capacity_known: bool
    """False only in a view `for_mode` made for the other mode while the deployment's capacity is
    limited: the capacity the control layer computed is for the other revision, so nothing is placed."""
    min_ready_seconds: float = 0.0
    """The policy's `min_ready_seconds`: how long a route must have been ready before it counts."""
    warming: frozenset[str] = NO_IDS
    """Ids of alive routes ready by their health for less than `min_ready_seconds`: not ready yet."""

    @property
    def desired(self) -> int:
        """D: the latest desired replica count."""
        return self.deployment.desired_replicas

    # counts named as in the spec
    @property
    def t_prov(self) -> int:
        return len(self.target_provisioning)

    @property
    def t_unready(self) -> int:
        return len(self.target_unready)

    @property
    def t_ready(self) -> int:
        return len(self.target_ready)

    @property
    def t_alive(self) -> int:
        return self.t_prov + self.t_unready + self.t_ready

    @property
    def t_failed(self) -> int:
        return len(self.target_failed)

    @property
    def o_ready(self) -> int:
        return len(self.other_ready)

    @property
    def o_unready(self) -> int:
        """Other routes that are alive but not ready, `provisioning` included (as in the spec)."""
        return len(self.other_provisioning) + len(self.other_unready)

    @property
    def o_alive(self) -> int:
        return self.o_unready + self.o_ready

    # route groups
    @property
    def target_alive(self) -> tuple[RouteView, ...]:
        return self.target_provisioning + self.target_unready + self.target_ready

    @property
    def other_not_ready(self) -> tuple[RouteView, ...]:
        return self.other_provisioning + self.other_unready

    @property
    def other_alive(self) -> tuple[RouteView, ...]:
        return self.other_provisioning + self.other_unready + self.other_ready

    def is_ready(self, route: RouteView) -> bool:
        """Ready, and for at least `min_ready_seconds` (use this, not `RouteView.is_ready`)."""
        return route.is_ready and route.id not in self.warming

    def surplus(self, alive: Sequence[RouteView], count: int) -> tuple[RouteView, ...]:
        """`pick_surplus` with this view's notion of ready."""
        return pick_surplus(alive, count, self.warming)

    def ready_wait(self, *, excluding: Iterable[str] = ()) -> tuple[int, float] | None:
        """(how many warming routes, seconds until the first of them counts as ready), ignoring the
        routes in `excluding` (terminated by the decision); None when no route is warming."""
        gone = set(excluding)
        waits = [
            self.min_ready_seconds - (self.now - r.status_updated_at).total_seconds()
            for r in self.routes
            if r.id in self.warming and r.id not in gone
        ]
        if not waits:
            return None
        return len(waits), max(0.0, min(waits))

    def placeable(self, wanted: int) -> int:
        """`wanted` new target routes capped by P, the number of routes that can be placed now."""
        p = self.capacity.placeable
        return max(0, wanted) if p is None else max(0, min(wanted, p))

    def for_mode(self, mode: Mode) -> CycleView:
        """The same snapshot split for another mode (the engine uses it to start a rollback).

        The deployment's capacity counts routes of its own mode's target revision; a view for the
        other mode gets it only when it is unlimited. A limited one becomes "0 placeable, not known"
        (the other revision may need other resources): the next cycle, in that mode, has its own."""
        deployment = self.deployment
        known = mode is deployment.mode or not deployment.capacity.is_limited
        return _split(
            deployment, self.routes, now=self.now, mode=mode, releasing=self.releasing, known=known,
            min_ready_seconds=self.min_ready_seconds,
        )


def target_revision(deployment: DeploymentView, mode: Mode) -> str | None:
    return deployment.deploying_revision if mode is Mode.FORWARD else deployment.current_revision


def build_view(
    deployment: DeploymentView,
    routes: Iterable[RouteView],
    *,
    now: datetime,
    mode: Mode | None = None,
    min_ready_seconds: float = 0.0,
) -> CycleView:
    """Sort and classify `routes` once. `mode` defaults to the deployment's mode. The target revision
    of that mode must not be None (the engine checks that first). The deployment's capacity is for its
    own mode's target: a view for the other mode gets it only when it is unlimited (see `for_mode`).
    A route ready by its health for less than `min_ready_seconds` is not ready yet (warming)."""
    routes = tuple(routes)
    releasing = sum(1 for r in routes if is_releasing(r))
    mode = deployment.mode if mode is None else mode
    warming = _warming(routes, now, min_ready_seconds, target_revision(deployment, mode))
    kept = in_termination_order((r for r in routes if not is_ignored(r) or is_failed(r)), warming)
    known = mode is deployment.mode or not deployment.capacity.is_limited
    return _split(
        deployment, kept, now=now, mode=mode, releasing=releasing, known=known, min_ready_seconds=min_ready_seconds
    )


def _warming(
    routes: Iterable[RouteView], now: datetime, min_ready_seconds: float, target: str | None
) -> frozenset[str]:
    """Ids of alive routes of the `target` revision that are ready by their health, but for less than
    `min_ready_seconds` (`now - status_updated_at`, the moment they turned healthy)."""
    if min_ready_seconds <= 0:
        return NO_IDS
    return frozenset(
        r.id for r in routes
        if r.revision == target and is_alive(r) and r.is_ready
        and (now - r.status_updated_at).total_seconds() < min_ready_seconds
    )


_NOT_KNOWN = CapacityView(placeable=0)


def _split(
    deployment: DeploymentView,
    routes: tuple[RouteView, ...],
    *,
    now: datetime,
    mode: Mode,
    releasing: int,
    known: bool = True,
    min_ready_seconds: float = 0.0,
) -> CycleView:
    target = target_revision(deployment, mode)
    if target is None:  # guarded by engine.check_decidable
        raise ValueError(f"no target revision in {mode} mode")
    started = deployment.rollout_started_at
    warming = _warming(routes, now, min_ready_seconds, target)
    t_prov: list[RouteView] = []
    t_unready: list[RouteView] = []
    t_ready: list[RouteView] = []
    t_failed: list[RouteView] = []
    o_prov: list[RouteView] = []
    o_unready: list[RouteView] = []
    o_ready: list[RouteView] = []
    for r in routes:
        mine = r.revision == target
        if is_failed(r):
            if mine and (started is None or r.created_at >= started):
                t_failed.append(r)
        elif is_ignored(r):
            continue
        elif r.status is RouteStatus.PROVISIONING:
            (t_prov if mine else o_prov).append(r)
        elif r.is_ready and r.id not in warming:
            (t_ready if mine else o_ready).append(r)
        else:
            (t_unready if mine else o_unready).append(r)
    return CycleView(
        now=now,
        deployment=deployment,
        mode=mode,
        target=target,
        routes=routes,
        target_provisioning=tuple(t_prov),
        target_unready=tuple(t_unready),
        target_ready=tuple(t_ready),
        target_failed=tuple(t_failed),
        other_provisioning=tuple(o_prov),
        other_unready=tuple(o_unready),
        other_ready=tuple(o_ready),
        releasing=releasing,
        capacity=deployment.capacity if known else _NOT_KNOWN,
        capacity_known=known,
        min_ready_seconds=min_ready_seconds,
        warming=warming,
    )


# --------------------------------------------------------------------------------------------------
# Small helpers shared by the strategies


def ids(routes: Iterable[RouteView]) -> tuple[str, ...]:
    return tuple(r.id for r in routes)


def activations(routes: Iterable[RouteView], *, dropping: Iterable[RouteView] = ()) -> tuple[TrafficChange, ...]:
    """Traffic changes that put back into the traffic layer the routes of `routes` (target routes that
    stay) which would otherwise receive nothing: traffic `inactive` or ratio 0. Rolling and recreate
    serve every target route; a target route left inactive (a superseded blue-green rollout of the
    same revision, say) would otherwise complete a rollout that serves nothing."""
    gone = {r.id for r in dropping}
    return tuple(
        TrafficChange(id=r.id, traffic=Traffic.ACTIVE, traffic_ratio=1.0)
        for r in routes
        if r.id not in gone and (r.traffic is not Traffic.ACTIVE or r.traffic_ratio <= 0)
    )
