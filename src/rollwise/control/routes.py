"""The route controller: makes routes' real state follow their rows, one non-blocking pass at a time.

Each `reconcile()` pass reads the live routes once and, for every route:
- provisioning: starts its process (runtime) if not started; marks it `running` once it listens, or
  `failed_to_start` (failed) when the process exited or did not listen within the startup timeout;
- running: notices a crashed process (terminated, failed) and runs due health probes: health moves
  not_checked -> healthy after `healthy_threshold` successes, healthy -> degraded on a failure, and to
  unhealthy after `unhealthy_threshold` failures, which terminates the route as failed. A route that
  never becomes healthy within its startup timeout fails too;
- terminating: drains it: the route is out of the proxy configuration (written this pass), the proxy
  confirms it is gone, the revision's drain time passes, then the process is stopped (SIGTERM, SIGKILL
  after the grace period) in a background task; the next pass marks it terminated.
Then it writes all route changes in one statement batch and syncs the traffic layer from the result.

Called by the coordinator between lifecycle cycles (never concurrently with them, so its read-modify-
write of route rows cannot interleave with a cycle's). It never waits for a slow route: probes run
concurrently with timeouts, stops run in background tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rollwise.control.clock import Clock
from rollwise.model import Health, Lifecycle, RouteStatus, Traffic
from rollwise.model.errors import RollwiseError
from rollwise.runtime.base import LaunchSpec, Prober, RouteHandle, Runtime
from rollwise.store import Store
from rollwise.store.records import DeploymentRecord, RevisionRecord, RouteRecord, RouteUpdate
from rollwise.traffic.base import Backend, TrafficLayer

log = logging.getLogger(__name__)

LIVE_STATUSES = (RouteStatus.PROVISIONING, RouteStatus.RUNNING, RouteStatus.TERMINATING)
DEFAULT_PROBE_TIMEOUT = 1.0
TRAFFIC_APPLY_TIMEOUT = 2.0


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
    return RouteHandle(route_id=route.id, address=route.address, pid=route.pid, identity=route.identity or "")


def compute_services(
    deployments: Sequence[DeploymentRecord],
    routes: Sequence[RouteRecord],
    revisions: Mapping[tuple[int, int], RevisionRecord],
) -> dict[str, list[Backend]]:
    """The routing table: per live deployment, the routes that receive traffic (running, ready,
    active, ratio > 0), weighted by their ratio."""
    names = {d.id: d.name for d in deployments if d.lifecycle is not Lifecycle.DESTROYED}
    services: dict[str, list[Backend]] = {name: [] for name in names.values()}
    for r in routes:
        name = names.get(r.deployment_id)
        if name is None or r.status is not RouteStatus.RUNNING or r.address is None:
            continue
        rev = revisions.get((r.deployment_id, r.revision))
        ready = r.health is Health.HEALTHY or (rev is not None and rev.health_check is None)
        if ready and r.traffic is Traffic.ACTIVE and r.traffic_ratio > 0:
            path = rev.health_check.get("path", "/healthz") if rev is not None and rev.health_check else None
            services[name].append(Backend(address=r.address, weight=r.traffic_ratio, health_path=path))
    for backends in services.values():
        backends.sort(key=lambda b: b.address)
    return services


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
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._prober = prober
        self._traffic = traffic
        self._clock = clock
        self._wake = wake
        self._last_probe: dict[str, datetime] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._stopped: set[str] = set()
        self.last_services: dict[str, list[Backend]] = {}

    # --- start-up -----------------------------------------------------------------------------------

    async def adopt(self) -> tuple[int, int]:
        """After a (re)start: keep the route processes the runtime can verify, give up the rest.

        Returns (adopted, lost). Lost routes are marked terminated (not failed: the server died, not
        the revision); the strategies and the replica reconciler replace them."""
        routes = await self._store.list_routes(None, statuses=LIVE_STATUSES)
        handles = [h for h in (handle_of(r) for r in routes) if h is not None]
        verified = await self._runtime.adopt(handles)
        now = self._clock.now()
        updates = []
        for r in routes:
            if r.address is None:
                continue  # never started: the next pass starts it
            if r.id not in verified:
                updates.append(
                    RouteUpdate(
                        id=r.id,
                        deployment_id=r.deployment_id,
                        status=RouteStatus.TERMINATED,
                        traffic=Traffic.INACTIVE,
                        status_updated_at=now,
                        detail="process lost while the server was down",
                    )
                )
        if updates:
            await self._store.update_routes(updates)
        return len(verified), len(updates)

    # --- one pass -----------------------------------------------------------------------------------

    async def reconcile(self) -> RoutePassReport:
        report = RoutePassReport()
        now = self._clock.now()
        deployments = await self._store.list_deployments(None)
        routes = await self._store.list_routes(None, statuses=LIVE_STATUSES)
        revisions = await self._store.load_revisions({(r.deployment_id, r.revision) for r in routes})
        names = {d.id: d.name for d in deployments}

        work = [self._route_step(r, revisions.get((r.deployment_id, r.revision)), names, now) for r in routes]
        changes = [c for c in await asyncio.gather(*work) if c is not None]
        updated = {r.id: r for r in routes}
        for change, event in changes:
            report.changed_ids.add(change["id"])
            if event:
                setattr(report, event, getattr(report, event) + 1)
            updated[change["id"]] = _merged(updated[change["id"]], change)
        if changes:
            await self._store.update_routes([RouteUpdate(**c) for c, _ in changes])

        services = compute_services(deployments, list(updated.values()), revisions)
        if services != self.last_services:
            first_backends = any(b and not self.last_services.get(name) for name, b in services.items())
            await self._traffic.apply(services)
            self.last_services = services
            if first_backends:
                # A deployment that had nothing to serve is about to be reported serving (SCALING ->
                # READY): make that true in the proxy first. Later changes need no wait: the proxy loads
                # whole tables in order, and a route leaves it only after `confirm_removed`.
                await self._traffic.wait_applied(timeout=TRAFFIC_APPLY_TIMEOUT)
        await self._drain(list(updated.values()), revisions, names, now, report)
        return report

    async def _route_step(
        self,
        r: RouteRecord,
        rev: RevisionRecord | None,
        names: Mapping[int, str],
        now: datetime,
    ) -> tuple[dict[str, Any], str | None] | None:
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
    ) -> tuple[dict[str, Any], str | None] | None:
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
            )
            try:
                handle = await self._runtime.start(spec)
            except RollwiseError as e:
                return _fail(r, now, f"failed to start: {e}"), "failed"
            return _change(r, address=handle.address, pid=handle.pid, identity=handle.identity), "started"
        if not await self._runtime.is_running(handle):
            return _fail(r, now, "the process exited before it was ready"), "failed"
        if await self._prober.listening(handle.address, timeout=DEFAULT_PROBE_TIMEOUT):
            check = rev.health_check
            if check is None:
                return _change(r, status=RouteStatus.RUNNING, status_updated_at=now), "became_ready"
            if float(check.get("initial_delay_seconds", 0.0)) == 0 and int(check.get("healthy_threshold", 1)) == 1:
                # Probe at once: a route that is healthy as soon as it listens serves one pass earlier.
                self._last_probe[r.id] = now
                path, timeout = check.get("path", "/healthz"), float(check.get("timeout_seconds", 1.0))
                if await self._prober.probe(handle.address, path, timeout=timeout):
                    return (
                        _change(r, status=RouteStatus.RUNNING, health=Health.HEALTHY, health_successes=1,
                                status_updated_at=now),
                        "became_ready",
                    )
            return _change(r, status=RouteStatus.RUNNING, status_updated_at=now), "became_running"
        if _age(r.created_at, now) > rev.startup_timeout_seconds:
            self._stop_later(handle, rev.stop_grace_seconds)
            return _fail(r, now, f"did not listen within {rev.startup_timeout_seconds:g}s"), "failed"
        return None

    async def _running_step(
        self, r: RouteRecord, rev: RevisionRecord | None, now: datetime
    ) -> tuple[dict[str, Any], str | None] | None:
        handle = handle_of(r)
        if handle is None or not await self._runtime.is_running(handle):
            self._last_probe.pop(r.id, None)
            return (
                _change(
                    r,
                    status=RouteStatus.TERMINATED,
                    failed=True,
                    traffic=Traffic.INACTIVE,
                    status_updated_at=now,
                    detail="the process exited",
                ),
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
        ok = await self._prober.probe(
            handle.address, check.get("path", "/healthz"), timeout=float(check.get("timeout_seconds", 1.0))
        )
        if ok:
            successes = r.health_successes + 1
            if r.health is not Health.HEALTHY and successes >= int(check.get("healthy_threshold", 1)):
                return (
                    _change(r, health=Health.HEALTHY, health_successes=successes, health_failures=0, status_updated_at=now),
                    "became_ready",
                )
            if r.health_failures or r.health is not Health.HEALTHY:
                # Only a streak that can still change the health is worth a write.
                return _change(r, health_successes=successes, health_failures=0), None
            return None
        failures = r.health_failures + 1
        if r.health is Health.NOT_CHECKED:
            # Never healthy yet: still starting; the startup timeout bounds the wait.
            if rev is not None and _age(r.created_at, now) > rev.startup_timeout_seconds:
                return _terminate_failed(r, now, f"not healthy within {rev.startup_timeout_seconds:g}s"), "failed"
            return _change(r, health_failures=failures, health_successes=0), None
        if failures >= int(check.get("unhealthy_threshold", 3)):
            detail = f"unhealthy: {failures} failed probes in a row"
            return _terminate_failed(r, now, detail, health_failures=failures, health_successes=0), "failed"
        if r.health is Health.HEALTHY:
            return (
                _change(r, health=Health.DEGRADED, health_failures=failures, health_successes=0, status_updated_at=now),
                "became_running",
            )
        return _change(r, health_failures=failures, health_successes=0), None

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
                await self._runtime.stop(handle, grace_seconds=grace)
            except RollwiseError:
                log.exception("stopping route %s failed", handle.route_id)
            finally:
                self._stopping.pop(handle.route_id, None)
                self._stopped.add(handle.route_id)
                self._wake()

        self._stopping[handle.route_id] = asyncio.get_running_loop().create_task(stop())

    async def wait_stops(self) -> None:
        """Wait for the background stops in flight (tests, simulation and shutdown)."""
        while self._stopping:
            await asyncio.gather(*list(self._stopping.values()), return_exceptions=True)


def _age(since: datetime, now: datetime) -> float:
    return (now - since) / timedelta(seconds=1)


def _change(r: RouteRecord, **fields: Any) -> dict[str, Any]:
    return {"id": r.id, "deployment_id": r.deployment_id, **fields}


def _terminate_failed(r: RouteRecord, now: datetime, detail: str, **extra: Any) -> dict[str, Any]:
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


def _fail(r: RouteRecord, now: datetime, detail: str) -> dict[str, Any]:
    return _change(
        r,
        status=RouteStatus.FAILED_TO_START,
        failed=True,
        traffic=Traffic.INACTIVE,
        status_updated_at=now,
        detail=detail,
    )


def _merged(r: RouteRecord, change: Mapping[str, Any]) -> RouteRecord:
    return replace(r, **{k: v for k, v in change.items() if k not in ("id", "deployment_id")})
