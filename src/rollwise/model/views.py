"""What one evaluation cycle sees and what it decides, as frozen values.

`DeploymentView` and `RouteView` are the strategy engine's input (built by the plan reader from JSON, or
by the control layer from database rows); `Decision` is its output. Route and revision ids are opaque
strings here: the control layer maps them to its own keys. `CapacityView` (part of `DeploymentView`)
says how many more routes of the target revision can be placed this cycle; its default is unlimited.
A canary's state travels in `DeploymentView` too (`canary_step`, `step_started_at`,
`promote_full_requested`, `analysis`), and its decisions carry `set_canary_step` and `weights`
(docs/strategies.md, "Canary").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from rollwise.model.enums import Health, Mode, RollbackReason, RouteStatus, SubStep, Traffic


READY_HEALTH = frozenset({Health.HEALTHY, Health.DEGRADED})
"""Health values of a running route that serves and counts (docs/strategies.md, "Words"): `degraded`
means some probes failed, but fewer than the revision's `unhealthy_threshold` in a row."""


def is_ready_state(status: RouteStatus, health: Health, *, has_health_check: bool) -> bool:
    """THE definition of "ready", used by the strategies, the route controller's routing table and the
    API: running, and healthy or degraded (or without a health check)."""
    return status is RouteStatus.RUNNING and (health in READY_HEALTH or not has_health_check)


@dataclass(frozen=True, slots=True)
class RouteView:
    id: str
    revision: str
    status: RouteStatus
    health: Health
    traffic: Traffic
    traffic_ratio: float
    has_health_check: bool
    failed: bool
    created_at: datetime
    status_updated_at: datetime

    @property
    def is_ready(self) -> bool:
        return is_ready_state(self.status, self.health, has_health_check=self.has_health_check)


@dataclass(frozen=True, slots=True)
class CapacityView:
    """Room for one deployment's target revision in one cycle (docs/strategies.md, "Capacity").

    `placeable` is P: how many more routes of the target revision (the deploying revision in forward
    mode, the current one while rolling back) can be placed now; None means unlimited (a revision that
    needs nothing, or a runtime that does not count). `need` (what ONE route of the target revision
    needs, e.g. {"gpu": 1}) and `free` (what is free, e.g. {"gpu": 0}) only feed the reason's words;
    the rules read `placeable` alone. Both are copied into read-only mappings.
    """

    placeable: int | None = None
    need: Mapping[str, int] = field(default_factory=dict)
    free: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "need", MappingProxyType(dict(self.need)))
        object.__setattr__(self, "free", MappingProxyType(dict(self.free)))

    def __hash__(self) -> int:
        return hash((self.placeable, tuple(sorted(self.need.items())), tuple(sorted(self.free.items()))))

    @property
    def is_limited(self) -> bool:
        return self.placeable is not None


UNLIMITED = CapacityView()
"""No limit on placing routes: the capacity of every view until the runtime counts resources."""


@dataclass(frozen=True, slots=True)
class AnalysisCounts:
    """What the control layer measured of a canary's analysis during the current rollout (docs/
    strategies.md, "Canary"). The strategy engine only reads it: `failed` >= the policy's
    `failure_limit` rolls back; `interval_passed` (every measurement of the current interval passed)
    is what the final step waits for."""

    failed: int = 0
    passed: int = 0
    inconclusive: int = 0
    last_failure: str | None = None
    """The words of the newest failed measurement, e.g. "errors = 0.034 > 0.01" (the rollback reason)."""
    interval_passed: bool = True


NO_ANALYSIS = AnalysisCounts()


@dataclass(frozen=True, slots=True)
class DeploymentView:
    desired_replicas: int
    current_revision: str | None
    deploying_revision: str | None
    mode: Mode = Mode.FORWARD
    paused: bool = False
    abort_requested: bool = False
    promote_requested: bool = False
    rollout_started_at: datetime | None = None
    last_progress_at: datetime | None = None
    capacity: CapacityView = UNLIMITED
    """Room for the target revision this cycle; unlimited unless the control layer (or `rollwise plan`'s
    `capacity`) says otherwise."""
    canary_step: int = 0
    """Canary: index of the current step in the policy's `steps`; len(steps) is the final step."""
    step_started_at: datetime | None = None
    """Canary: when the current step began (a timed pause ends `seconds` after it)."""
    promote_full_requested: bool = False
    """Canary: `promote --full`: skip to the final step."""
    analysis: AnalysisCounts = NO_ANALYSIS
    """Canary: the analysis measured so far in this rollout."""


@dataclass(frozen=True, slots=True)
class RouteCreate:
    revision: str
    traffic: Traffic
    traffic_ratio: float


@dataclass(frozen=True, slots=True)
class TrafficChange:
    id: str
    traffic: Traffic
    traffic_ratio: float


@dataclass(frozen=True, slots=True)
class Decision:
    """One cycle's decision for one deployment (as JSON: docs/strategies.md, `rollwise plan` "Output")."""

    sub_step: SubStep
    mode: Mode
    reason: str
    create: tuple[RouteCreate, ...] = ()
    terminate: tuple[str, ...] = ()
    traffic: tuple[TrafficChange, ...] = ()
    rollback_reason: RollbackReason | None = None
    """Set in the cycle that starts a rollback."""
    set_paused: bool = False
    """The progress deadline paused the rollout: the controller sets the deployment's paused flag."""
    requeue_after: float | None = None
    """Seconds after which this decision changes with no other event (auto-promotion, a canary's timed
    pause or a route's min_ready_seconds ends, the progress deadline falls due): the controller looks
    again then. In the plan output of canary decisions only."""
    set_canary_step: int | None = None
    """Canary: the step index after this cycle, when it changed (the controller stores it and sets
    `step_started_at` to now)."""
    weights: Mapping[str, int] | None = None
    """Canary: revision -> percent of the deployment's requests, e.g. {"r1": 90, "r2": 10}, the split the
    proxy applies over each revision's ready routes. None: the proxy weighs by routes (other strategies).
    Copied into a read-only mapping."""

    def __post_init__(self) -> None:
        if self.weights is not None:
            object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def __hash__(self) -> int:
        weights = None if self.weights is None else tuple(sorted(self.weights.items()))
        return hash((self.sub_step, self.mode, self.reason, self.create, self.terminate, self.traffic,
                     self.rollback_reason, self.set_paused, self.requeue_after, self.set_canary_step, weights))

    @property
    def changes_routes(self) -> bool:
        return bool(self.create or self.terminate or self.traffic)
