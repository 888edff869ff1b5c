"""The route controller: makes routes' real state follow their rows, one non-blocking pass at a time.

It keeps the live routes and their deployments in memory (control.route_book) and each pass re-reads
only the deployments the store's write feed names (store.feed: written since the last pass by the API or
the cycles), plus everything on its first pass and every `full_read_seconds` (writes by another process
are seen then). Its own writes go into the book directly. So an idle pass reads nothing, and a pass
visits only the routes that may have something to do:
- every provisioning route and every terminating one;
- the running routes of the deployments re-read this pass, those whose health probe is due (a due time
  is kept per route), and a share of the others for a liveness check: all of them while there are at
  most `LIVENESS_CHECKS_PER_PASS` running routes, else that many per pass in turn (with 40,000 routes, each
  one's process is looked at every 40 passes, ~8 s; a due probe looks at it first anyway).
For those routes:
- provisioning: starts its process (runtime) when a start slot is free (at most `max_starting` routes
  have a process that does not listen yet, at most `MAX_SPAWNS_PER_PASS` spawns per pass (without a
  `max_starting`, `MAX_STARTS_PER_PASS_UNLIMITED`): a thousand
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

Then it writes all route changes in one statement batch and syncs the traffic layer from the result:
the routing table is recomputed only for the deployments re-read or changed this pass.
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
from rollwise.control.route_book import LIVE_STATUSES, RouteBook
from rollwise.control.rules.lost import LOST
from rollwise.control.rules.restarts import OUTPUT_MARK
from rollwise.control.rules.routing import RoutingTable, compute_routing, compute_served
from rollwise.model import Health, Lifecycle, RouteStatus, Traffic
from rollwise.model.errors import RollwiseError
from rollwise.runtime.base import DevicesBusy, LaunchSpec, Prober, RouteHandle, Runtime
from rollwise.store import Store
from rollwise.store.errors import StoreError
from rollwise.store.commands import UNSET, RouteUpdate
from rollwise.store.records import DeploymentRecord, RevisionRecord, RouteRecord
from rollwise.traffic.base import Backend, TrafficLayer

log = logging.getLogger(__name__)

DEFAULT_PROBE_TIMEOUT = 1.0
TRAFFIC_APPLY_TIMEOUT = 2.0
MAX_SPAWNS_PER_PASS = 32
"""Processes started in one pass at most: each spawn is a little synchronous work on the event loop."""
MAX_STARTS_PER_PASS_UNLIMITED = 1024
"""Routes started in one pass at most without a `max_starting` (the simulated runtime: a start costs
nothing, so a thousand deployments created at once need not wait 32 routes per pass)."""
MAX_CONCURRENT_CHECKS = 64
"""Probes and listen checks in flight at once (each has its own timeout)."""
MAX_RUNNING_LANES = MAX_CONCURRENT_CHECKS
"""Running routes are stepped in at most this many concurrent lanes (as many as probes may be in flight)."""
MAX_CONCURRENT_STOPS = 32
"""Stops in flight at once: each polls its processes until they are gone."""
LIVENESS_CHECKS_PER_PASS = 1024
"""Running routes whose process is looked at in one pass, besides those with something due (module docstring)."""
DECISIVE = ("status", "health", "traffic", "traffic_ratio", "failed")
"""Route columns the cycles' rules read (control.rules.views); a change of only the others (a process's
address, pid, devices, probe counts, drain time) is announced to no other reader (store.feed)."""
FULL_READ_PAGE = 200
"""Deployments read per query by a full read."""
FULL_READ_SECONDS = 300.0
"""Seconds between passes that read every live route, not only the deployments the write feed names."""


@dataclass
class RoutePassReport:
    started: int = 0
    became_running: int = 0
    became_ready: int = 0
    failed: int = 0
    terminated: int = 0
    changed_ids: set[str] = field(default_factory=set)
    decisive: set[int] = field(default_factory=set)
    """Deployments with a route change the cycles act on (DECISIVE columns): the coordinator runs them."""

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
        full_read_seconds: float = FULL_READ_SECONDS,
    ) -> None:
        """`max_starting`: routes whose process is started but not listening yet, at most (None: no
        limit; the simulated runtime's routes cost nothing). `full_read_seconds`: see the module docstring."""
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
        self.unwritten: dict[str, RouteUpdate] = {}
        """Route changes the database refused; applied on top of the next reads and written again."""
        self._feed = store.feed()
        self._full_read_seconds = full_read_seconds
        self._last_full_read: float | None = None
        self._book = RouteBook()
        self._revisions: dict[int, tuple[datetime, dict[int, RevisionRecord]]] = {}
        """Deployment id -> (its creation time, its revisions in use by live routes, by number)."""
        self._services: dict[str, list[Backend]] = {}
        self._service_owner: dict[str, int] = {}
        self._fail_open: set[str] = set()
        self._probe_due: dict[str, datetime] = {}
        """Running routes with a health check -> when their next probe is due."""
        self._ring: list[str] = []
        self._ring_at = 0

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
        touched = await self._refresh(full=True)
        self._route_deployments(touched, self._has_check(touched))
        self.table = self._table()
        await self._traffic.apply(self.table.services)
        return self.table

    # --- the book -----------------------------------------------------------------------------------

    async def _refresh(self, *, full: bool = False) -> set[int]:
        """Bring the book up to date (module docstring); the ids of the deployments re-read."""
        written = self._feed.take()
        mono = self._clock.monotonic()
        due = self._last_full_read is None or mono - self._last_full_read >= self._full_read_seconds
        if full or due or written is None:
            self._last_full_read = mono
            deployments: list[DeploymentRecord] = []
            routes: list[RouteRecord] = []
            after: int | None = None
            while True:  # in pages, letting the requests waiting meanwhile run between them
                page = await self._store.list_deployments(None, after=after, limit=FULL_READ_PAGE)
                if not page:
                    break
                deployments.extend(page)
                routes.extend(self.overlay(await self._store.list_routes([d.id for d in page], statuses=LIVE_STATUSES)))
                after = page[-1].id
                await asyncio.sleep(0)
            # A page read before a write that commits meanwhile: the feed names it, it is read next pass.
            touched = self._book.load_all(deployments, routes)
            self._last_probe = {k: t for k, t in self._last_probe.items() if k in self._book.routes}
        elif written:
            deployments = await self._store.list_deployments(ids=written)
            routes = self.overlay(await self._store.list_routes(written, statuses=LIVE_STATUSES))
            self._book.load(written, deployments, routes)
            touched = written
        else:
            return set()
        await self._load_revisions(touched)
        return touched

    async def _load_revisions(self, deployment_ids: set[int]) -> None:
        """Keep the revisions the live routes of these deployments run. Revisions never change once
        stored, so only those not held yet are read (with their JSON columns); a deployment's are kept
        only for its creation time (SQLite may give a destroyed deployment's id to a new one)."""
        missing: set[tuple[int, int]] = set()
        for dep_id in deployment_ids:
            dep = self._book.deployments.get(dep_id)
            numbers = {r.revision for r in self._book.routes_of(dep_id)}
            if dep is None or not numbers:
                self._revisions.pop(dep_id, None)
                continue
            born, held = self._revisions.get(dep_id, (dep.created_at, {}))
            if born != dep.created_at:
                held = {}
            held = {n: rev for n, rev in held.items() if n in numbers}
            self._revisions[dep_id] = (dep.created_at, held)
            missing.update((dep_id, n) for n in numbers - held.keys())
        if missing:
            for (dep_id, number), record in (await self._store.load_revisions(missing)).items():
                self._revisions[dep_id][1][number] = record

    def _revision(self, r: RouteRecord) -> RevisionRecord | None:
        held = self._revisions.get(r.deployment_id)
        return None if held is None else held[1].get(r.revision)

    def _has_check(self, deployment_ids: Iterable[int]) -> dict[tuple[int, int], bool]:
        out: dict[tuple[int, int], bool] = {}
        for dep_id in deployment_ids:
            held = self._revisions.get(dep_id)
            if held is not None:
                out.update(((dep_id, n), rev.has_health_check) for n, rev in held[1].items())
        return out

    # --- one pass -----------------------------------------------------------------------------------

    async def reconcile(self) -> RoutePassReport:
        report = RoutePassReport()
        now = self._clock.now()
        touched = await self._refresh()
        book = self._book

        starts = self._start_quota()
        work = []
        provisioning = sorted(book.with_status(RouteStatus.PROVISIONING),
                              key=lambda r: (r.deployment_id, r.created_at, r.id))
        for r in provisioning:
            if r.address is None:
                if starts <= 0:
                    continue  # waits for a start slot
                starts -= 1
            work.append(self._route_step(r, self._revision(r), now))
        work.extend(self._route_step(r, None, now) for r in book.with_status(RouteStatus.TERMINATING)
                    if r.id in self._stopped)
        running = self._running_to_visit(touched, now)
        # Running routes go in at most MAX_RUNNING_LANES lanes, each awaiting its routes' steps one after
        # the other: one task per route cost more than the steps themselves (benchmarks/route_pass.py).
        lanes = [running[i::MAX_RUNNING_LANES] for i in range(min(MAX_RUNNING_LANES, len(running)))]
        single, laned = await asyncio.gather(
            asyncio.gather(*work), asyncio.gather(*(self._running_lane(lane, now) for lane in lanes))
        )
        steps = [*single, *(step for lane_steps in laned for step in lane_steps)]
        changes: dict[str, RouteUpdate] = {}
        for step in steps:
            if step is not None:
                change, event = step
                _merge_change(changes, change)
                if event:
                    setattr(report, event, getattr(report, event) + 1)
        for change in changes.values():
            touched.add(self._put_change(change))
        has_check = self._has_check(touched)
        for change in self._settle_unhealthy(book.routes_of_all(touched), has_check, now):
            _merge_change(changes, change)
            self._put_change(change)
            report.failed += 1
        report.changed_ids.update(changes)
        for r in running:
            self._schedule_probe(r.id)
        for route_id in changes:
            self._schedule_probe(route_id)

        refused: StoreError | None = None
        pending = dict(self.unwritten)
        for route_id, change in changes.items():
            _merge_change(pending, change)
        report.decisive = _decisive_deployments(changes.values())
        if pending:
            announce = _decisive_deployments(pending.values())
            try:
                await self._store.update_routes(list(pending.values()), feed=self._feed, announce=announce)
                self.unwritten = {}
            except StoreError as e:
                self.unwritten = pending
                refused = e

        if self._route_deployments(touched, has_check):
            await self._sync_traffic(self._table())
        if refused is not None:
            raise refused  # the coordinator logs it; the changes are written again next pass
        await self._drain(book.with_status(RouteStatus.TERMINATING), now, report)
        return report

    def _put_change(self, change: RouteUpdate) -> int:
        """Apply one of this pass's changes to the book; the route's deployment id."""
        r = _merged(self._book.routes[change.id], change)
        self._book.put(r)
        return r.deployment_id

    def _running_to_visit(self, touched: set[int], now: datetime) -> list[RouteRecord]:
        """The running routes this pass looks at (module docstring)."""
        book = self._book
        visit: dict[str, None] = {r.id: None for r in book.routes_of_all(touched) if r.status is RouteStatus.RUNNING}
        stale = []
        for route_id, due in self._probe_due.items():
            if due <= now:
                if book.is_running(route_id):
                    visit[route_id] = None
                else:
                    stale.append(route_id)
        for route_id in stale:
            del self._probe_due[route_id]
        visit.update(dict.fromkeys(self._liveness_share()))
        return [book.routes[i] for i in visit if book.is_running(i)]

    def _liveness_share(self) -> list[str]:
        """The running routes due a look at their process this pass: all of them, or the next
        LIVENESS_CHECKS_PER_PASS in turn."""
        running = self._book.by_status[RouteStatus.RUNNING]
        if len(running) <= LIVENESS_CHECKS_PER_PASS:
            return list(running)
        share: list[str] = []
        for _ in range(2):  # at most one wrap-around of the ring
            if self._ring_at >= len(self._ring):
                self._ring, self._ring_at = list(running), 0
            chunk = self._ring[self._ring_at : self._ring_at + LIVENESS_CHECKS_PER_PASS - len(share)]
            self._ring_at += len(chunk)
            share.extend(i for i in chunk if i in running)
            if len(share) >= LIVENESS_CHECKS_PER_PASS:
                break
        return share

    def _schedule_probe(self, route_id: str) -> None:
        """Note when the route's next health probe is due (the conditions `_running_step` checks)."""
        r = self._book.routes.get(route_id)
        rev = self._revision(r) if r is not None else None
        check = rev.health_check if rev is not None else None
        if r is None or r.status is not RouteStatus.RUNNING or not check:
            self._probe_due.pop(route_id, None)
            return
        due = r.status_updated_at
        if r.health is Health.NOT_CHECKED:
            due += timedelta(seconds=float(check.get("initial_delay_seconds", 0.0)))
        last = self._last_probe.get(route_id)
        if last is not None:
            due = max(due, last + timedelta(seconds=float(check.get("interval_seconds", 1.0))))
        self._probe_due[route_id] = due

    def _route_deployments(self, deployment_ids: Iterable[int], has_check: Mapping[tuple[int, int], bool]) -> bool:
        """Recompute the routing table's entries of these deployments; True when one changed."""
        changed = False
        for dep_id in deployment_ids:
            dep: DeploymentRecord | None = self._book.deployments.get(dep_id)
            if dep is None or dep.lifecycle is Lifecycle.DESTROYED:
                changed = self._drop_service(dep_id, dep.name if dep else None) or changed
                continue
            table = compute_routing([dep], self._book.routes_of(dep_id), has_check)
            backends = table.services[dep.name]
            failing_open = dep.name in table.fail_open
            if self._services.get(dep.name) != backends or self._service_owner.get(dep.name) != dep_id:
                self._services[dep.name] = backends
                self._service_owner[dep.name] = dep_id
                changed = True
            if failing_open != (dep.name in self._fail_open):
                (self._fail_open.add if failing_open else self._fail_open.discard)(dep.name)
                changed = True
        return changed

    def _table(self) -> RoutingTable:
        """The routing table as the per-deployment entries stand (a copy: the last table stays as it was)."""
        return RoutingTable(services=dict(self._services), fail_open=frozenset(self._fail_open))

    def _drop_service(self, dep_id: int, name: str | None) -> bool:
        names = [name] if name is not None else [n for n, o in self._service_owner.items() if o == dep_id]
        dropped = False
        for n in names:
            if self._service_owner.get(n) == dep_id:
                del self._service_owner[n]
                self._services.pop(n, None)
                self._fail_open.discard(n)
                dropped = True
        return dropped

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
        self, lane: Sequence[RouteRecord], now: datetime
    ) -> list[tuple[RouteUpdate, str | None] | None]:
        return [await self._running_step(r, self._revision(r), now) for r in lane]

    def _start_quota(self) -> int:
        """How many new processes this pass may start."""
        if self._max_starting is None:
            return MAX_STARTS_PER_PASS_UNLIMITED
        starting = sum(1 for r in self._book.with_status(RouteStatus.PROVISIONING) if r.address is not None)
        return max(0, min(MAX_SPAWNS_PER_PASS, self._max_starting - starting))

    async def _route_step(
        self,
        r: RouteRecord,
        rev: RevisionRecord | None,
        now: datetime,
    ) -> tuple[RouteUpdate, str | None] | None:
        if r.status is RouteStatus.PROVISIONING:
            return await self._provisioning_step(r, rev, now)
        if r.status is RouteStatus.RUNNING:
            return await self._running_step(r, rev, now)
        if r.status is RouteStatus.TERMINATING and r.id in self._stopped:
            self._stopped.discard(r.id)
            self._last_probe.pop(r.id, None)
            return _change(r, status=RouteStatus.TERMINATED, status_updated_at=now), "terminated"
        return None

    async def _provisioning_step(
        self, r: RouteRecord, rev: RevisionRecord | None, now: datetime
    ) -> tuple[RouteUpdate, str | None] | None:
        if rev is None:
            return _fail(r, now, "its revision is missing"), "failed"
        handle = handle_of(r)
        if handle is None:
            spec = LaunchSpec(
                route_id=r.id,
                deployment=self._book.name_of(r.deployment_id),
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

    async def _drain(self, routes: Sequence[RouteRecord], now: datetime, report: RoutePassReport) -> None:
        updates = []
        for r in routes:
            if r.status is not RouteStatus.TERMINATING or r.id in self._stopping or r.id in self._stopped:
                continue
            handle = handle_of(r)
            rev = self._revision(r)
            if handle is None:
                updates.append(RouteUpdate(id=r.id, deployment_id=r.deployment_id, status=RouteStatus.TERMINATED, status_updated_at=now))
                report.terminated += 1
                report.changed_ids.add(r.id)
                continue
            drain = rev.drain_seconds if rev else 0.0
            grace = rev.stop_grace_seconds if rev else 5.0
            if r.drain_until is None:
                if not await self._traffic.confirm_removed(self._book.name_of(r.deployment_id), [handle.address]):
                    continue  # the proxy has not applied the removal yet: look again next pass
                until = now + timedelta(seconds=drain)
                updates.append(RouteUpdate(id=r.id, deployment_id=r.deployment_id, drain_until=until))
                if drain > 0:
                    continue
            elif now < r.drain_until:
                continue
            self._stop_later(handle, grace)
        if updates:
            announce = _decisive_deployments(updates)
            await self._store.update_routes(updates, feed=self._feed, announce=announce)
            report.decisive |= announce
            for update in updates:
                self._put_change(update)

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


def _decisive_deployments(changes: Iterable[RouteUpdate]) -> set[int]:
    """The deployments of the changes that set a DECISIVE column."""
    return {c.deployment_id for c in changes
            if c.deployment_id is not None and any(getattr(c, column) is not UNSET for column in DECISIVE)}


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
