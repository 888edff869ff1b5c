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
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollwise.control.clock import ManualClock
from rollwise.control.coordinator import Coordinator, node_totals
from rollwise.control.cycles import CycleKind
from rollwise.control.operations import Operations
from rollwise.model import Lifecycle, RouteStatus, SubStep, Traffic, ValidationFailed, is_ready_state
from rollwise.runtime.devices import GPU
from rollwise.runtime.simulated import SimBehaviour, SimFailure, SimulatedRuntime
from rollwise.store import Store
from rollwise.store.records import RouteRecord
from rollwise.traffic.base import NoTraffic

NAME = "sim"
MAX_ROUNDS = 5000


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

    @property
    def route_gpus(self) -> int:
        """What one route needs, the default applied."""
        if self.gpus_per_route is not None:
            return self.gpus_per_route
        return 1 if self.capacity is not None else 0

    def policy(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "max_surge": self.max_surge,
            "max_unavailable": self.max_unavailable,
            "auto_promote": self.auto_promote,
            "promote_delay_seconds": self.promote_delay_seconds,
            "progress_deadline_seconds": self.progress_deadline_seconds,
            "on_deadline": self.on_deadline,
            "failure_threshold": self.failure_threshold,
            "capacity_fallback": self.capacity_fallback,
        }


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

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "final_revision": self.final_revision,
            "cycles": self.cycles,
            "max_alive": self.max_alive,
            "min_serving": self.min_serving,
            "max_held": self.max_held,
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
    """Run one simulation; ValidationFailed for options that cannot be simulated (`capacity_problem`),
    InvariantBroken when a device check fails after a round."""
    problem = capacity_problem(opts)
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
    failure = SimFailure(opts.fail_new)
    runtime = SimulatedRuntime(
        clock.now,
        {
            1: SimBehaviour(startup_seconds=opts.startup_seconds),
            2: SimBehaviour(
                startup_seconds=opts.startup_seconds,
                failure=failure,
                unhealthy_after=opts.startup_seconds if failure is SimFailure.UNHEALTHY else 0.0,
            ),
        },
        seed=opts.seed,
        jitter=opts.jitter,
        resources={GPU: opts.capacity} if opts.capacity is not None else None,
    )
    coordinator = Coordinator(store=store, runtime=runtime, prober=runtime, traffic=NoTraffic(), clock=clock)
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

    await ops.add_revision(NAME, _revision("v2", opts))
    started = clock.now()
    await ops.activate(NAME, 2)
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
                "routes": _count(routes, label_of),
                "events": events,
            }
        )
        if dep.lifecycle is Lifecycle.READY:
            outcome = "completed" if dep.sub_step is SubStep.COMPLETED else "rolled_back"
            break
        if dep.sub_step is SubStep.AWAITING_PROMOTION and not opts.auto_promote:
            outcome = "awaiting_promotion"
            break
        if dep.paused:
            outcome = "paused"
            break
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
    )
