"""`rollwise simulate`: one deployment from READY on v1 through a rollout to v2, on the real
coordinator, store (a temporary SQLite file) and the simulated runtime, with a manual clock.

Each round advances the clock by `tick` seconds and runs the route controller and every cycle once, so a
run is deterministic for given options and seed. The run ends when the rollout ends, or when nothing
more can happen without an operator (awaiting promotion, paused); a run still going after `MAX_ROUNDS`
rounds (a rollout with no progress deadline waiting for ever) ends with the outcome `in_progress`.
Called by the CLI and by scenario tests; the table for people is drawn by the CLI.

GPU capacity (`capacity`, `gpus_per_route`, `capacity_fallback`; CLI `--capacity`, `--gpus-per-route`,
`--capacity-fallback`): with `capacity` set, the simulated node has that many `gpu` slots, both
revisions need `gpus_per_route` of them per route (default 1; 0 = nothing), the operations validate the
revisions against the node (a route needing more than the node has is refused) and the cycles compute
how many new routes fit (docs/strategies.md, "Capacity"). The node must hold the `replicas` v1 routes
(capacity >= replicas * gpus_per_route), else there is no rollout to simulate (`capacity_problem`).
After every round the run checks, from the runtime's DeviceTable (what the processes really hold) and
the route rows: the gpu units held and the units the rows plan to hold (every provisioning, running or
terminating route holds its revision's need) never exceed `capacity`, no device index is listed by two
alive routes, and every index held is listed by its holder's row; a broken check raises
`InvariantBroken`. Each timeline row gets `held` (gpu units held after the round) and the result
`max_held` (the most units held at once, the DeviceTable's peak, v1's start included); both are None
without capacity.

Traffic (`rate`; CLI `--rate`): the coordinator runs on a `traffic.simulated.SimulatedTraffic`, which
keeps the routing table the route controller applies and, once per round (after the round, before the
clock moves on), sends `rate × tick` requests through it, split by the table's per-revision weights.
Requests flow from the moment v2 is activated (v1's start sends none). The result counts them:
`requests` (every request sent), `failed_requests` (those that found no backend: 0 serving routes, the
proxy's 503) and `by_revision` ({"r1": {"requests", "errors"}, ...}: what each revision answered, errors
being 5xx). The proxy's per-revision counters feed the canary analysis as a real proxy's would.

Failures of v2 (`fail_new`): `start` (exits before listening), `unhealthy` (listens, passes its first
health checks, fails every one from `unhealthy_after` seconds after it started listening, 1 s by default),
`errors` (healthy, but answers 5xx to `error_share` of its requests, 0.2 by default).

Canary (`strategy="canary"`): `steps` in the policy's JSON form (`parse_steps` reads the CLI's
"10,pause:5,50,pause:5", the default); every timeline row gets `weights`, the deployment's
`traffic_weights` as {"r1": 90, "r2": 10} (revision keys, as the API writes them), None when the split
is by routes (no canary step has set it, or the rollout ended). A timed pause is waited out in simulated
time; an untimed pause (`pause`) ends the run with the outcome `awaiting_promotion`, as blue-green
without auto-promotion does (`auto_promote` is blue-green's and does not promote a canary). Analysis
(`analysis`; None = on exactly when `fail_new` is `errors`): one builtin metric `errors`, `error_rate`
with `max` 0.05, `failure_limit` 2, `min_requests` 10, every `analysis_interval` seconds (5 by default);
two failed windows roll the canary back (`analysis: errors = 0.2 > 0.05`).

`min_ready_seconds` is the policy's (every strategy): a new route counts as ready only after it has been
healthy that long, so a route that fails soon after its first healthy probe never lets an old one go.
v2 is activated once v1's routes have been healthy for `min_ready_seconds` (rounds run meanwhile): v1
has served for a while when a rollout comes.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollwise.control.clock import ManualClock
from rollwise.control.coordinator import Coordinator, node_totals
from rollwise.control.cycles import CycleKind
from rollwise.control.operations import Operations
from rollwise.control.rules.views import revision_key
from rollwise.model import (
    Lifecycle,
    RouteStatus,
    StrategyName,
    SubStep,
    Traffic,
    ValidationFailed,
    is_ready_state,
)
from rollwise.runtime.devices import GPU
from rollwise.runtime.simulated import SimBehaviour, SimFailure, SimulatedRuntime
from rollwise.store import Store
from rollwise.store.records import DeploymentRecord, RouteRecord
from rollwise.traffic.simulated import SimulatedTraffic

NAME = "sim"
MAX_ROUNDS = 5000
DEFAULT_STEPS = "10,pause:5,50,pause:5"
"""A canary's steps when none are given (the CLI's `--steps` format, `parse_steps`)."""
ANALYSIS_MAX_ERROR_RATE = 0.05
ANALYSIS_FAILURE_LIMIT = 2
ANALYSIS_MIN_REQUESTS = 10


@dataclass(frozen=True)
class SimulationOptions:
    strategy: str = "rolling"
    replicas: int = 3
    max_surge: int | str = "25%"
    max_unavailable: int | str = 0
    auto_promote: bool = False
    promote_delay_seconds: float = 0.0
    startup_seconds: float = 2.0
    fail_new: str = "none"
    seed: int = 0
    jitter: float = 0.25
    """Each route's startup time is spread by up to +-jitter (a fraction), drawn with `seed`."""
    tick: float = 0.5
    progress_deadline_seconds: float | None = 600
    on_deadline: str = "rollback"
    failure_threshold: int | None = None
    capacity: int | None = None
    """gpu slots of the simulated node; None: no capacity is counted (revisions need nothing)."""
    gpus_per_route: int | None = None
    """gpu slots one route of either revision needs; None: 1 with a capacity, 0 without."""
    capacity_fallback: str = "replace"
    min_ready_seconds: float = 0.0
    steps: tuple[dict[str, Any], ...] | None = None
    """Canary steps in the policy's JSON form; None: `DEFAULT_STEPS` for a canary."""
    analysis: bool | None = None
    """Canary analysis on or off; None: on exactly when `fail_new` is "errors"."""
    analysis_interval: float = 5.0
    error_share: float = 0.2
    """With `fail_new="errors"`: the share of v2's requests answered with a 5xx."""
    unhealthy_after: float = 1.0
    """With `fail_new="unhealthy"`: seconds a v2 route stays healthy once it listens (then it fails every
    health check)."""
    rate: float = 50.0
    """Requests per second sent to the deployment through the simulated proxy, from v2's activation."""

    @property
    def analysed(self) -> bool:
        """Whether the canary has an analysis (the default applied)."""
        return self.fail_new == "errors" if self.analysis is None else self.analysis

    @property
    def route_gpus(self) -> int:
        """What one route needs, the default applied."""
        if self.gpus_per_route is not None:
            return self.gpus_per_route
        return 1 if self.capacity is not None else 0

    def policy(self) -> dict[str, Any]:
        """The deployment's policy as JSON (`parse_policy` checks it)."""
        policy: dict[str, Any] = {
            "strategy": self.strategy,
            "max_surge": self.max_surge,
            "max_unavailable": self.max_unavailable,
            "auto_promote": self.auto_promote,
            "promote_delay_seconds": self.promote_delay_seconds,
            "progress_deadline_seconds": self.progress_deadline_seconds,
            "on_deadline": self.on_deadline,
            "failure_threshold": self.failure_threshold,
            "capacity_fallback": self.capacity_fallback,
            "min_ready_seconds": self.min_ready_seconds,
        }
        if self.strategy == StrategyName.CANARY.value:
            policy["steps"] = list(self.steps) if self.steps is not None else parse_steps(DEFAULT_STEPS)
            if self.analysed:
                policy["analysis"] = {
                    "interval_seconds": self.analysis_interval,
                    "failure_limit": ANALYSIS_FAILURE_LIMIT,
                    "min_requests": ANALYSIS_MIN_REQUESTS,
                    "metrics": [{"name": "errors", "builtin": "error_rate", "max": ANALYSIS_MAX_ERROR_RATE}],
                }
        return policy


_STEP = re.compile(r"(?:(?P<weight>[0-9]+)|pause(?::(?P<seconds>[0-9]+(?:\.[0-9]+)?))?)")


def parse_steps(text: str) -> list[dict[str, Any]]:
    """The CLI's canary steps, comma separated, in the policy's JSON form: a number is `set_weight`
    (`10` -> {"set_weight": 10}), `pause:N` a timed pause ({"pause": {"seconds": N}}), `pause` a pause
    until promote ({"pause": {}}). ValueError with one line (`'x' is not a weight or pause:N`) for a
    piece that is none of them; the values themselves (weights 1..99, not decreasing) are the policy's
    to check (`parse_policy`)."""
    steps: list[dict[str, Any]] = []
    for piece in text.split(","):
        word = piece.strip()
        m = _STEP.fullmatch(word)
        if m is None:
            raise ValueError(f"{word!r} is not a weight or pause:N")
        if m["weight"] is not None:
            steps.append({"set_weight": int(m["weight"])})
        elif m["seconds"] is not None:
            seconds = float(m["seconds"])
            steps.append({"pause": {"seconds": int(seconds) if seconds.is_integer() else seconds}})
        else:
            steps.append({"pause": {}})
    return steps


def capacity_problem(opts: SimulationOptions) -> tuple[str, str] | None:
    """The first thing wrong with the capacity options, as (field, problem), or None. Fields are
    `capacity` and `gpus_per_route`; the CLI names its options instead."""
    if opts.capacity is not None and opts.capacity < 0:
        return "capacity", f"{opts.capacity} is negative"
    if opts.gpus_per_route is not None:
        if opts.gpus_per_route < 0:
            return "gpus_per_route", f"{opts.gpus_per_route} is negative"
        if opts.capacity is None:
            return "gpus_per_route", "needs a capacity (gpu slots of the simulated node)"
        if opts.gpus_per_route > opts.capacity:
            return "gpus_per_route", f"{opts.gpus_per_route} is over the capacity {opts.capacity}"
    if opts.capacity is not None and opts.replicas * opts.route_gpus > opts.capacity:
        return "capacity", (
            f"{opts.capacity} cannot hold the {opts.replicas} v1 routes of {opts.route_gpus} gpu each "
            f"(at least {opts.replicas * opts.route_gpus})"
        )
    return None


FAILURES = ("none", "start", "unhealthy", "errors")
"""The values of `fail_new`."""


def option_problem(opts: SimulationOptions) -> tuple[str, str] | None:
    """The first thing wrong with the options the policy does not check, as (field, problem), or None:
    `capacity_problem`, then `fail_new`, `rate`, `error_share`, `unhealthy_after`, `analysis_interval`
    (the CLI names its options instead of the fields)."""
    problem = capacity_problem(opts)
    if problem is not None:
        return problem
    if opts.fail_new not in FAILURES:
        return "fail_new", f"{opts.fail_new!r} is not one of {', '.join(FAILURES)}"
    for name, value in (("rate", opts.rate), ("error_share", opts.error_share),
                        ("unhealthy_after", opts.unhealthy_after), ("analysis_interval", opts.analysis_interval)):
        if not math.isfinite(value):
            return name, f"{value} is not a number"
        if value < 0:
            return name, f"{value:g} is negative"
    if opts.rate > 1_000_000:
        return "rate", f"{opts.rate:g} is over 1000000"
    if opts.error_share > 1:
        return "error_share", f"{opts.error_share:g} is over 1 (a share of the requests, 0 to 1)"
    if opts.analysis_interval <= 0:
        return "analysis_interval", f"{opts.analysis_interval:g} must be more than 0"
    return None


class InvariantBroken(AssertionError):
    """A round ended with the gpu devices in a state capacity must rule out (module docstring)."""


RoundObserver = Callable[[SimulatedRuntime, list[RouteRecord]], None]
"""Called after every round of the rollout with the runtime and the deployment's route rows (tests)."""


@dataclass
class SimulationResult:
    outcome: str
    final_revision: str
    cycles: int
    max_alive: int
    min_serving: int
    timeline: list[dict[str, Any]] = field(default_factory=list)
    max_held: int | None = None
    """The most gpu units held at once (None without capacity)."""
    requests: int = 0
    """Requests sent to the deployment through the simulated proxy during the rollout."""
    failed_requests: int = 0
    """Of them, those that found no backend (no route served): the proxy answered 503."""
    by_revision: dict[str, dict[str, int]] = field(default_factory=dict)
    """Revision key ("r1") -> {"requests", "errors"}: what each revision answered (errors: 5xx)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "final_revision": self.final_revision,
            "cycles": self.cycles,
            "max_alive": self.max_alive,
            "min_serving": self.min_serving,
            "max_held": self.max_held,
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "by_revision": self.by_revision,
            "timeline": self.timeline,
        }


def _revision(label: str, opts: SimulationOptions) -> dict[str, Any]:
    rev: dict[str, Any] = {
        "command": ["simulated-model-server", "--version", label],
        "health_check": {"path": "/healthz", "interval_seconds": opts.tick, "unhealthy_threshold": 2},
        "startup_timeout_seconds": max(30.0, opts.startup_seconds * 5),
        "label": label,
    }
    if opts.route_gpus:
        rev["resources"] = {GPU: opts.route_gpus}
    return rev


_HOLDING = (RouteStatus.PROVISIONING, RouteStatus.RUNNING, RouteStatus.TERMINATING)
"""The statuses in which a route holds its revision's need (control.rules.capacity)."""


def device_problems(runtime: SimulatedRuntime, routes: list[RouteRecord], capacity: int) -> list[str]:
    """What is wrong with the gpu devices after a round (module docstring); empty when all is well."""
    problems = []
    holders = runtime.devices.holders().get(GPU, {})
    if len(holders) > capacity:
        problems.append(f"{len(holders)} gpu held, over the capacity {capacity}")
    planned = sum(r.holds.get(GPU, 0) for r in routes if r.status in _HOLDING)
    if planned > capacity:
        problems.append(f"the routes plan to hold {planned} gpu, over the capacity {capacity}")
    listed: dict[int, str] = {}
    for r in routes:
        if not r.status.is_alive:
            continue
        for i in r.devices.get(GPU, ()):
            if i in listed:
                problems.append(f"gpu {i} is listed by two alive routes, {listed[i]} and {r.id}")
            listed[i] = r.id
    rows = {r.id: r for r in routes}
    for i, route_id in holders.items():
        row = rows.get(route_id)
        if row is None or i not in row.devices.get(GPU, ()):
            problems.append(f"gpu {i} is held by route {route_id}, whose row does not list it")
    return problems


def _count(routes: list[RouteRecord], label_of: dict[int, str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in routes:
        c = out.setdefault(label_of.get(r.revision, str(r.revision)), {"provisioning": 0, "ready": 0, "unready": 0, "terminating": 0, "failed": 0})
        if r.status is RouteStatus.PROVISIONING:
            c["provisioning"] += 1
        elif r.status is RouteStatus.RUNNING:
            # Simulated revisions always have a health check.
            c["ready" if is_ready_state(r.status, r.health, has_health_check=True) else "unready"] += 1
        elif r.status is RouteStatus.TERMINATING:
            c["terminating"] += 1
        if r.failed:
            c["failed"] += 1
    return out


def _serving(routes: list[RouteRecord]) -> int:
    return sum(
        1
        for r in routes
        if is_ready_state(r.status, r.health, has_health_check=True)
        and r.traffic is Traffic.ACTIVE
        and r.traffic_ratio > 0
    )


async def run_simulation(opts: SimulationOptions, observe: RoundObserver | None = None) -> SimulationResult:
    """Run one simulation; ValidationFailed for options that cannot be simulated (`option_problem`),
    InvariantBroken when a device check fails after a round."""
    problem = option_problem(opts)
    if problem is not None:
        raise ValidationFailed(f"{problem[0]}: {problem[1]}")
    with tempfile.TemporaryDirectory(prefix="rollwise-sim-") as tmp:
        db = Path(tmp) / "simulate.db"
        store = await Store.open(f"sqlite+aiosqlite:///{db}")
        try:
            return await _run(store, opts, observe)
        finally:
            await store.close()


async def _run(store: Store, opts: SimulationOptions, observe: RoundObserver | None) -> SimulationResult:
    clock = ManualClock()
    failure = SimFailure.NONE if opts.fail_new == "errors" else SimFailure(opts.fail_new)
    runtime = SimulatedRuntime(
        clock.now,
        {
            1: SimBehaviour(startup_seconds=opts.startup_seconds),
            2: SimBehaviour(
                startup_seconds=opts.startup_seconds,
                failure=failure,
                unhealthy_after=opts.unhealthy_after if failure is SimFailure.UNHEALTHY else 0.0,
            ),
        },
        seed=opts.seed,
        jitter=opts.jitter,
        resources={GPU: opts.capacity} if opts.capacity is not None else None,
    )
    traffic = SimulatedTraffic(rate=opts.rate, started=clock.now().timestamp())
    if opts.fail_new == "errors":
        traffic.set_behaviour(NAME, 2, error_share=opts.error_share)
    # No proxy URL: the simulated proxy has no address (command metrics would get no ROLLWISE_CANARY_URL;
    # the simulation's analysis has only the builtin metric).
    coordinator = Coordinator(store=store, runtime=runtime, prober=runtime, traffic=traffic, clock=clock)
    ops = Operations(store, clock, coordinator.mark, route_overlay=coordinator.routes.overlay,
                     capacity=lambda: node_totals(runtime))
    await ops.create(name=NAME, replicas=opts.replicas, policy=opts.policy(), revision=_revision("v1", opts))
    for _ in range(MAX_ROUNDS):
        await coordinator.run_once(force=True)
        if (await ops.get(NAME)).lifecycle is Lifecycle.READY:
            break
        clock.advance(opts.tick)
    else:
        raise RuntimeError("the simulated deployment never became ready on v1")
    # v1 has served for a while when v2 comes: its routes have been healthy for min_ready_seconds (a
    # route healthy for less would count as not ready, and the rollout would treat it as such).
    ready_at = clock.now()
    while (clock.now() - ready_at).total_seconds() < opts.min_ready_seconds:
        clock.advance(opts.tick)
        await coordinator.run_once(force=True)

    await ops.add_revision(NAME, _revision("v2", opts))
    started = clock.now()
    await ops.activate(NAME, 2)
    sent_before = traffic.sent.get(NAME, 0)  # nothing: requests flow from here (module docstring)
    label_of = {1: "v1", 2: "v2"}
    timeline: list[dict[str, Any]] = []
    cycles = 0
    max_alive = 0
    min_serving: int | None = None
    seen_history = len(await ops.history(NAME))
    outcome = "in_progress"
    for _ in range(MAX_ROUNDS):
        step = await coordinator.run_once(force=True)
        cycles += sum(1 for c in step.cycles if c.kind is CycleKind.DEPLOYING and c.deployments)
        dep = await ops.get(NAME)
        routes = await ops.routes(dep)
        alive = sum(1 for r in routes if r.status.is_alive)
        serving = _serving(routes)
        max_alive = max(max_alive, alive)
        min_serving = serving if min_serving is None else min(min_serving, serving)
        held = None
        if opts.capacity is not None:
            held = runtime.devices.held().get(GPU, 0)
            problems = device_problems(runtime, routes, opts.capacity)
            if problems:
                raise InvariantBroken(f"cycle {cycles}, t={(clock.now() - started).total_seconds():g}s: "
                                      + "; ".join(problems))
        if observe is not None:
            observe(runtime, routes)
        history = await ops.history(NAME)
        events = [h.message for h in history[seen_history:]]
        seen_history = len(history)
        timeline.append(
            {
                "cycle": cycles,
                "t": round((clock.now() - started).total_seconds(), 3),
                "lifecycle": dep.lifecycle.value,
                "sub_step": dep.sub_step.value if dep.sub_step else None,
                "alive": alive,
                "serving": serving,
                "held": held,
                "weights": _weights(dep),
                "routes": _count(routes, label_of),
                "events": events,
            }
        )
        if dep.lifecycle is Lifecycle.READY:
            outcome = "completed" if dep.sub_step is SubStep.COMPLETED else "rolled_back"
            break
        if _waits_for_promotion(dep, opts):
            outcome = "awaiting_promotion"
            break
        if dep.paused:
            outcome = "paused"
            break
        traffic.advance(opts.tick)  # the table this round left serves until the next round
        clock.advance(opts.tick)
    await coordinator.close()
    dep = await ops.get(NAME)
    return SimulationResult(
        outcome=outcome,
        final_revision=label_of.get(dep.current_revision or 0, str(dep.current_revision)),
        cycles=cycles,
        max_alive=max_alive,
        min_serving=min_serving or 0,
        timeline=timeline,
        max_held=runtime.devices.peak.get(GPU, 0) if opts.capacity is not None else None,
        requests=traffic.sent.get(NAME, 0) - sent_before,
        failed_requests=traffic.failed_requests.get(NAME, 0),
        by_revision={
            revision_key(rev): {"requests": s.requests, "errors": s.errors}
            for (name, rev), s in sorted((await traffic.revision_stats()).items())
            if name == NAME and s.requests
        },
    )


def _weights(dep: DeploymentRecord) -> dict[str, int] | None:
    """The deployment's traffic split as {"r1": 90, "r2": 10}; None when it is by routes."""
    if dep.traffic_weights is None:
        return None
    return {revision_key(rev): pct for rev, pct in sorted(dep.traffic_weights.items())}


def _waits_for_promotion(dep: DeploymentRecord, opts: SimulationOptions) -> bool:
    """Whether only an operator can move the rollout on: blue-green awaiting a promotion it will not
    get by itself, or a canary at an untimed pause (a timed one is waited out)."""
    if dep.sub_step is not SubStep.AWAITING_PROMOTION:
        return False
    policy = dep.policy
    if policy is not None and policy.strategy is StrategyName.CANARY:
        if not 0 <= dep.canary_step < len(policy.steps):
            return False
        pause = policy.steps[dep.canary_step].pause
        return pause is not None and pause.seconds is None
    return not opts.auto_promote
