"""The route controller's pass reads only what changed (control.route_controller, control.route_book).

A real SQLite file, the simulated runtime (so processes can crash) and a manual clock; routes are
written as running and healthy, as a pass after their start would leave them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event

from rollwise.control import route_controller
from rollwise.control.clock import ManualClock
from rollwise.control.route_book import RouteBook
from rollwise.control.route_controller import RouteController
from rollwise.model import Health, Policy, RouteStatus, Traffic
from rollwise.runtime.base import LaunchSpec
from rollwise.runtime.simulated import SimBehaviour, SimulatedRuntime
from rollwise.store import ChangeSet, NewRoute, RevisionSpec, RouteUpdate, Store
from rollwise.traffic.base import NoTraffic

T0 = datetime(2026, 5, 1, tzinfo=UTC)
FULL_READ = 60.0


@dataclass
class World:
    store: Store
    runtime: SimulatedRuntime
    clock: ManualClock
    controller: RouteController
    url: str
    routes: dict[str, int]
    """Route id -> deployment id."""


async def build(tmp_path: Path, *, deployments: int, replicas: int, check: bool) -> World:
    url = f"sqlite+aiosqlite:///{tmp_path}/rollwise.db"
    store = await Store.open(url)
    clock = ManualClock(T0)
    runtime = SimulatedRuntime(clock.now, default=SimBehaviour(startup_seconds=0.0))
    health = {"path": "/healthz", "interval_seconds": 60.0} if check else None
    routes: dict[str, int] = {}
    new = []
    for i in range(deployments):
        dep = await store.create_deployment(name=f"svc-{i}", replicas=replicas, policy=Policy(),
                                            revision=RevisionSpec(command=("serve", "{port}"), health_check=health), now=T0)
        for k in range(replicas):
            route_id = f"r{i}x{k}"
            handle = await runtime.start(LaunchSpec(route_id=route_id, deployment=dep.name, revision=1,
                                                    command=("serve",), env={}))
            new.append(NewRoute(id=route_id, deployment_id=dep.id, revision=1, status=RouteStatus.RUNNING,
                                health=Health.HEALTHY, created_at=T0, address=handle.address, pid=handle.pid,
                                identity=handle.identity))
            routes[route_id] = dep.id
    await store.apply(ChangeSet(new_routes=new), T0)
    controller = RouteController(store=store, runtime=runtime, prober=runtime, traffic=NoTraffic(), clock=clock,
                                 full_read_seconds=FULL_READ)
    first = await controller.reconcile()
    assert not first.changed
    return World(store, runtime, clock, controller, url, routes)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await build(tmp_path, deployments=3, replicas=2, check=True)
    try:
        yield w
    finally:
        await w.store.close()


def served(w: World) -> set[str]:
    """Addresses the proxy splits requests between (an inactive route stays, at weight 0, for pinned requests)."""
    return {b.address for backends in w.controller.table.services.values() for b in backends if b.weight > 0}


async def test_an_idle_pass_runs_no_statement(world: World) -> None:
    seen: list[str] = []
    event.listen(world.store.engine.sync_engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    world.clock.advance(0.2)
    report = await world.controller.reconcile()
    assert not report.changed and seen == []
    assert len(served(world)) == 6


async def test_a_write_of_this_server_is_seen_by_the_next_pass(world: World) -> None:
    route_id, dep_id = next(iter(world.routes.items()))
    route = next(r for r in await world.store.list_routes([dep_id]) if r.id == route_id)
    update = RouteUpdate(id=route_id, deployment_id=dep_id, traffic=Traffic.INACTIVE)
    await world.store.apply(ChangeSet(route_updates=[update]), T0)
    await world.controller.reconcile()
    assert route.address not in served(world) and len(served(world)) == 5


async def test_a_write_by_another_process_is_seen_at_the_next_full_read(world: World) -> None:
    """The feed only knows this process's writes; the periodic full read catches the others."""
    route_id, dep_id = next(iter(world.routes.items()))
    address = next(r.address for r in await world.store.list_routes([dep_id]) if r.id == route_id)
    other = await Store.open(world.url)  # another process on the same file
    try:
        await other.apply(ChangeSet(route_updates=[RouteUpdate(id=route_id, deployment_id=dep_id,
                                                               traffic=Traffic.INACTIVE)]), T0)
    finally:
        await other.close()
    world.clock.advance(1.0)
    await world.controller.reconcile()
    assert address in served(world)  # not seen yet
    world.clock.advance(FULL_READ)
    await world.controller.reconcile()
    assert address not in served(world)


async def test_every_crash_is_noticed_within_its_turn_when_routes_outnumber_the_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No health check (no probe to notice it): liveness checks go round LIVENESS_CHECKS_PER_PASS at a time."""
    monkeypatch.setattr(route_controller, "LIVENESS_CHECKS_PER_PASS", 3)
    w = await build(tmp_path, deployments=5, replicas=2, check=False)
    try:
        for crashed in list(w.routes)[::3]:
            w.runtime.crash(crashed)
            passes = 0
            while True:
                passes += 1
                w.clock.advance(0.2)
                report = await w.controller.reconcile()
                if crashed in report.changed_ids:
                    break
                assert passes <= 4, f"{crashed}: not noticed within ceil(10 / 3) passes"
            stored = {r.id: r for r in await w.store.list_routes(None)}
            assert stored[crashed].status is RouteStatus.TERMINATED and stored[crashed].failed
    finally:
        await w.store.close()


async def test_probes_are_sent_when_due_and_only_then(world: World) -> None:
    """Health checks every 60 s: a pass between two due times probes nothing."""
    probes: list[str] = []
    real = world.runtime.probe

    async def counting(address: str, path: str, *, timeout: float) -> bool:
        probes.append(address)
        return await real(address, path, timeout=timeout)

    world.runtime.probe = counting  # type: ignore[method-assign]
    world.clock.advance(30)
    await world.controller.reconcile()
    assert probes == []
    world.clock.advance(31.0)
    await world.controller.reconcile()
    assert len(probes) == 6 and len(set(probes)) == 6


async def test_a_full_read_names_only_the_deployments_that_differ(world: World) -> None:
    deployments = await world.store.list_deployments()
    routes = await world.store.list_routes(None)
    book = RouteBook()
    assert book.load_all(deployments, routes) == {d.id for d in deployments}
    assert book.load_all(deployments, routes) == set()
    first, second = routes[0], routes[-1]
    degraded = [replace(r, health=Health.DEGRADED) if r is first else r for r in routes if r is not second]
    assert book.load_all(deployments, degraded) == {first.deployment_id, second.deployment_id}
    assert book.load_all(deployments[1:], degraded) == {deployments[0].id}
    assert first.deployment_id != second.deployment_id
