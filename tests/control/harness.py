"""Scenario harness of the control-plane tests: the real coordinator, route controller, cycles and
operations over a real SQLite file, the simulated runtime and a manual clock.

    sc = await Scenario.open(tmp_path)
    await sc.ready("svc", replicas=3, policy={"strategy": "rolling"})   # created, then READY on v1
    await sc.start_rollout("svc")                                       # revision 2 added and activated
    dep = await sc.run_until("svc", is_ready)                           # rounds until the predicate holds

A round is one `Coordinator.run_once(force=True)` (route pass, every cycle, route pass), then one look
at the database (what `watch` records: alive and serving routes per deployment), then the clock moves
by TICK seconds. Nothing here reaches into the code under test: everything is read back from the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rollwise.control.clock import ManualClock
from rollwise.control.coordinator import Coordinator, Intervals, StepReport, node_totals
from rollwise.control.operations import Operations
from rollwise.model import Lifecycle, RouteStatus, SubStep, Traffic, is_ready_state
from rollwise.runtime.simulated import SimBehaviour, SimulatedRuntime
from rollwise.store import ApplyResult, ChangeSet, HistoryRecord, RouteRecord, Store
from rollwise.store.records import DeploymentRecord
from rollwise.traffic.base import NoTraffic

TICK = 0.5
MAX_ROUNDS = 400


class InterceptingStore(Store):
    """The real Store, plus two test hooks on `apply` (the one write of every cycle and operation):

    - `before_next_apply`: called once, with the ChangeSet, right before the next `apply` runs; it may
      act (e.g. an operator write between a cycle's read and its write) and returns the ChangeSet to
      apply (the same, or a changed one). It is cleared before it runs, so writes it makes are plain.
    - `applied`: every (ChangeSet, ApplyResult) that committed, in order.
    """

    before_next_apply: Callable[[ChangeSet], Awaitable[ChangeSet]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.applied: list[tuple[ChangeSet, ApplyResult]] = []

    async def apply(self, changes: ChangeSet, now: datetime, *, combine: bool = False) -> ApplyResult:
        hook, self.before_next_apply = self.before_next_apply, None
        if hook is not None:
            changes = await hook(changes)
        result = await super().apply(changes, now, combine=combine)
        self.applied.append((changes, result))
        return result


def revision(label: str, *, check: bool = True, healthy_threshold: int = 1, **extra: Any) -> dict[str, Any]:
    """A revision document as an operator writes it (simulated runtime: the command is not run)."""
    doc: dict[str, Any] = {
        "command": ["simulated-model-server", "--version", label],
        "startup_timeout_seconds": 30,
        "drain_seconds": 0,
        "label": label,
    }
    if check:
        doc["health_check"] = {
            "path": "/healthz",
            "interval_seconds": TICK,
            "unhealthy_threshold": 2,
            "healthy_threshold": healthy_threshold,
        }
    doc.update(extra)
    return doc


def is_alive(r: RouteRecord) -> bool:
    return r.status.is_alive


def is_serving(r: RouteRecord) -> bool:
    """Receives traffic: running, ready (healthy or degraded), active with a weight (all scenario revisions
    have a check)."""
    return (
        is_ready_state(r.status, r.health, has_health_check=True)
        and r.traffic is Traffic.ACTIVE
        and r.traffic_ratio > 0
    )


def is_ready(dep: DeploymentRecord) -> bool:
    return dep.lifecycle is Lifecycle.READY


def sub_step_is(step: SubStep) -> Callable[[DeploymentRecord], bool]:
    return lambda dep: dep.sub_step is step


@dataclass
class Sample:
    """One look at a deployment after a round."""

    t: float
    lifecycle: Lifecycle
    sub_step: SubStep | None
    paused: bool
    alive: int
    serving: int
    alive_by_revision: dict[int, int]
    serving_by_revision: dict[int, int]
    route_ids: frozenset[str]
    terminating: frozenset[str]


@dataclass
class Watch:
    samples: list[Sample] = field(default_factory=list)

    @property
    def max_alive(self) -> int:
        return max(s.alive for s in self.samples)

    @property
    def min_serving(self) -> int:
        return min(s.serving for s in self.samples)


class Scenario:
    def __init__(
        self, store: InterceptingStore, clock: ManualClock, runtime: SimulatedRuntime, coordinator: Coordinator
    ) -> None:
        self.store = store
        self.clock = clock
        self.runtime = runtime
        self.coord = coordinator
        self.ops = Operations(store, clock, coordinator.mark, route_overlay=coordinator.routes.overlay,
                              capacity=lambda: node_totals(runtime))
        self.watches: dict[str, Watch] = {}
        self.rounds = 0

    @classmethod
    async def open(
        cls,
        tmp_path: Path,
        behaviours: Mapping[int, SimBehaviour] | None = None,
        *,
        seed: int = 0,
        jitter: float = 0.0,
        intervals: Intervals | None = None,
        resources: Mapping[str, int] | None = None,
    ) -> Scenario:
        """`resources`: the simulated node's slots (e.g. {"gpu": 4}); none by default."""
        store = await InterceptingStore.open(f"sqlite+aiosqlite:///{tmp_path}/rollwise.db")
        assert isinstance(store, InterceptingStore)
        clock = ManualClock()
        runtime = SimulatedRuntime(
            clock.now, behaviours, default=SimBehaviour(startup_seconds=1.0), seed=seed, jitter=jitter,
            resources=resources,
        )
        coord = Coordinator(
            store=store, runtime=runtime, prober=runtime, traffic=NoTraffic(), clock=clock, intervals=intervals
        )
        return cls(store, clock, runtime, coord)

    async def close(self) -> None:
        await self.coord.close()
        await self.runtime.close()
        await self.store.close()

    # --- driving ----------------------------------------------------------------------------------

    async def step(self) -> StepReport:
        report = await self.coord.run_once(force=True)
        self.rounds += 1
        for name in self.watches:
            await self._observe(name)
        self.clock.advance(TICK)
        return report

    async def steps(self, n: int) -> None:
        for _ in range(n):
            await self.step()

    async def run_until(
        self, name: str, predicate: Callable[[DeploymentRecord], bool], *, max_rounds: int = MAX_ROUNDS
    ) -> DeploymentRecord:
        """Rounds until `predicate(deployment)` holds (checked before the first round too)."""
        for _ in range(max_rounds + 1):
            dep = await self.store.get_deployment(name)
            assert dep is not None, f"deployment {name!r} is gone"
            if predicate(dep):
                return dep
            await self.step()
        history = "\n".join(f"  {h.result}: {h.message}" for h in await self.history(name))
        raise AssertionError(f"{name}: condition not reached in {max_rounds} rounds; history:\n{history}")

    async def run_until_sample(
        self, name: str, predicate: Callable[[Sample], bool], *, max_rounds: int = MAX_ROUNDS
    ) -> Sample:
        """Rounds until the look after a round satisfies `predicate` (alive/serving counts...)."""
        for _ in range(max_rounds):
            await self.step()
            sample = self.watches[name].samples[-1]
            if predicate(sample):
                return sample
        raise AssertionError(f"{name}: route condition not reached in {max_rounds} rounds")

    # --- set-up -----------------------------------------------------------------------------------

    async def ready(
        self,
        name: str = "svc",
        *,
        replicas: int = 3,
        policy: Mapping[str, Any] | None = None,
        rev: Mapping[str, Any] | None = None,
    ) -> DeploymentRecord:
        """Create a deployment on revision 1 and run rounds until it is READY."""
        await self.create(name, replicas=replicas, policy=policy, rev=rev)
        return await self.run_until(name, is_ready)

    async def create(
        self,
        name: str = "svc",
        *,
        replicas: int = 3,
        policy: Mapping[str, Any] | None = None,
        rev: Mapping[str, Any] | None = None,
    ) -> DeploymentRecord:
        """Create a deployment on revision 1 (PENDING; rounds bring it up) and watch it."""
        dep = (await self.ops.create(name=name, replicas=replicas, policy=policy,
                                     revision=dict(rev or revision("v1")))).deployment
        self.watches.setdefault(name, Watch())
        return dep

    async def start_rollout(self, name: str = "svc", rev: Mapping[str, Any] | None = None, **kw: Any) -> int:
        """Add a revision and activate it; returns its number. Samples restart here."""
        added = await self.ops.add_revision(name, dict(rev or revision("next")))
        await self.ops.activate(name, added.number, **kw)
        self.restart_watch(name)
        return added.number

    # --- reading back -----------------------------------------------------------------------------

    async def dep(self, name: str = "svc") -> DeploymentRecord:
        dep = await self.store.get_deployment(name)
        assert dep is not None
        return dep

    async def routes(self, name: str = "svc") -> list[RouteRecord]:
        return await self.store.list_routes([(await self.dep(name)).id])

    async def alive(self, name: str = "svc") -> list[RouteRecord]:
        return [r for r in await self.routes(name) if r.status.is_alive]

    async def history(self, name: str = "svc") -> list[HistoryRecord]:
        return await self.store.list_history((await self.dep(name)).id)

    def watch(self, name: str = "svc") -> Watch:
        return self.watches[name]

    def restart_watch(self, name: str = "svc") -> Watch:
        """Forget the samples so far (the limits of what comes next are checked on their own)."""
        self.watches[name] = Watch()
        return self.watches[name]

    async def _observe(self, name: str) -> None:
        dep = await self.store.get_deployment(name)
        if dep is None:
            return
        routes = await self.store.list_routes([dep.id])
        alive_by: dict[int, int] = {}
        serving_by: dict[int, int] = {}
        for r in routes:
            if is_alive(r):
                alive_by[r.revision] = alive_by.get(r.revision, 0) + 1
            if is_serving(r):
                serving_by[r.revision] = serving_by.get(r.revision, 0) + 1
        self.watches[name].samples.append(
            Sample(
                t=self.rounds * TICK,
                lifecycle=dep.lifecycle,
                sub_step=dep.sub_step,
                paused=dep.paused,
                alive=sum(alive_by.values()),
                serving=sum(serving_by.values()),
                alive_by_revision=alive_by,
                serving_by_revision=serving_by,
                route_ids=frozenset(r.id for r in routes if r.status is not RouteStatus.TERMINATED),
                terminating=frozenset(r.id for r in routes if r.status is RouteStatus.TERMINATING),
            )
        )
