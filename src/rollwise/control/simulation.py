"""`rollwise simulate`: one deployment from READY on v1 through a rollout to v2, on the real
coordinator, store (a temporary SQLite file) and the simulated runtime, with a manual clock.

Each round advances the clock by `tick` seconds and runs the route controller and every cycle once, so a
run is deterministic for given options and seed. The run ends when the rollout ends, or when nothing
more can happen without an operator (awaiting promotion, paused). Called by the CLI and by scenario
tests; the table for people is drawn by the CLI.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollwise.control.clock import ManualClock
from rollwise.control.coordinator import Coordinator
from rollwise.control.cycles import CycleKind
from rollwise.control.operations import Operations
from rollwise.model import Lifecycle, RouteStatus, SubStep, Traffic, is_ready_state
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
    tick: float = 0.5
    progress_deadline_seconds: float | None = 600
    on_deadline: str = "rollback"
    failure_threshold: int | None = None

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
        }


@dataclass
class SimulationResult:
    outcome: str
    final_revision: str
    cycles: int
    max_alive: int
    min_serving: int
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "final_revision": self.final_revision,
            "cycles": self.cycles,
            "max_alive": self.max_alive,
            "min_serving": self.min_serving,
            "timeline": self.timeline,
        }


def _revision(label: str, opts: SimulationOptions) -> dict[str, Any]:
    return {
        "command": ["simulated-model-server", "--version", label],
        "health_check": {"path": "/healthz", "interval_seconds": opts.tick, "unhealthy_threshold": 2},
        "startup_timeout_seconds": max(30.0, opts.startup_seconds * 5),
        "label": label,
    }


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


async def run_simulation(opts: SimulationOptions) -> SimulationResult:
    with tempfile.TemporaryDirectory(prefix="rollwise-sim-") as tmp:
        db = Path(tmp) / "simulate.db"
        store = await Store.open(f"sqlite+aiosqlite:///{db}")
        try:
            return await _run(store, opts)
        finally:
            await store.close()


async def _run(store: Store, opts: SimulationOptions) -> SimulationResult:
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
        jitter=0.25,
    )
    coordinator = Coordinator(store=store, runtime=runtime, prober=runtime, traffic=NoTraffic(), clock=clock)
    ops = Operations(store, clock, coordinator.mark, route_overlay=coordinator.routes.overlay)
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
    )
