"""One authority for "out of rotation", and fail-open: a route leaves the routing table only after
`unhealthy_threshold` failed probes in a row (degraded routes keep serving), and when every serving route
of a deployment is unhealthy at once the table keeps all of them instead of none; they keep running."""

from __future__ import annotations

from rollwise.control.rules.routing import compute_routing
from rollwise.model import Health, RouteStatus
from rollwise.runtime.simulated import SimBehaviour, SimFailure
from rollwise.store.commands import RouteUpdate

from .conftest import OpenScenario
from .harness import TICK, Scenario, revision


async def test_every_route_unhealthy_at_once_fails_open_and_keeps_them_running(open_scenario: OpenScenario) -> None:
    sc: Scenario = await open_scenario(
        behaviours={1: SimBehaviour(startup_seconds=1.0, failure=SimFailure.UNHEALTHY, unhealthy_after=4.0)}
    )
    await sc.ready(replicas=3)
    serving = {r.id for r in await sc.alive()}
    await sc.steps(int(10 / TICK))  # well past unhealthy_after + the threshold's probes

    routes = await sc.alive()
    assert {r.id for r in routes} == serving, "nothing was terminated or replaced"
    assert all(r.status is RouteStatus.RUNNING and r.health is Health.UNHEALTHY and not r.failed for r in routes)
    table = sc.coord.routes.table
    assert table.fail_open == {"svc"}
    assert len(table.services["svc"]) == 3
    # The same table from the stored rows: what the API and the metrics report.
    dep = await sc.dep()
    flags = await sc.store.health_check_flags({(r.deployment_id, r.revision) for r in routes})
    assert compute_routing([dep], await sc.routes(), flags).fail_open == {"svc"}


async def test_degraded_routes_stay_in_the_table(sc: Scenario) -> None:
    await sc.ready(replicas=2)
    routes = await sc.alive()
    await sc.store.update_routes([RouteUpdate(id=r.id, health=Health.DEGRADED, health_failures=1) for r in routes])
    await sc.coord.routes.reconcile()
    assert len(sc.coord.routes.table.services["svc"]) == 2
    assert sc.coord.routes.table.fail_open == frozenset()


async def test_an_unhealthy_route_beside_a_ready_one_is_terminated(sc: Scenario) -> None:
    # Probes once a minute: the pass below settles the stored health without probing it away.
    await sc.ready(replicas=2, rev=revision("v1", health_check={"path": "/healthz", "interval_seconds": 60}))
    sick, fine = await sc.alive()
    await sc.store.update_routes([RouteUpdate(id=sick.id, health=Health.UNHEALTHY, health_failures=2)])
    await sc.coord.routes.reconcile()
    routes = {r.id: r for r in await sc.routes()}
    assert routes[sick.id].status is RouteStatus.TERMINATING and routes[sick.id].failed
    assert routes[fine.id].status is RouteStatus.RUNNING
    assert [b.address for b in sc.coord.routes.table.services["svc"]] == [fine.address]
