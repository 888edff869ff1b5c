"""A READY deployment keeps D ready routes of its serving revision: crashed routes are replaced, replica
changes scale it up and down, and destroy drains everything to DESTROYED."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollwise.control.coordinator import Intervals
from rollwise.control.errors import NotApplicable, NotFound
from rollwise.model import Lifecycle, RouteStatus

from rollwise.runtime.simulated import SimBehaviour

from .conftest import OpenScenario
from .harness import Scenario, is_ready


async def test_a_crashed_route_is_replaced(sc: Scenario) -> None:
    await sc.ready(replicas=3)
    victim = (await sc.alive())[0]

    sc.runtime.crash(victim.id)
    await sc.run_until_sample("svc", lambda s: victim.id not in s.route_ids and s.serving == 3)

    dep = await sc.dep()
    assert (dep.lifecycle, dep.current_revision) == (Lifecycle.READY, 1)
    routes = {r.id: r for r in await sc.routes()}
    alive = [r for r in routes.values() if r.status.is_alive]
    assert len(alive) == 3 and victim.id not in {r.id for r in alive}
    assert routes[victim.id].failed
    assert sc.watch().max_alive <= 3 + 1
    assert any("replicas: replacing failed routes of revision 1" in h.message for h in await sc.history())
    assert dep.last_error is not None and "killed by signal 9" in dep.last_error


async def test_scale_up_and_down_in_ready(sc: Scenario) -> None:
    await sc.ready(replicas=2)
    sc.restart_watch()

    await sc.ops.patch("svc", replicas=5)
    await sc.run_until_sample("svc", lambda s: s.serving == 5)
    await sc.steps(3)
    assert sc.watch().samples[-1].alive == 5
    assert sc.watch().min_serving >= 2, "scaling up never takes a serving route away"

    await sc.ops.patch("svc", replicas=1)
    await sc.run_until_sample("svc", lambda s: s.alive == 1)
    await sc.steps(3)

    dep = await sc.dep()
    assert (dep.lifecycle, dep.replicas, dep.current_revision) == (Lifecycle.READY, 1, 1)
    assert [s.serving for s in sc.watch().samples[-3:]] == [1, 1, 1]
    messages = [h.message for h in await sc.history()]
    assert "changed replicas 2 -> 5" in messages and "changed replicas 5 -> 1" in messages


async def test_scaling_down_reaches_routes_that_are_still_starting(open_scenario: OpenScenario) -> None:
    sc = await open_scenario(behaviours={1: SimBehaviour(startup_seconds=3600.0)})  # they never get ready
    await sc.create(replicas=6)
    await sc.run_until_sample("svc", lambda s: s.alive == 6)
    await sc.ops.patch("svc", replicas=2)
    await sc.run_until_sample("svc", lambda s: s.alive == 2, max_rounds=10)
    await sc.ops.patch("svc", replicas=0)
    await sc.run_until_sample("svc", lambda s: s.alive == 0, max_rounds=10)
    assert (await sc.dep()).lifecycle is Lifecycle.READY  # 0 of 0 ready


async def test_scale_to_zero_and_back(sc: Scenario) -> None:
    await sc.ready(replicas=2)
    await sc.ops.patch("svc", replicas=0)
    await sc.run_until_sample("svc", lambda s: s.alive == 0)
    await sc.ops.patch("svc", replicas=2)
    await sc.run_until_sample("svc", lambda s: s.serving == 2)
    assert (await sc.dep()).lifecycle is Lifecycle.READY


async def test_replicas_changed_mid_rollout_are_the_rollouts_target(sc: Scenario) -> None:
    await sc.ready(replicas=2, policy={"strategy": "rolling"})
    await sc.start_rollout()
    await sc.step()
    await sc.ops.patch("svc", replicas=4)

    dep = await sc.run_until("svc", is_ready)

    assert dep.current_revision == 2
    await sc.run_until_sample("svc", lambda s: s.serving_by_revision == {2: 4})


async def test_destroy_drains_every_route_then_destroyed(sc: Scenario) -> None:
    await sc.ready(replicas=3)
    await sc.start_rollout()
    await sc.step()  # mid-rollout routes of both revisions

    await sc.ops.destroy("svc")
    dep = await sc.run_until("svc", lambda d: d.lifecycle is Lifecycle.DESTROYED)

    assert {r.status for r in await sc.store.list_routes([dep.id])} == {RouteStatus.TERMINATED}
    assert sc.runtime.running_route_ids() == set()
    with pytest.raises(NotFound):
        await sc.ops.get("svc")
    assert [d.name for d in await sc.ops.list()] == []
    assert (await sc.store.list_history(dep.id))[-1].message == "destroyed: every route stopped"
    with pytest.raises(NotFound):
        await sc.ops.destroy("svc")


async def test_verbs_refused_while_destroying(sc: Scenario) -> None:
    await sc.ready(replicas=1)
    await sc.ops.destroy("svc")
    await sc.ops.destroy("svc")  # asking twice is fine
    with pytest.raises(NotApplicable):
        await sc.ops.patch("svc", replicas=3)
    with pytest.raises(NotApplicable):
        await sc.ops.activate("svc", 1)


async def test_a_destroyed_name_can_be_created_again(sc: Scenario) -> None:
    await sc.ready(replicas=1)
    await sc.ops.destroy("svc")
    await sc.run_until("svc", lambda d: d.lifecycle is Lifecycle.DESTROYED)

    dep = await sc.ready(replicas=2)

    assert (dep.lifecycle, dep.current_revision) == (Lifecycle.READY, 1)
    assert len(await sc.alive()) == 2
    assert [h.message for h in await sc.history()][0].startswith("scaling:")


async def test_ended_routes_are_purged_after_their_retention(tmp_path: Path) -> None:
    sc = await Scenario.open(tmp_path, intervals=Intervals(purge=0.0, retention=60.0))
    try:
        await sc.ready(replicas=3)
        victim = (await sc.alive())[0]
        sc.runtime.crash(victim.id)
        await sc.run_until_sample("svc", lambda s: victim.id not in s.route_ids and s.serving == 3)
        await sc.ops.patch("svc", replicas=2)  # one route ends without failing
        await sc.run_until_sample("svc", lambda s: s.alive == 2)
        await sc.steps(3)
        ended = [r for r in await sc.routes() if r.status is RouteStatus.TERMINATED and not r.failed]
        assert len(ended) == 1, "kept while younger than the retention"
        sc.clock.advance(61)
        report = await sc.step()
        assert report.purged == 1
        routes = {r.id: r for r in await sc.routes()}
        assert ended[0].id not in routes
        assert victim.id in routes, "the newest failures stay: they say why the deployment struggled"
        assert len([r for r in routes.values() if r.status is RouteStatus.RUNNING]) == 2
    finally:
        await sc.close()
