"""The coordinator: runs the route controller and the lifecycle cycles, each when marked needed (on a
short interval) and on a long interval regardless (docs/architecture.md, "Scheduling").

Everything runs in one sequence (route pass, then the due cycles), so a cycle's read-decide-write never
interleaves with the route controller's. A route becoming ready marks the deploying cycle needed and the
loop wakes at once, so a rollout step follows within a fraction of a second. Operations (API calls) mark
cycles needed through `mark`. After the route pass, the canary analysis (control.analysis) measures what
is due; a round that wrote measurements marks the deploying cycle (a failed one may roll back, a passed
interval may let the final step complete). Every time reading and every wait goes through the `Clock` it
is given (control.clock): real time in a server, fake time in simulations and tests.

The scaling, deploying and READY cycles read only the deployments that may need a decision
(`CycleWatch`): those written since the cycle last ran (the store's write feed: an operation, a cycle,
the route controller's route changes, a canary measurement), those whose last outcome was not settled
(waiting for room on the nodes, a failed evaluation: `Outcome.settled`) and those whose requeue time
came. They read every deployment of their lifecycle when forced and on a sweep: every `Intervals.long`
(5 s) for scaling and deploying, every `Intervals.sweep` (60 s) for READY (at rest, most deployments at
scale), and never more often than SWEEP_SHARE times the last sweep's duration (a sweep over thousands
of deployments in flight comes less often); a sweep also catches writes by another process. The pending and destroying cycles (few
deployments, briefly) always read all of theirs.

Called by `rollwise server` (run_forever) and by simulations and tests (run_once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from dataclasses import dataclass, field

from rollwise.control.analysis import AnalysisRunner
from rollwise.control.clock import Clock
from rollwise.control.cycles import CycleKind, CycleReport, run_cycle
from rollwise.control.errlog import ErrorLog
from rollwise.control.route_controller import RouteController, RoutePassReport
from rollwise.model import Lifecycle
from rollwise.runtime.base import Prober, Runtime
from rollwise.store import Store
from rollwise.traffic.base import TrafficLayer

log = logging.getLogger(__name__)

CYCLE_ORDER = (
    CycleKind.CHECK_PENDING,
    CycleKind.SCALING,
    CycleKind.DEPLOYING,
    CycleKind.CHECK_REPLICAS,
    CycleKind.DESTROYING,
)
KIND_OF_LIFECYCLE = {
    Lifecycle.PENDING: CycleKind.CHECK_PENDING,
    Lifecycle.SCALING: CycleKind.SCALING,
    Lifecycle.READY: CycleKind.CHECK_REPLICAS,
    Lifecycle.DEPLOYING: CycleKind.DEPLOYING,
    Lifecycle.DESTROYING: CycleKind.DESTROYING,
}

SWEEP_PAGE = 100
SWEEP_SHARE = 5
"""A cycle's sweeps come at least SWEEP_SHARE times their own duration apart (at most a fifth of the time)."""
"""Deployments a cycle reads, decides and writes at once when it goes over its whole lifecycle."""

MAX_CYCLE_ROUNDS = 3
"""Cycles re-run within one round while they keep changing something (bounded)."""

CycleObserver = Callable[[CycleReport, float], None]


@dataclass
class Intervals:
    short: float = 0.05
    """Seconds before a marked cycle runs."""
    long: float = 5.0
    """Every cycle runs at least this often, marked or not."""
    routes: float = 0.2
    """Seconds between route controller passes (probes follow each revision's own interval)."""
    purge: float = 60.0
    """Seconds between purges of routes that ended (terminated, failed to start)."""
    maintain: float = 5.0
    """Seconds between the runtime's upkeep (route log rotation)."""
    sweep: float = 60.0
    """Seconds between READY cycles that read every READY deployment (module docstring); the scaling and
    deploying cycles read all of theirs every `long`."""
    retention: float = 600.0
    """How long an ended route stays readable (describe, debugging) before a purge deletes it; routes
    of a rollout in progress are kept whatever their age (its failure budget counts them)."""


@dataclass
class StepReport:
    routes: RoutePassReport | None = None
    cycles: list[CycleReport] = field(default_factory=list)
    purged: int = 0
    measurements: int = 0
    """Canary analysis measurements written in this round."""


class Coordinator:
    def __init__(
        self,
        *,
        store: Store,
        runtime: Runtime,
        prober: Prober,
        traffic: TrafficLayer,
        clock: Clock,
        intervals: Intervals | None = None,
        is_active: Callable[[], bool] = lambda: True,
        max_starting: int | None = None,
        proxy_url: str | None = None,
    ) -> None:
        """`max_starting`: route processes started but not listening yet, at most (control.route_controller).
        `proxy_url`: the proxy's base URL (e.g. http://127.0.0.1:8080): a canary's command metrics get
        `{proxy_url}/d/NAME/` as ROLLWISE_CANARY_URL (None: no proxy, the variable is not set)."""
        self.store = store
        self.clock = clock
        self.traffic = traffic
        self.intervals = intervals or Intervals()
        self._is_active = is_active
        self._wakeup = asyncio.Event()
        self._needed: set[CycleKind] = set(CYCLE_ORDER)
        self._last_run: dict[CycleKind, float] = {}
        self._last_purge = clock.monotonic()
        self._last_maintain = clock.monotonic()
        self._errors = ErrorLog(log, clock=clock.monotonic)
        self._due_at: dict[CycleKind, float] = {}
        """Times (`clock.monotonic()`) at which a cycle must run again although nothing marked it (requeue_after)."""
        self._feed = store.feed()
        self._watches = {kind: CycleWatch() for kind in WATCHED}
        self.observers: list[CycleObserver] = []
        self.route_observers: list[Callable[[RoutePassReport], None]] = []
        self.runtime = runtime
        self.routes = RouteController(
            store=store, runtime=runtime, prober=prober, traffic=traffic, clock=clock, wake=self.wake,
            max_starting=max_starting,
        )
        base = proxy_url.rstrip("/") if proxy_url else None
        self.analysis = AnalysisRunner(
            store, traffic, clock, (lambda name: f"{base}/d/{name}/") if base else None, wake=self.wake
        )

    # --- marks --------------------------------------------------------------------------------------

    def mark(self, *kinds: CycleKind) -> None:
        """Ask for these cycles to run soon (an operation changed something they act on)."""
        self._needed.update(kinds or CYCLE_ORDER)
        self.wake()

    def wake(self) -> None:
        self._wakeup.set()

    # --- running ------------------------------------------------------------------------------------

    async def start(self) -> tuple[int, int]:
        """Adopt the route processes left by a previous server; returns (adopted, lost)."""
        adopted = await self.routes.adopt()
        self.mark()
        return adopted

    async def run_once(self, *, force: bool = False) -> StepReport:
        """One round: a route pass, then every cycle that is marked needed or due (all with force)."""
        step = StepReport()
        step.routes = await self._route_pass()
        if step.routes.decisive:
            self._needed.update(CYCLE_ORDER)
        step.measurements = await self.analysis.run_due()
        if step.measurements:
            self._needed.add(CycleKind.DEPLOYING)
        for attempt in range(MAX_CYCLE_ROUNDS):
            applied = await self._run_cycles(step, force=force and attempt == 0)
            if not applied:
                break
        if self.clock.monotonic() - self._last_purge >= self.intervals.purge:
            # Ended routes would otherwise be read by every cycle forever.
            self._last_purge = self.clock.monotonic()
            step.purged = await self.store.delete_terminated_routes(
                self.clock.now() - timedelta(seconds=self.intervals.retention)
            )
        if self.clock.monotonic() - self._last_maintain >= self.intervals.maintain:
            self._last_maintain = self.clock.monotonic()
            await self.routes.maintain()
        if any(c.created_routes or c.terminated_routes for c in step.cycles):
            # Start new processes and withdraw terminated routes from the proxy right away.
            extra = await self._route_pass()
            if extra.decisive:
                self._needed.update(CYCLE_ORDER)
        return step

    async def _run_cycles(self, step: StepReport, *, force: bool) -> bool:
        """Run every cycle that is marked needed or due; True when any of them wrote something."""
        applied = False
        mono = self.clock.monotonic()
        for kind in CYCLE_ORDER:
            due = mono - self._last_run.get(kind, -1e9) >= self.intervals.long or mono >= self._due_at.get(
                kind, float("inf")
            )
            if not (force or due or kind in self._needed):
                continue
            self._needed.discard(kind)
            self._last_run[kind] = mono
            started = self.clock.monotonic()
            only = None
            watch = self._watches.get(kind)
            if watch is not None:
                written = self._feed.take()
                for other in self._watches.values():
                    other.written(written)
                every = self.intervals.sweep if kind is CycleKind.CHECK_REPLICAS else self.intervals.long
                # A sweep takes at most 1/SWEEP_SHARE of the time: a long one (thousands of deployments
                # in flight) comes less often.
                every = max(every, SWEEP_SHARE * watch.sweep_seconds)
                only = watch.to_read(mono, full=force or mono - watch.last_sweep >= every)
            report = await self._cycle(kind, only)
            elapsed = self.clock.monotonic() - started
            if watch is not None and only is None:
                watch.sweep_seconds = elapsed
            for observer in self.observers:
                observer(report, elapsed)
            step.cycles.append(report)
            self._due_at.pop(kind, None)
            if watch is not None:
                next_due = watch.read(only, report, self.clock.monotonic())
                if next_due is not None:
                    self._due_at[kind] = next_due
            elif report.requeue_after is not None:
                self._due_at[kind] = self.clock.monotonic() + report.requeue_after
            for lifecycle in report.lifecycle_changes.values():
                if lifecycle in KIND_OF_LIFECYCLE:
                    self._needed.add(KIND_OF_LIFECYCLE[lifecycle])
            # A failed evaluation's write (error count, history) is not progress: retrying it at once
            # would fail the same way on the same state, and the three failures in a row that start a
            # rollback would all happen in one instant. It is evaluated again next round.
            progressed = report.applied > len(report.errors.keys() - report.skipped)
            if report.skipped or progressed:
                # Level-triggered: look again at once. Routes just set terminating no longer count as
                # alive, so the next step of a rollout may already be possible.
                self._needed.add(kind)
            applied = applied or progressed
        return applied

    async def _cycle(self, kind: CycleKind, only: set[int] | None) -> CycleReport:
        """One cycle of `kind`: over `only`, or over its whole lifecycle a page of SWEEP_PAGE deployments
        at a time (each page read, decided and written on its own; the loop runs other work between
        pages, so a sweep over thousands of deployments never holds it for long)."""
        if only is not None:
            return await run_cycle(self.store, kind, self.clock.now(), node_totals(self.runtime), only=only)
        merged: CycleReport | None = None
        after: int | None = None
        while True:
            report = await run_cycle(self.store, kind, self.clock.now(), node_totals(self.runtime),
                                     after=after, limit=SWEEP_PAGE)
            merged = report if merged is None else merged.merge(report)
            if report.deployments < SWEEP_PAGE:
                return merged
            after = max(report.evaluated)
            await asyncio.sleep(0)

    async def _route_pass(self) -> RoutePassReport:
        report = await self.routes.reconcile()
        for observer in self.route_observers:
            observer(report)
        return report

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run rounds until `stop` is set: at once when marked, else every `intervals.routes`. Every wait
        is a wait on the clock (`Clock.wait`), so a ManualClock drives this loop in fake time."""
        while not stop.is_set():
            self._wakeup.clear()  # wakes during the round are kept for the wait below
            if self._is_active():
                try:
                    await self.run_once()
                except Exception as e:  # noqa: BLE001 - the loop must survive a failed round; logged
                    # One line per distinct error per minute (a full disk fails every round alike).
                    self._errors.report("coordinator round failed, retrying", e)
                    await self.clock.wait(stop, 1.0)
            if self._needed:
                await self.clock.wait(stop, self.intervals.short)
                continue
            await self.clock.wait(self._wakeup, self.intervals.routes)

    async def close(self) -> None:
        await self.analysis.close()
        await self.routes.wait_stops()


WATCHED = (CycleKind.SCALING, CycleKind.DEPLOYING, CycleKind.CHECK_REPLICAS)
"""The cycles that read only the deployments that may need a decision (module docstring)."""


class CycleWatch:
    """What one cycle kind must read next (module docstring): the deployments written since it last
    ran, those not settled, those due; None: every one."""

    def __init__(self) -> None:
        self.last_sweep = float("-inf")
        self.sweep_seconds = 0.0
        """How long the last sweep took."""
        self._written: set[int] | None = None  # None: not known, read every one
        self._unsettled: set[int] = set()
        self._due: dict[int, float] = {}

    def written(self, ids: set[int] | None) -> None:
        """What the write feed returned (None: it lost track: read every one next time)."""
        if ids is None or self._written is None:
            self._written = None
        else:
            self._written |= ids

    def to_read(self, mono: float, *, full: bool) -> set[int] | None:
        """The ids to read now (None: all)."""
        if full or self._written is None:
            self.last_sweep = mono
            self._written = set()
            return None
        ids = self._written | self._unsettled | {i for i, t in self._due.items() if t <= mono}
        self._written = set()
        return ids

    def read(self, only: set[int] | None, report: CycleReport, mono: float) -> float | None:
        """Note what a cycle read and decided; when the next one is due (a requeue time), or None."""
        if only is None:
            self._unsettled, self._due = set(report.unsettled), {}
        else:
            self._unsettled = (self._unsettled - only) | report.unsettled
            for i in only:
                self._due.pop(i, None)
        self._due.update((i, mono + seconds) for i, seconds in report.requeue.items())
        return min(self._due.values(), default=None)


def node_totals(runtime: Runtime) -> dict[str, dict[str, int]]:
    """The runtime's capacity as the cycles take it: node -> resource -> units."""
    return {node.name: dict(node.total) for node in runtime.capacity()}
