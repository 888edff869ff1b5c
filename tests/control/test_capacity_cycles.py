"""Capacity in the control plane (docs/strategies.md, "Capacity"): the real coordinator, cycles, route
controller and operations over a real SQLite file and the simulated runtime with GPU slots.

What the store says a route holds (`holds`, `devices`) and what the simulated processes really hold
(the runtime's device table) are both checked after every round.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from rollwise.control.rules.capacity import Room
from rollwise.model import RouteStatus, ValidationFailed
from rollwise.store import RouteRecord

from .conftest import OpenScenario
from .harness import Scenario, is_ready, revision

GPU1 = {"resources": {"gpu": 1}}
HOLDING = (RouteStatus.PROVISIONING, RouteStatus.RUNNING, RouteStatus.TERMINATING)


def gpu_revision(label: str, **extra: Any) -> dict[str, Any]:
    return revision(label, **GPU1, **extra)


async def holding_routes(sc: Scenario) -> list[RouteRecord]:
    return [r for r in await sc.store.list_routes() if r.status in HOLDING and r.holds]


async def check_node(sc: Scenario, capacity: int) -> int:
    """The invariants after a round; returns the gpu units held."""
    rows = await holding_routes(sc)
    held = sum(r.holds.get("gpu", 0) for r in rows)
    assert held <= capacity, [(r.id, r.status, dict(r.holds)) for r in rows]
    indices = Counter(i for r in rows for i in r.devices.get("gpu", ()))
    assert all(n == 1 for n in indices.values()), indices
    assert sc.runtime.devices.held().get("gpu", 0) <= capacity
    return held


async def run_checked(sc: Scenario, names: list[str], capacity: int, *, max_rounds: int = 400) -> int:
    """Rounds until every deployment named is READY, checking the node after each; the most held."""
    most = 0
    for _ in range(max_rounds):
        deps = [await sc.dep(n) for n in names]
        if all(is_ready(d) for d in deps):
            return most
        await sc.step()
        most = max(most, await check_node(sc, capacity))
    raise AssertionError(f"not ready in {max_rounds} rounds: {[(d.name, d.lifecycle, d.sub_step) for d in deps]}")


async def test_two_deployments_roll_out_at_once_on_a_full_node(open_scenario: OpenScenario) -> None:
    sc = await open_scenario(resources={"gpu": 4})
    for name in ("a", "b"):
        await sc.create(name, replicas=2, rev=gpu_revision("v1"))
    assert await run_checked(sc, ["a", "b"], 4) == 4
    for name in ("a", "b"):  # back to back: both rollouts run at once with no spare gpu
        await sc.start_rollout(name, gpu_revision("v2"))
    assert await run_checked(sc, ["a", "b"], 4) == 4
    for name in ("a", "b"):
        dep = await sc.dep(name)
        assert (dep.current_revision, dep.deploying_revision) == (2, None)
        assert [r.revision for r in await sc.alive(name)] == [2, 2]
        messages = [h.message for h in await sc.history(name)]
        assert any("capacity: replacing one r1 route at a time (needs gpu 1, free gpu 0)" in m for m in messages)
        assert not any(h.result == "rolled_back" for h in await sc.history(name))
    devices = sorted(i for r in await holding_routes(sc) for i in r.devices["gpu"])
    assert devices == [0, 1, 2, 3]


async def test_deployments_are_placed_in_id_order_and_the_later_one_says_what_it_waits_for(
    open_scenario: OpenScenario,
) -> None:
    sc = await open_scenario(resources={"gpu": 3})
    await sc.create("first", replicas=1, rev=gpu_revision("v1"))
    await sc.create("second", replicas=1, rev=gpu_revision("v1"))
    await run_checked(sc, ["first", "second"], 3)
    # One gpu left, both ask for one more: the lower id gets it, the other waits and says so.
    await sc.ops.patch("second", replicas=2)
    await sc.ops.patch("first", replicas=2)
    await sc.steps(6)
    assert len(await sc.alive("first")) == 2
    assert len(await sc.alive("second")) == 1
    await check_node(sc, 3)
    waits = [h for h in await sc.history("second") if "waiting for capacity" in h.message]
    assert [h.message for h in waits] == [
        "replicas: waiting for capacity: needs gpu 1 per route, free gpu 0 (desired 2 of revision 1)"
    ]
    assert waits[0].attempts > 1  # the same words every cycle: one row
    # Room frees up: the waiting deployment gets it.
    await sc.ops.patch("first", replicas=1)
    await sc.run_until_sample("second", lambda s: s.alive == 2)
    await check_node(sc, 3)


async def test_the_ready_reconciler_replaces_a_crashed_route_on_a_full_node(sc_gpu: Scenario) -> None:
    sc = sc_gpu
    await sc.ready("svc", replicas=2, rev=gpu_revision("v1"))
    victim = (await sc.alive())[0]
    sc.runtime.crash(victim.id)
    await sc.run_until_sample("svc", lambda s: s.alive == 2 and victim.id not in s.route_ids)
    await check_node(sc, 2)
    new = [r for r in await sc.alive() if r.id != victim.id and r.created_at > victim.created_at]
    assert [r.devices["gpu"] for r in new] == [victim.devices["gpu"]]


@pytest.fixture
async def sc_gpu(open_scenario: OpenScenario) -> Scenario:
    return await open_scenario(resources={"gpu": 2})


async def test_a_revision_no_node_can_hold_is_refused_and_nothing_is_stored(sc_gpu: Scenario) -> None:
    sc = sc_gpu
    with pytest.raises(ValidationFailed, match=r"^revision\.resources\.tpu: the node has no tpu slots"):
        await sc.ops.create(name="svc", replicas=1, policy=None, revision=revision("v1", resources={"tpu": 1}))
    with pytest.raises(ValidationFailed, match=r"^revision\.resources\.gpu: needs 3 per route, the node has 2$"):
        await sc.ops.create(name="svc", replicas=1, policy=None, revision=revision("v1", resources={"gpu": 3}))
    assert await sc.store.get_deployment("svc") is None
    await sc.ready("svc", replicas=1, rev=gpu_revision("v1"))
    with pytest.raises(ValidationFailed, match=r"resources\.gpu: needs 4 per route"):
        await sc.ops.add_revision("svc", revision("v2", resources={"gpu": 4}))
    assert [r.number for r in await sc.ops.revisions("svc")] == [1]


async def test_a_start_whose_devices_are_still_held_waits_for_them(sc_gpu: Scenario) -> None:
    # A process the database no longer counts still holds both devices (its exit not yet observed):
    # the new route is started only once they are free, within its startup timeout.
    sc = sc_gpu
    sc.runtime.devices.allocate("exiting", {"gpu": 2})
    await sc.create("svc", replicas=1, rev=gpu_revision("v1"))
    await sc.steps(4)
    [waiting] = await sc.alive()
    assert (waiting.status, waiting.address, waiting.failed) == (RouteStatus.PROVISIONING, None, False)
    sc.runtime.devices.release("exiting")
    dep = await sc.run_until("svc", is_ready)
    [route] = await sc.alive()
    assert route.id == waiting.id and route.devices == {"gpu": (0,)} and route.node == "sim"
    assert dep.current_revision == 1


async def test_devices_that_never_free_fail_the_start_after_its_timeout(sc_gpu: Scenario) -> None:
    sc = sc_gpu
    sc.runtime.devices.allocate("stuck", {"gpu": 2})
    await sc.create("svc", replicas=1, rev=gpu_revision("v1", startup_timeout_seconds=3))
    await sc.run_until_sample("svc", lambda s: s.alive == 0 or len(s.route_ids) > 1, max_rounds=40)
    failed = [r for r in await sc.routes() if r.status is RouteStatus.FAILED_TO_START]
    assert failed and failed[0].detail is not None
    assert failed[0].detail.startswith("failed to start: needs gpu 1, 0 free"), failed[0].detail


async def test_the_dry_run_shows_what_capacity_is_missing(sc_gpu: Scenario) -> None:
    sc = sc_gpu
    await sc.ready("svc", replicas=2, rev=gpu_revision("v1"), policy={"capacity_fallback": "wait"})
    await sc.ops.add_revision("svc", gpu_revision("v2"))
    await sc.ops.activate("svc", 2)
    decision = await sc.ops.plan("svc")
    assert decision.create == () and decision.terminate == ()
    assert decision.reason.endswith("; waiting for capacity: needs gpu 1 per route, free gpu 0"), decision.reason


async def test_capacity_read_shows_totals_holders_and_devices(sc_gpu: Scenario) -> None:
    sc = sc_gpu
    await sc.ready("svc", replicas=1, rev=gpu_revision("v1"))
    [node] = await sc.ops.capacity()
    assert (node.name, node.total, node.held, node.free) == ("sim", {"gpu": 2}, {"gpu": 1}, {"gpu": 1})
    [(route, name)] = node.routes
    assert name == "svc" and route.holds == {"gpu": 1} and route.devices == {"gpu": (0,)}


def test_room_charges_placed_routes_to_their_node_and_the_rest_where_they_fit() -> None:
    from datetime import UTC, datetime

    from rollwise.model import Health, Traffic

    now = datetime(2026, 1, 1, tzinfo=UTC)

    def route(node: str | None, gpus: int) -> RouteRecord:
        return RouteRecord(
            id=f"r{node}{gpus}", deployment_id=1, revision=1, status=RouteStatus.RUNNING, health=Health.HEALTHY,
            traffic=Traffic.ACTIVE, traffic_ratio=1.0, failed=False, address=None, pid=None, identity=None,
            health_failures=0, health_successes=0, created_at=now, status_updated_at=now, drain_until=None,
            detail=None, holds={"gpu": gpus}, node=node,
        )

    room = Room.compute({"a": {"gpu": 2}, "b": {"gpu": 4}}, [route(None, 2), route("a", 1)], {(1, 1): {"gpu": 2}})
    # "a" holds its placed route (1 of 2); the unplaced one needs 2: only "b" has room for it.
    assert room.free == {"a": {"gpu": 1}, "b": {"gpu": 2}}
    view = room.view(room.need_of(1, 1))
    assert (view.placeable, dict(view.need), dict(view.free)) == (1, {"gpu": 2}, {"gpu": 3})
    room.take({"gpu": 2})
    assert room.view({"gpu": 2}).placeable == 0
    assert room.view({}).placeable is None  # a revision that needs nothing is unlimited
    assert room.view({"tpu": 1}).placeable == 0  # no node has it
