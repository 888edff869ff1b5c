"""The routing table the proxy serves, computed from route rows (pure), and its one exception: fail-open.

rollwise's own prober, with each revision's interval, timeout and thresholds, is the one authority that
takes a route out of rotation (docs/traffic.md, "Who takes a route out"): the proxy runs no health
checks of its own. A deployment's table holds its **serving candidates** that are ready:

    candidate  running, started (an address), traffic `active` with a ratio above 0, not failed
    ready      `model.is_ready_state`: healthy or degraded (or no health check)

**Fail-open.** When a deployment has candidates but none of them is ready because every one failed
`unhealthy_threshold` probes in a row (health `unhealthy`, process alive), the table holds all of those
candidates instead of none: when every replica looks unhealthy at once, the cause is most often the
machine (saturated cores, a slow shared dependency), not the replicas, and sending requests to
processes that are alive beats answering 503 for all of them (Envoy's "panic threshold" does the same).
The route controller keeps such routes running rather than terminating them (see control.route_controller), the
deployment reports it (`fail_open` in the API) and so does `/metrics`. Routes that were never healthy
(`not_checked`) are never served: they are still starting.

**Revision weights.** A deployment whose `traffic_weights` is set (a canary: revision -> percent) has
each served route of revision N weighted `weights[N] / (served routes of N)`, so the proxy's per-revision
sums are exactly the percentages whatever the number of routes in each; a revision with a weight but no
served route gets nothing (its share goes to the others, as Traefik's weighted service skips an empty
child). Without weights every served route weighs its `traffic_ratio`, as before. Backends carry their
revision: the proxy splits by revision, then by route, and answers `X-Rollwise-Revision: rN` from
revision N's routes only (docs/traffic.md).

**Pinned-only backends.** Ready routes that get no share of the split — blue-green's green before
promotion (inactive), a canary revision at weight 0 or the stable one at 100 % of the other — are in the
table at weight 0: the weighted split never sends them a request, a request pinned with
`X-Rollwise-Revision` reaches them (testers preview green; command metrics reach the canary).

Called by the route controller (every pass), the API (to show `fail_open`) and the metrics. Must not do
I/O or read the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rollwise.model import Health, Lifecycle, RouteStatus, Traffic, is_ready_state
from rollwise.store.records import DeploymentRecord, RouteRecord
from rollwise.traffic.base import Backend

HasCheck = Mapping[tuple[int, int], bool]
"""(deployment_id, revision number) -> whether that revision has a health check; missing: no."""


@dataclass(frozen=True, slots=True)
class RoutingTable:
    services: dict[str, list[Backend]]
    """Deployment name -> the backends the proxy sends its requests to (sorted by address)."""
    fail_open: frozenset[str]
    """Names of deployments served by unhealthy routes because none of their routes is ready."""


def is_candidate(route: RouteRecord) -> bool:
    """A route the proxy may send requests to, health aside."""
    return (
        route.status is RouteStatus.RUNNING
        and route.address is not None
        and not route.failed
        and route.traffic is Traffic.ACTIVE
        and route.traffic_ratio > 0
    )


def is_route_ready(route: RouteRecord, has_check: HasCheck) -> bool:
    return is_ready_state(
        route.status, route.health, has_health_check=has_check.get((route.deployment_id, route.revision), False)
    )


def compute_served(routes: Iterable[RouteRecord], has_check: HasCheck) -> tuple[list[RouteRecord], bool]:
    """One deployment's served routes and whether it is failing open (see the module docstring)."""
    candidates = [r for r in routes if is_candidate(r)]
    ready = [r for r in candidates if is_route_ready(r, has_check)]
    if ready:
        return ready, False
    unhealthy = [r for r in candidates if r.health is Health.UNHEALTHY]
    return unhealthy, bool(unhealthy)


def compute_routing(
    deployments: Sequence[DeploymentRecord], routes: Iterable[RouteRecord], has_check: HasCheck
) -> RoutingTable:
    """The whole table: every live deployment (destroyed ones are left out), weighted by traffic ratio."""
    names = {d.id: d.name for d in deployments if d.lifecycle is not Lifecycle.DESTROYED}
    by_deployment: dict[int, list[RouteRecord]] = {dep_id: [] for dep_id in names}
    for r in routes:
        if r.deployment_id in by_deployment:
            by_deployment[r.deployment_id].append(r)
    services: dict[str, list[Backend]] = {}
    fail_open: set[str] = set()
    weights_of = {d.id: d.traffic_weights for d in deployments}
    for dep_id, dep_routes in by_deployment.items():
        served, failing_open = compute_served(dep_routes, has_check)
        name = names[dep_id]
        pinned = [r for r in dep_routes if is_pinnable(r, has_check) and r not in served]
        services[name] = sorted(compute_backends(served, pinned, weights_of.get(dep_id)), key=lambda b: b.address)
        if failing_open:
            fail_open.add(name)
    return RoutingTable(services=services, fail_open=frozenset(fail_open))


def is_pinnable(route: RouteRecord, has_check: HasCheck) -> bool:
    """A ready route a pinned request may reach, whatever its traffic share."""
    return (route.status is RouteStatus.RUNNING and route.address is not None and not route.failed
            and is_route_ready(route, has_check))


def compute_backends(
    served: Sequence[RouteRecord], pinned: Sequence[RouteRecord], weights: Mapping[int, int] | None
) -> list[Backend]:
    """The served routes as backends (by `traffic_ratio`, or by the deployment's revision weights), and
    the pinned-only ones at weight 0 (module docstring)."""
    out: list[Backend] = []
    per_revision: dict[int, int] = {}
    for r in served:
        per_revision[r.revision] = per_revision.get(r.revision, 0) + 1
    for r in served:
        if r.address is None:
            continue
        if weights is None:
            weight = r.traffic_ratio
        else:
            weight = weights.get(r.revision, 0) / per_revision[r.revision]
        out.append(Backend(address=r.address, weight=weight, revision=r.revision))
    out.extend(Backend(address=r.address, weight=0.0, revision=r.revision) for r in pinned if r.address is not None)
    return out
