"""The routing table's revision weights (control/rules/routing.py): a deployment with `traffic_weights`
is split by revision exactly, whatever the number of routes in each; without, by route as before."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from rollwise.control.rules.routing import compute_routing
from rollwise.model import Health, Lifecycle, Mode, RouteStatus, Traffic
from rollwise.store.records import DeploymentRecord, RouteRecord

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEP = DeploymentRecord(
    id=1, name="chat", replicas=3, lifecycle=Lifecycle.DEPLOYING, sub_step=None, mode=Mode.FORWARD,
    current_revision=1, deploying_revision=2, paused=False, abort_requested=False, promote_requested=False,
    rollout_started_at=NOW, last_progress_at=NOW, rollback_reason=None, error_count=0, last_error=None,
    version=1, created_at=NOW, updated_at=NOW, policy=None,
)


def route(n: int, revision: int, *, health: Health = Health.HEALTHY) -> RouteRecord:
    return RouteRecord(
        id=f"r{n}", deployment_id=1, revision=revision, status=RouteStatus.RUNNING, health=health,
        traffic=Traffic.ACTIVE, traffic_ratio=1.0, failed=False, address=f"127.0.0.1:{9000 + n}", pid=None,
        identity=None, health_failures=0, health_successes=0, created_at=NOW, status_updated_at=NOW,
        drain_until=None, detail=None,
    )


ROUTES = [route(1, 1), route(2, 1), route(3, 1), route(4, 2)]
CHECKS = {(1, 1): True, (1, 2): True}


def shares(dep: DeploymentRecord, routes: list[RouteRecord]) -> dict[int, float]:
    table = compute_routing([dep], routes, CHECKS)
    out: dict[int, float] = {}
    for b in table.services["chat"]:
        out[b.revision] = out.get(b.revision, 0) + b.weight
    return out


def test_without_weights_each_route_weighs_its_ratio() -> None:
    assert shares(DEP, ROUTES) == {1: 3.0, 2: 1.0}


def test_weights_split_by_revision_whatever_the_route_counts() -> None:
    canary = replace(DEP, traffic_weights={1: 90, 2: 10})
    assert shares(canary, ROUTES) == {1: 90.0, 2: 10.0}
    assert shares(canary, ROUTES + [route(5, 2)]) == {1: 90.0, 2: 10.0}
    backends = compute_routing([canary], ROUTES + [route(5, 2)], CHECKS).services["chat"]
    assert sorted(b.weight for b in backends if b.revision == 2) == [5.0, 5.0]


def test_a_revision_without_weight_is_pinned_only_and_unready_routes_are_not_served() -> None:
    rolled_back = replace(DEP, traffic_weights={1: 100})
    assert shares(rolled_back, ROUTES) == {1: 100.0, 2: 0.0}  # r2 reachable with X-Rollwise-Revision only
    not_ready = [route(1, 1), route(4, 2, health=Health.NOT_CHECKED)]
    assert shares(replace(DEP, traffic_weights={1: 50, 2: 50}), not_ready) == {1: 50.0}


def test_blue_greens_inactive_green_is_pinned_only() -> None:
    green = replace(route(4, 2), traffic=Traffic.INACTIVE, traffic_ratio=0.0)
    starting = replace(route(5, 2, health=Health.NOT_CHECKED), traffic=Traffic.INACTIVE, traffic_ratio=0.0)
    backends = compute_routing([DEP], [route(1, 1), green, starting], CHECKS).services["chat"]
    assert [(b.revision, b.weight) for b in backends] == [(1, 1.0), (2, 0.0)]  # not the starting route
