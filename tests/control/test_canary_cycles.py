"""A canary through the real control plane (coordinator, cycles, route controller, operations) on the
simulated runtime: steps and weights written with the cycles, the routing table split by revision,
promote, and a rollback started by failed analysis measurements (written as the analysis runner writes
them) that sends every request back to the stable revision in the same cycle."""

from __future__ import annotations

from datetime import timedelta

from rollwise.control.rules.routing import compute_routing
from rollwise.model import Lifecycle, RollbackReason, SubStep
from rollwise.store.commands import NewMeasurement

from .harness import Scenario, is_ready, revision, sub_step_is

STEPS = [{"set_weight": 20}, {"pause": {}}, {"set_weight": 50}, {"pause": {"seconds": 2}}]
ANALYSIS = {"interval_seconds": 1, "failure_limit": 2, "min_requests": 1,
            "metrics": [{"name": "errors", "builtin": "error_rate", "max": 0.05}]}


async def split(sc: Scenario, name: str = "svc") -> dict[int, float]:
    dep = await sc.dep(name)
    routes = await sc.routes(name)
    table = compute_routing([dep], routes, {(dep.id, r.revision): True for r in routes})
    out: dict[int, float] = {}
    for b in table.services[name]:
        out[b.revision] = out.get(b.revision, 0.0) + b.weight
    return {k: v for k, v in out.items() if v > 0}


async def test_a_canary_steps_up_waits_for_promote_and_completes(sc: Scenario) -> None:
    await sc.ready("svc", replicas=4, policy={"strategy": "canary", "steps": STEPS})
    await sc.start_rollout("svc", revision("v2"))
    dep = await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    assert (dep.canary_step, dep.traffic_weights) == (1, {1: 80, 2: 20})
    alive = [r.revision for r in await sc.alive()]
    assert alive.count(1) == 4 and alive.count(2) == 1  # c = max(1, ceil(4 * 20 / 100)); stable keeps D
    assert await split(sc) == {1: 80.0, 2: 20.0}
    await sc.steps(4)
    assert (await sc.dep()).canary_step == 1  # a pause without seconds waits for promote
    await sc.ops.promote("svc")
    dep = await sc.run_until("svc", lambda d: d.canary_step == 3)
    assert dep.traffic_weights == {1: 50, 2: 50}
    assert [r.revision for r in await sc.alive()].count(2) == 2
    dep = await sc.run_until("svc", is_ready)
    assert (dep.current_revision, dep.sub_step, dep.traffic_weights, dep.canary_step) == (2, SubStep.COMPLETED, None, 0)
    assert sorted(r.revision for r in await sc.alive()) == [2, 2, 2, 2]
    assert sc.watch().min_serving >= 4


async def test_promote_full_skips_to_the_final_step(sc: Scenario) -> None:
    await sc.ready("svc", replicas=2, policy={"strategy": "canary", "steps": STEPS})
    await sc.start_rollout("svc", revision("v2"))
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    await sc.ops.promote("svc", full=True)
    dep = await sc.run_until("svc", is_ready)
    assert (dep.current_revision, dep.sub_step) == (2, SubStep.COMPLETED)
    assert not any("set_weight 50" in h.message or "50 %" in h.message for h in await sc.history())


async def test_failed_measurements_roll_the_canary_back_with_every_request_on_stable(sc: Scenario) -> None:
    await sc.ready("svc", replicas=3, policy={"strategy": "canary", "steps": STEPS, "analysis": ANALYSIS})
    await sc.start_rollout("svc", revision("v2"))
    dep = await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    assert dep.rollout_started_at is not None and dep.traffic_weights == {1: 80, 2: 20}
    now = sc.clock.now()
    rows = [NewMeasurement(deployment_id=dep.id, revision=2, rollout_started_at=dep.rollout_started_at,
                           metric="errors", verdict="failed", value="0.2", words="errors = 0.2 > 0.05",
                           window_start=now - timedelta(seconds=1 + i), window_end=now - timedelta(seconds=i), at=now)
            for i in (1, 0)]
    await sc.store.add_measurements(rows[:1])
    await sc.steps(2)
    assert (await sc.dep()).mode.value == "forward"  # one failure of a limit of two: nothing yet
    await sc.store.add_measurements(rows[1:])
    await sc.step()
    dep = await sc.dep()
    # The cycle that starts the rollback sends 100 % to stable and ends it (stable never lost capacity).
    assert dep.lifecycle is Lifecycle.READY and dep.sub_step is SubStep.ROLLED_BACK
    assert dep.rollback_reason is RollbackReason.ANALYSIS and dep.current_revision == 1
    assert dep.traffic_weights is None and set(await split(sc)) == {1}  # no request for r2 from here on
    messages = [h.message for h in await sc.history()]
    assert any("analysis: errors = 0.2 > 0.05" in m for m in messages), messages
    await sc.run_until_sample("svc", lambda s: s.alive_by_revision.get(2, 0) == 0)
    assert sc.watch().min_serving >= 3
