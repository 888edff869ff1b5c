"""Prometheus metrics of one API app, in a registry of its own (two apps in one process never share
counters; tests build many).

    rollwise_rollouts_started_total{strategy}          rollouts started through the API (rollout, undo)
    rollwise_rollouts_completed_total{strategy}        rollouts a cycle ended with the revision swap
    rollwise_rollouts_rolled_back_total{strategy}      rollouts a cycle ended by rolling back
    rollwise_cycle_duration_seconds{kind}              histogram of lifecycle cycle durations
    rollwise_cycle_errors_total{kind}                  per-deployment evaluation errors in cycles
    rollwise_deployments{lifecycle}                    gauge, computed at scrape time
    rollwise_routes{status}                            gauge, computed at scrape time
    rollwise_deployment_fail_open{deployment}          1 for each deployment whose serving routes are all
                                                       unhealthy (the proxy sends to all of them); others absent
    rollwise_proxy_up                                  1 while the proxy process runs (when supervised)
    rollwise_proxy_restarts_total                      proxy exits noticed and restarted by the supervisor
    rollwise_proxy_requests_total{deployment,code}     requests the proxy served (when it can say)
    rollwise_analysis_measurements_total{deployment,metric,verdict}
                                                       canary analysis measurements stored (every rollout)
    rollwise_analysis_value{deployment,metric}         the newest measured value of each metric (numeric
                                                       values only: a command's last line may be words)

Completed / rolled back / cycle durations come from the coordinator's observers (`observe_cycle` is
appended to `coordinator.observers`); started from the operations' (`observe_rollout_started` in
`ops.rollout_observers`), called by every request that started a rollout. The analysis families are read
from the store at scrape time (`Store.measurement_summary`: one GROUP BY), so every server of a database,
standbys included, shows the same counts and a restart loses none.

Called by `api.app` (construction, /metrics, the observers). Must not: write anything
but its own metrics; a failure to read the proxy's counts leaves that family out of one scrape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from rollwise.control.cycles import CycleReport
from rollwise.control.rules.routing import compute_served
from rollwise.control.operations import Operations
from rollwise.store.records import DeploymentRecord, MeasurementSummary
from rollwise.model import Lifecycle, RollwiseError, RouteStatus

log = logging.getLogger("rollwise.api")

CONTENT_TYPE = CONTENT_TYPE_LATEST
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RequestCounts = Callable[[], Awaitable[dict[str, dict[int, int]]]]


class ProxyProcess(Protocol):
    """What the API reads of the traffic layer's proxy (rollwise.traffic.base.TrafficLayer has it)."""

    @property
    def running(self) -> bool: ...

    @property
    def restarts(self) -> int: ...


class ApiMetrics:
    def __init__(
        self, ops: Operations, *, request_counts: RequestCounts | None = None, proxy: ProxyProcess | None = None
    ) -> None:
        self.ops = ops
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_counts = request_counts
        r = self.registry
        self.started = Counter(
            "rollwise_rollouts_started", "Rollouts started through the API", ["strategy"], registry=r
        )
        self.completed = Counter(
            "rollwise_rollouts_completed", "Rollouts that ended with the new revision serving", ["strategy"],
            registry=r,
        )
        self.rolled_back = Counter(
            "rollwise_rollouts_rolled_back", "Rollouts that ended by rolling back", ["strategy"], registry=r
        )
        self.cycle_seconds = Histogram(
            "rollwise_cycle_duration_seconds", "Duration of lifecycle cycles", ["kind"], buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.cycle_errors = Counter(
            "rollwise_cycle_errors", "Per-deployment evaluation errors in lifecycle cycles", ["kind"], registry=r
        )
        self.deployments = Gauge("rollwise_deployments", "Deployments by lifecycle", ["lifecycle"], registry=r)
        self.routes = Gauge("rollwise_routes", "Routes by status", ["status"], registry=r)
        self.fail_open = Gauge(
            "rollwise_deployment_fail_open",
            "Deployments whose serving routes are all unhealthy: the proxy sends to all of them",
            ["deployment"],
            registry=r,
        )
        self.proxy = _ProxyRequests()
        self.analysis = _Analysis()
        r.register(self.analysis)
        if request_counts is not None:
            r.register(self.proxy)
        if proxy is not None:
            r.register(_ProxyProcess(proxy))

    # --- event sources --------------------------------------------------------------------------------

    def observe_rollout_started(self, dep: DeploymentRecord) -> None:
        """An Operations observer: a request started a rollout (rollout, undo, supersede)."""
        self.started.labels(strategy=dep.policy.strategy.value if dep.policy is not None else "unknown").inc()

    def observe_cycle(self, report: CycleReport, seconds: float) -> None:
        """A coordinator observer: cycle durations and the rollouts a cycle ended."""
        kind = report.kind.value
        self.cycle_seconds.labels(kind=kind).observe(seconds)
        if report.errors:
            self.cycle_errors.labels(kind=kind).inc(len(report.errors))
        for strategy, outcome in report.rollouts_ended:
            if outcome == "completed":
                self.completed.labels(strategy=strategy).inc()
            elif outcome == "rolled_back":
                self.rolled_back.labels(strategy=strategy).inc()

    # --- scrape ---------------------------------------------------------------------------------------

    async def render(self) -> bytes:
        """Refresh the scrape-time gauges, then the whole registry in the Prometheus text format."""
        await self._refresh_gauges()
        await self._refresh_proxy_counts()
        await self._refresh_analysis()
        return generate_latest(self.registry)

    async def _refresh_gauges(self) -> None:
        deployments = await self.ops.list()
        by_lifecycle = {lc.value: 0 for lc in Lifecycle if lc is not Lifecycle.DESTROYED}
        by_status = {s.value: 0 for s in RouteStatus if s is not RouteStatus.TERMINATED}
        loaded = await self.ops.routes_and_revisions(deployments)
        failing_open = []
        for dep in deployments:
            by_lifecycle[dep.lifecycle.value] = by_lifecycle.get(dep.lifecycle.value, 0) + 1
            routes, revisions = loaded[dep.id]
            for route in routes:
                if route.status is not RouteStatus.TERMINATED:
                    by_status[route.status.value] += 1
            if compute_served(routes, {(dep.id, rev.number): rev.has_health_check for rev in revisions})[1]:
                failing_open.append(dep.name)
        self.fail_open.clear()
        for name in failing_open:
            self.fail_open.labels(deployment=name).set(1)
        for lifecycle, n in by_lifecycle.items():
            self.deployments.labels(lifecycle=lifecycle).set(n)
        for status, n in by_status.items():
            self.routes.labels(status=status).set(n)

    async def _refresh_proxy_counts(self) -> None:
        if self._request_counts is None:
            return
        try:
            counts = await self._request_counts()
        except RollwiseError as e:
            log.warning("proxy request counts unavailable: %s", e.message)
            return
        self.proxy.counts = counts


    async def _refresh_analysis(self) -> None:
        try:
            # The operations layer has no aggregate of its own for this; the read is the store's.
            self.analysis.summary = await self.ops.store.measurement_summary()
        except RollwiseError as e:
            log.warning("analysis measurements unavailable: %s", e.message)
            self.analysis.summary = []


class _Analysis(Collector):
    """The canary analysis' measurements, as counted at the last scrape."""

    def __init__(self) -> None:
        self.summary: list[MeasurementSummary] = []

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        measured, value = self._families()
        for s in self.summary:
            for verdict, n in sorted(s.counts.items()):
                measured.add_metric([s.deployment, s.metric, verdict], n)
            number = _number(s.last_value)
            if number is not None:
                value.add_metric([s.deployment, s.metric], number)
        return [measured, value]

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily("rollwise_analysis_measurements", "Canary analysis measurements stored",
                                labels=["deployment", "metric", "verdict"]),
            GaugeMetricFamily("rollwise_analysis_value", "The newest measured value of a canary analysis metric",
                              labels=["deployment", "metric"]),
        )


def _number(value: str | None) -> float | None:
    """A stored value as a number, when it is one (a command's last line may be words)."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class _ProxyRequests(Collector):
    """The proxy's own counters, as read at the last scrape (a counter family: they only grow, and
    restart at 0 with the proxy)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[int, int]] = {}

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily("rollwise_proxy_requests", "Requests the proxy served", labels=["deployment", "code"])]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "rollwise_proxy_requests", "Requests the proxy served", labels=["deployment", "code"]
        )
        for deployment, by_code in sorted(self.counts.items()):
            for code, n in sorted(by_code.items()):
                family.add_metric([deployment, str(code)], n)
        return [family]


class _ProxyProcess(Collector):
    """Whether the proxy process runs, and how often the supervisor restarted it (read at each scrape)."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self._proxy = proxy

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("rollwise_proxy_up", "1 while the proxy process runs")
        up.add_metric([], 1.0 if self._proxy.running else 0.0)
        restarts = CounterMetricFamily(
            "rollwise_proxy_restarts", "Proxy exits noticed and restarted by the supervisor"
        )
        restarts.add_metric([], float(self._proxy.restarts))
        return [up, restarts]


def proxy_request_counts(coordinator: Any) -> RequestCounts | None:
    """The traffic layer's `request_counts` when it has one (Traefik does; NoTraffic does not)."""
    traffic = getattr(coordinator, "traffic", None)
    counts = getattr(traffic, "request_counts", None)
    return counts if callable(counts) else None
