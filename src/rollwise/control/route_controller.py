"""The route controller: makes routes' real state follow their rows, one non-blocking pass at a time.

Each `reconcile()` pass reads the live routes once and, for every route:
- provisioning: starts its process (runtime) when a start slot is free (at most `max_starting` routes
  have a process that does not listen yet, at most `MAX_SPAWNS_PER_PASS` spawns per pass: a thousand
  replicas never turn the machine, or the coordinator loop, into a thundering herd); marks it `running`
  once it listens, or `failed_to_start` (failed) when the process exited or did not listen within the
  startup timeout (counted from when its process started, `started_at`);
- running: notices a crashed process (terminated, failed, with the exit code and last lines of its
  output in `detail`) and runs due health probes: health moves not_checked -> healthy after
  `healthy_threshold` successes, healthy -> degraded on a failure (degraded still serves), and to
  unhealthy after `unhealthy_threshold` failures in a row. A route that never becomes healthy within
  its startup timeout fails too;
- terminating: drains it: the route is out of the proxy configuration (written this pass), the proxy
  confirms it is gone, the revision's drain time passes, then the process is stopped (SIGTERM, SIGKILL
  after the grace period) in a background task (at most `MAX_CONCURRENT_STOPS` at once); the next pass
  marks it terminated.

Then the **unhealthy settle**: an unhealthy route is terminated as failed (a strategy or the replica
reconciler replaces it) unless it is one of its deployment's serving candidates and none of them is
ready any more: then every such route keeps running and the proxy fails open to them (control.rules.routing),
because terminating the last routes that still have a process would turn "slow" into "503 for
everyone". They are terminated as soon as one route of the deployment is ready again.

Then it writes all route changes in one statement batch and syncs the traffic layer from the result.
When the database refuses the write (disk full, locked, unreachable) the changes are kept in memory
(`unwritten`), applied on top of what the next pass reads and written again every pass; the proxy is
synced from what the controller knows, and `overlay()` lets the API show the truth meanwhile (a route
whose process is gone is never shown `healthy`).

Called by the coordinator between lifecycle cycles (never concurrently with them, so its read-modify-
write of route rows cannot interleave with a cycle's). It never waits for a slow route: probes run
concurrently with timeouts, stops run in background tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rollwise.control.clock import Clock
from rollwise.control.rules.lost import LOST
from rollwise.control.rules.restarts import OUTPUT_MARK
from rollwise.control.rules.routing import RoutingTable, compute_routing, compute_served
from rollwise.model import Health, RouteStatus, Traffic
from rollwise.model.errors import RollwiseError
from rollwise.runtime.base import DevicesBusy, LaunchSpec, Prober, RouteHandle, Runtime
from rollwise.store import Store
from rollwise.store.errors import StoreError
from rollwise.store.commands import RouteUpdate
from rollwise.store.records import RevisionRecord, RouteRecord
from rollwise.traffic.base import TrafficLayer

log = logging.getLogger(__name__)

LIVE_STATUSES = (RouteStatus.PROVISIONING, RouteStatus.RUNNING, RouteStatus.TERMINATING)
DEFAULT_PROBE_TIMEOUT = 1.0
TRAFFIC_APPLY_TIMEOUT = 2.0
MAX_SPAWNS_PER_PASS = 32
"""Processes started in one pass at most: each spawn is a little synchronous work on the event loop."""
MAX_CONCURRENT_CHECKS = 64
"""Probes and listen checks in flight at once (each has its own timeout)."""
MAX_RUNNING_LANES = MAX_CONCURRENT_CHECKS
"""Running routes are stepped in at most this many concurrent lanes (as many as probes may be in flight)."""
MAX_CONCURRENT_STOPS = 32
"""Stops in flight at once: each polls its processes until they are gone."""


@dataclass
class RoutePassReport:
    started: int = 0
    became_running: int = 0
    became_ready: int = 0
    failed: int = 0
    terminated: int = 0
    changed_ids: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.changed_ids)


def handle_of(route: RouteRecord) -> RouteHandle | None:
    if route.address is None:
        return None
    return RouteHandle(route_id=route.id, address=route.address, pid=route.pid, identity=route.identity or "",
                       devices=route.devices, node=route.node)




class RouteController:
    def __init__(
        self,
        *,
        store: Store,
        runtime: Runtime,
        prober: Prober,
        traffic: TrafficLayer,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
        max_starting: int | None = None,
    ) -> None:
        """`max_starting`: routes whose process is started but not listening yet, at most (None: no
        limit; the simulated runtime's routes cost nothing)."""
        self._store = store
        self._runtime = runtime
        self._prober = prober
        self._traffic = traffic
        self._clock = clock
        self._wake = wake
        self._max_starting = max_starting
        self._last_probe: dict[str, datetime] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._stopped: set[str] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._stops = asyncio.Semaphore(MAX_CONCURRENT_STOPS)
        self.table = RoutingTable(services={}, fail_open=frozenset())
        """The routing table of the last pass (what the proxy was told to serve)."""
        self._revision_cache: dict[tuple[int, int], tuple[datetime | None, RevisionRecord]] = {}
        self.unwritten: dict[str, RouteUpdate] = {}
        """Route changes the database refused; applied on top of the next reads and written again."""

    # --- start-up -----------------------------------------------------------------------------------

    async def adopt(self) -> tuple[int, int]:
        """After a (re)start: keep the route processes the runtime can verify, give up the rest.

        Returns (adopted, lost). Lost routes are marked terminated (not failed: the server died, not
        the revision); the strategies and the replica reconciler replace them."""
        routes = await self._store.list_routes(None, statuses=LIVE_STATUSES)
        handles = [h for h in (handle_of(r) for r in routes) if h is not None]
        verified = await self._runtime.adopt(handles)
        now = self._clock.now()
        updates = [
            RouteUpdate(
                id=r.id,
                deployment_id=r.deployment_id,
                status=RouteStatus.TERMINATED,
                traffic=Traffic.INACTIVE,
                status_updated_at=now,
                detail="process lost while the server was down",
            )
            for r in routes
            if r.address is not None and r.id not in verified  # never started: the next pass starts it
        ]
        if updates:
            await self._store.update_routes(updates)
        return len(verified), len(updates)

    async def publish_table(self) -> RoutingTable:
        """Compute the routing table from the stored routes and hand it to the traffic layer, without
        waiting for a proxy: a server that becomes active does this before it starts (or adopts) the
        proxy, so a new proxy never serves a partial table."""
        deployments = await self._store.list_deployments(None)
        routes = self.overlay(await self._store.list_routes(None, statuses=LIVE_STATUSES))
        has_check = await self._store.health_check_flags({(r.deployment_id, r.revision) for r in routes})
        self.table = compute_routing(deployments, routes, has_check)
        await self._traffic.apply(self.table.services)
        return self.table

    async def _revisions(
        self, keys: set[tuple[int, int]], born: Mapping[int, datetime]
    ) -> dict[tuple[int, int], RevisionRecord]:
        """The revisions of the live routes. Revisions never change once stored, so only those not seen
        before are read (with their JSON columns). An entry counts only for the deployment it was read
        for (same creation time: SQLite may give a destroyed deployment's id to a new one); the cache
        keeps just the keys asked for now."""
        cache = {k: entry for k, entry in self._revision_cache.items() if k in keys and entry[0] == born.get(k[0])}
        missing = keys - cache.keys()
        if missing:
            for key, record in (await self._store.load_revisions(missing)).items():
                cache[key] = (born.get(key[0]), record)
        self._revision_cache = cache
        return {k: record for k, (_, record) in cache.items()}

    # --- one pass -----------------------------------------------------------------------------------

    async def reconcile(self) -> RoutePassReport:
        report = RoutePassReport()
        now = self._clock.now()
        deployments = await self._store.list_deployments(None)
        routes = self.overlay(await self._store.list_routes(None, statuses=LIVE_STATUSES))
        born = {d.id: d.created_at for d in deployments}
        revisions = await self._revisions({(r.deployment_id, r.revision) for r in routes}, born)
        names = {d.id: d.name for d in deployments}
        has_check = {key: rev.has_health_check for key, rev in revisions.items()}

        starts = self._start_quota(routes)
        work = []
        running: list[RouteRecord] = []  # stepped in lanes, below
        for r in routes:
            if r.status is RouteStatus.RUNNING:
                running.append(r)
                continue
            if r.status is RouteStatus.PROVISIONING and r.address is None:
                if starts <= 0:
                    continue  # waits for a start slot
                starts -= 1
            work.append(self._route_step(r, revisions.get((r.deployment_id, r.revision)), names, now))
        # Running routes (nearly all of them, and nearly always nothing to do) go in at most
        # MAX_RUNNING_LANES lanes, each awaiting its routes' steps one after the other: one task per
        # route cost more than the steps themselves at 40,000 routes (benchmarks/route_pass.py).
        lanes = [running[i::MAX_RUNNING_LANES] for i in range(min(MAX_RUNNING_LANES, len(running)))]
        single, laned = await asyncio.gather(
            asyncio.gather(*work), asyncio.gather(*(self._running_lane(lane, revisions, now) for lane in lanes))
        )
        steps = [*single, *(step for lane_steps in laned for step in lane_steps)]
        changes: dict[str, RouteUpdate] = {}
        for step in steps:
            if step is not None:
                change, event = step
                _merge_change(changes, change)
                if event:
                    setattr(report, event, getattr(report, event) + 1)
        updated = {r.id: r for r in routes}
        for change in changes.values():
            updated[change.id] = _merged(updated[change.id], change)
        for change in self._settle_unhealthy(updated.values(), has_check, now):
            _merge_change(changes, change)
            updated[change.id] = _merged(updated[change.id], change)
            report.failed += 1
        report.changed_ids.update(changes)

        refused: StoreError | None = None
        pending = dict(self.unwritten)
        for route_id, change in changes.items():
            _merge_change(pending, change)
        if pending:
            try:
                await self._store.update_routes(list(pending.values()))
                self.unwritten = {}
            except StoreError as e:
                self.unwritten = pending
                refused = e

        await self._sync_traffic(compute_routing(deployments, updated.values(), has_check))
        if refused is not None:
            raise refused  # the coordinator logs it; the changes are written again next pass
        await self._drain(list(updated.values()), revisions, names, now, report)
        return report

    def overlay(self, routes: Iterable[RouteRecord]) -> list[RouteRecord]:
        """`routes` as the controller knows them: stored rows with the changes the database refused."""
        if not self.unwritten:
            return list(routes)
        return [_merged(r, self.unwritten[r.id]) if r.id in self.unwritten else r for r in routes]

    async def maintain(self) -> None:
        """Periodic upkeep of the runtime (route log rotation)."""
        await self._runtime.maintain()

    async def _sync_traffic(self, table: RoutingTable) -> None:
        previous = self.table
        self.table = table
        if table.services == previous.services:
            return
        await self._traffic.apply(table.services)
        for name in table.fail_open - previous.fail_open:
            log.warning("deployment %s: every serving route is unhealthy; the proxy sends to all of them", name)
        if any(b and not previous.services.get(name) for name, b in table.services.items()):
            # A deployment that had nothing to serve is about to be reported serving (SCALING -> READY):
            # make that true in the proxy first. Later changes need no wait: the proxy loads whole tables
            # in order, and a route leaves it only after `confirm_removed`.
            await self._traffic.wait_applied(timeout=TRAFFIC_APPLY_TIMEOUT)

    async def _running_lane(
        self, lane: Sequence[RouteRecord], revisions: Mapping[tuple[int, int], RevisionRecord], now: datetime
    ) -> list[tuple[RouteUpdate, str | None] | None]:
        return [await self._running_step(r, revisions.get((r.deployment_id, r.revision)), now) for r in lane]

    def _start_quota(self, routes: Sequence[RouteRecord]) -> int:
        """How many new processes this pass may start."""
        if self._max_starting is None:
            return MAX_SPAWNS_PER_PASS
        starting = sum(1 for r in routes if r.status is RouteStatus.PROVISIONING and r.address is not None)
        return max(0, min(MAX_SPAWNS_PER_PASS, self._max_starting - starting))

    async def _route_step(
        self,
        r: RouteRecord,
        rev: RevisionRecord | None,
        names: Mapping[int, str],
        now: datetime,
    ) -> tuple[RouteUpdate, str | None] | None:
        if r.status is RouteStatus.PROVISIONING:
            return await self._provisioning_step(r, rev, names, now)
        if r.status is RouteStatus.RUNNING:
            return await self._running_step(r, rev, now)
        if r.status is RouteStatus.TERMINATING and r.id in self._stopped:
            self._stopped.discard(r.id)
            self._last_probe.pop(r.id, None)
            return _change(r, status=RouteStatus.TERMINATED, status_updated_at=now), "terminated"
        return None

    async def _provisioning_step(
        self, r: RouteRecord, rev: RevisionRecord | None, names: Mapping[int, str], now: datetime
    ) -> tuple[RouteUpdate, str | None] | None:
        if rev is None:
            return _fail(r, now, "its revision is missing"), "failed"
        handle = handle_of(r)
        if handle is None:
            spec = LaunchSpec(
                route_id=r.id,
                deployment=names.get(r.deployment_id, str(r.deployment_id)),
                revision=r.revision,
                command=tuple(rev.command),
                env=dict(rev.env),
                ports=rev.ports,
                resources=dict(r.holds),
            )
            try:
                handle = await self._runtime.start(spec)
            except DevicesBusy as e:
                # The cycle placed it on devices whose last holder's process is still exiting (a route
                # that failed its start is marked failed before its clean-up ends): try again next pass.
                if _age(r.created_at, now) <= rev.startup_timeout_seconds:
                    return None
                return _fail(r, now, f"failed to start: {e.message.removeprefix(f'route {r.id}: ')}"), "failed"
            except RollwiseError as e:
                # Without the "route <id>: " prefix, so repeated failures read (and merge) alike.
                reason = e.message.removeprefix(f"route {r.id}: ")
                return _fail(r, now, f"failed to start: {reason}"), "failed"
            started = _change(r, address=handle.address, pid=handle.pid, identity=handle.identity, started_at=now,
                              devices=dict(handle.devices), node=handle.node)
            return started, "started"
        if not await self._runtime.is_running(handle):
            lost, detail = await self._exit_detail(handle, "the process exited before it listened")
            self._clean_up_later(handle, rev.stop_grace_seconds)
            if lost:
                return _lost(r, now, detail), "terminated"
            return _fail(r, now, detail), "failed"
        async with self._checks:
            listening = await self._prober.listening(handle.address, timeout=DEFAULT_PROBE_TIMEOUT)
        if listening:
            check = rev.health_check
            if check is None:
                return _change(r, status=RouteStatus.RUNNING, status_updated_at=now), "became_ready"
            if float(check.get("initial_delay_seconds", 0.0)) == 0 and int(check.get("healthy_threshold", 1)) == 1:
                # Probe at once: a route that is healthy as soon as it listens serves one pass earlier.
                self._last_probe[r.id] = now
                if await self._probe(handle, check):
                    return (
                        _change(r, status=RouteStatus.RUNNING, health=Health.HEALTHY, health_successes=1,
                                status_updated_at=now),
                        "became_ready",
                    )
            return _change(r, status=RouteStatus.RUNNING, status_updated_at=now), "became_running"
        if _age(r.started_at or r.created_at, now) > rev.startup_timeout_seconds:
            self._clean_up_later(handle, rev.stop_grace_seconds)
            return _fail(r, now, f"did not listen within {rev.startup_timeout_seconds:g}s"), "failed"
        return None

    async def _running_step(
        self, r: RouteRecord, rev: RevisionRecord | None, now: datetime
    ) -> tuple[RouteUpdate, str | None] | None:
        handle = handle_of(r)
        if handle is None or not await self._runtime.is_running(handle):
            self._last_probe.pop(r.id, None)
            detail, lost = "the process is gone", False
            if handle is not None:
                lost, detail = await self._exit_detail(handle, "the process exited")
                self._clean_up_later(handle, rev.stop_grace_seconds if rev else 0.0)
            if lost:
                return _lost(r, now, detail), "terminated"
            return (
                _change(r, status=RouteStatus.TERMINATED, failed=True, traffic=Traffic.INACTIVE,
                        status_updated_at=now, detail=detail),
                "failed",
            )
        check = rev.health_check if rev else None
        if not check:
            return None
        interval = float(check.get("interval_seconds", 1.0))
        last = self._last_probe.get(r.id)
        if _age(r.status_updated_at, now) < float(check.get("initial_delay_seconds", 0.0)) and r.health is Health.NOT_CHECKED:
            return None
        if last is not None and _age(last, now) < interval:
            return None
        self._last_probe[r.id] = now
        if await self._probe(handle, check):
            successes = r.health_successes + 1
            if r.health is not Health.HEALTHY and successes >= int(check.get("healthy_threshold", 1)):
                return (
                    _change(r, health=Health.HEALTHY, health_successes=successes, health_failures=0,
                            status_updated_at=now),
                    "became_ready",
                )
            if r.health_failures or r.health is not Health.HEALTHY:
                # Only a streak that can still change the health is worth a write.
                return _change(r, health_successes=successes, health_failures=0), None
            return None
        if r.health is Health.UNHEALTHY:
            return None  # kept in rotation only while its deployment fails open: the count no longer matters
        failures = r.health_failures + 1
        if r.health is Health.NOT_CHECKED:
            # Never healthy yet: still starting; the startup timeout bounds the wait.
            if rev is not None and _age(r.started_at or r.created_at, now) > rev.startup_timeout_seconds:
                return _terminate_failed(r, now, f"not healthy within {rev.startup_timeout_seconds:g}s"), "failed"
            return _change(r, health_failures=failures, health_successes=0), None
        threshold = int(check.get("unhealthy_threshold", 3))
        if failures >= threshold:
            # Out of rotation, unless its deployment has nothing else to serve (see _settle_unhealthy).
            return (
                _change(r, health=Health.UNHEALTHY, health_failures=failures, health_successes=0,
                        status_updated_at=now, detail=f"unhealthy: {failures} failed probes in a row"),
                "became_running",
            )
        if r.health is Health.HEALTHY:
            return (
                _change(r, health=Health.DEGRADED, health_failures=failures, health_successes=0, status_updated_at=now),
                "became_running",
            )
        return _change(r, health_failures=failures, health_successes=0), None

    async def _probe(self, handle: RouteHandle, check: Mapping[str, Any]) -> bool:
        async with self._checks:
            return await self._prober.probe(
                handle.address, check.get("path", "/healthz"), timeout=float(check.get("timeout_seconds", 1.0))
            )

    async def _exit_detail(self, handle: RouteHandle, what: str) -> tuple[bool, str]:
        """(lost, detail): lost when the runtime says the route went away with its node (ExitReport.lost)."""
        report = await self._runtime.exit_report(handle)
        if report.lost:
            what = LOST
        detail = f"{what} ({report.describe()})"
        if report.log_tail:
            detail += OUTPUT_MARK + " | ".join(report.log_tail)
        return report.lost, detail

    def _settle_unhealthy(
        self, routes: Iterable[RouteRecord], has_check: Mapping[tuple[int, int], bool], now: datetime
    ) -> list[RouteUpdate]:
        """Terminate (as failed) the unhealthy routes whose deployment does not need them: see the
        module docstring. Routes kept are served by the proxy in fail-open mode (control.rules.routing)."""
        by_deployment: dict[int, list[RouteRecord]] = {}
        for r in routes:
            by_deployment.setdefault(r.deployment_id, []).append(r)
        out: list[RouteUpdate] = []
        for dep_routes in by_deployment.values():
            served, failing_open = compute_served(dep_routes, has_check)
            kept = {r.id for r in served} if failing_open else set()
            for r in dep_routes:
                unhealthy = r.status is RouteStatus.RUNNING and r.health is Health.UNHEALTHY and not r.failed
                if unhealthy and r.id not in kept:
                    out.append(_terminate_failed(r, now, r.detail or "unhealthy"))
        return out

    # --- draining -----------------------------------------------------------------------------------

    async def _drain(
        self,
        routes: Sequence[RouteRecord],
        revisions: Mapping[tuple[int, int], RevisionRecord],
        names: Mapping[int, str],
        now: datetime,
        report: RoutePassReport,
    ) -> None:
        updates = []
        for r in routes:
            if r.status is not RouteStatus.TERMINATING or r.id in self._stopping or r.id in self._stopped:
                continue
            handle = handle_of(r)
            rev = revisions.get((r.deployment_id, r.revision))
            if handle is None:
                updates.append(RouteUpdate(id=r.id, deployment_id=r.deployment_id, status=RouteStatus.TERMINATED, status_updated_at=now))
                report.terminated += 1
                report.changed_ids.add(r.id)
                continue
            drain = rev.drain_seconds if rev else 0.0
            grace = rev.stop_grace_seconds if rev else 5.0
            if r.drain_until is None:
                if not await self._traffic.confirm_removed(names.get(r.deployment_id, ""), [handle.address]):
                    continue  # the proxy has not applied the removal yet: look again next pass
                until = now + timedelta(seconds=drain)
                updates.append(RouteUpdate(id=r.id, deployment_id=r.deployment_id, drain_until=until))
                if drain > 0:
                    continue
            elif now < r.drain_until:
                continue
            self._stop_later(handle, grace)
        if updates:
            await self._store.update_routes(updates)

    def _stop_later(self, handle: RouteHandle, grace: float) -> None:
        if handle.route_id in self._stopping:
            return

        async def stop() -> None:
            try:
                async with self._stops:
                    await self._runtime.stop(handle, grace_seconds=grace)
            except RollwiseError:
                log.exception("stopping route %s failed", handle.route_id)
            finally:
                self._stopping.pop(handle.route_id, None)
                self._stopped.add(handle.route_id)
                self._wake()

        self._stopping[handle.route_id] = asyncio.get_running_loop().create_task(stop())

    def _clean_up_later(self, handle: RouteHandle, grace: float) -> None:
        """Stop what is left of a route that ended on its own or timed out (children that left its
        process group, its registry entry), in the background; its row says it ended already."""

        async def clean_up() -> None:
            try:
                async with self._stops:
                    await self._runtime.stop(handle, grace_seconds=grace)
            except RollwiseError:
                log.exception("cleaning up route %s failed", handle.route_id)

        task = asyncio.get_running_loop().create_task(clean_up())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def wait_stops(self) -> None:
        """Wait for the background stops in flight (tests, simulation and shutdown)."""
        while self._stopping or self._cleanups:
            await asyncio.gather(*self._stopping.values(), *self._cleanups, return_exceptions=True)


def _age(since: datetime, now: datetime) -> float:
    return (now - since) / timedelta(seconds=1)


def _change(r: RouteRecord, **fields: Any) -> RouteUpdate:
    return RouteUpdate(id=r.id, deployment_id=r.deployment_id, **fields)


def _merge_change(into: dict[str, RouteUpdate], change: RouteUpdate) -> None:
    """Add `change` to the changes by route id; a later change of the same column wins."""
    earlier = into.get(change.id)
    into[change.id] = change if earlier is None else earlier.then(change)


def _terminate_failed(r: RouteRecord, now: datetime, detail: str, **extra: Any) -> RouteUpdate:
    """A running route the controller stops because it is unhealthy: it counts as failed."""
    return _change(
        r,
        status=RouteStatus.TERMINATING,
        failed=True,
        traffic=Traffic.INACTIVE,
        health=Health.UNHEALTHY,
        status_updated_at=now,
        detail=detail,
        **extra,
    )


def _lost(r: RouteRecord, now: datetime, detail: str) -> RouteUpdate:
    """A route that went away with its node: terminated, not failed (runtime.base.ExitReport.lost)."""
    return _change(r, status=RouteStatus.TERMINATED, traffic=Traffic.INACTIVE, status_updated_at=now, detail=detail)


def _fail(r: RouteRecord, now: datetime, detail: str) -> RouteUpdate:
    return _change(
        r,
        status=RouteStatus.FAILED_TO_START,
        failed=True,
        traffic=Traffic.INACTIVE,
        status_updated_at=now,
        detail=detail,
    )


def _merged(r: RouteRecord, change: RouteUpdate) -> RouteRecord:
    return replace(r, **change.changes())
