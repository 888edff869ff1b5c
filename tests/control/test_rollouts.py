"""Whole rollouts of every strategy on the simulated runtime, with the limits checked after every round.

Rolling keeps alive <= D + surge and serving >= D - unavailable throughout; blue-green waits for a
promotion (manual or after its delay) with the blue routes serving until then; recreate never runs both
revisions at once.
"""

from __future__ import annotations

import pytest

from rollwise.model import Lifecycle, SubStep
from rollwise.runtime.simulated import SimBehaviour

from .conftest import OpenScenario
from .harness import Scenario, is_ready, revision, sub_step_is


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "surge_n", "unavailable_n"),
    [
        pytest.param(3, 1, 0, 1, 0, id="D3-surge1-unavail0"),
        pytest.param(3, 0, 1, 0, 1, id="D3-surge0-unavail1"),
        pytest.param(4, "50%", "25%", 2, 1, id="D4-surge50%-unavail25%"),
        pytest.param(5, 2, 2, 2, 2, id="D5-surge2-unavail2"),
        pytest.param(2, "25%", "0%", 1, 0, id="D2-default-percentages"),
        pytest.param(3, "10%", "10%", 1, 0, id="D3-percentages-round-to-surge1"),
    ],
)
async def test_rolling_update_stays_within_surge_and_availability(
    open_scenario: OpenScenario,
    replicas: int,
    surge: int | str,
    unavailable: int | str,
    surge_n: int,
    unavailable_n: int,
) -> None:
    # Startup times spread by +-40% so routes turn ready in a different order each case.
    sc = await open_scenario(jitter=0.4, seed=replicas * 10 + surge_n)
    policy = {"strategy": "rolling", "max_surge": surge, "max_unavailable": unavailable}
    await sc.ready(replicas=replicas, policy=policy)
    await sc.start_rollout(rev=revision("v2"))

    dep = await sc.run_until("svc", is_ready)

    assert dep.sub_step is SubStep.COMPLETED
    assert (dep.current_revision, dep.deploying_revision) == (2, None)
    watch = sc.watch()
    assert watch.max_alive <= replicas + surge_n
    assert watch.min_serving >= replicas - unavailable_n
    alive = await sc.alive()
    assert sorted(r.revision for r in alive) == [2] * replicas
    assert all(s.lifecycle is Lifecycle.DEPLOYING for s in watch.samples[:-1])


async def test_blue_green_waits_for_a_manual_promotion(sc: Scenario) -> None:
    await sc.ready(replicas=3, policy={"strategy": "blue_green"})
    await sc.start_rollout(rev=revision("v2"))

    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    await sc.steps(10)  # nothing promotes on its own

    dep = await sc.dep()
    assert (dep.lifecycle, dep.sub_step, dep.current_revision) == (Lifecycle.DEPLOYING, SubStep.AWAITING_PROMOTION, 1)
    waiting = sc.watch().samples[-1]
    assert waiting.alive_by_revision == {1: 3, 2: 3}
    assert waiting.serving_by_revision == {1: 3}, "green routes must not get traffic before the promotion"

    await sc.ops.promote("svc")
    dep = await sc.run_until("svc", is_ready)

    assert (dep.sub_step, dep.current_revision, dep.deploying_revision) == (SubStep.COMPLETED, 2, None)
    assert sorted(r.revision for r in await sc.alive()) == [2, 2, 2]
    assert sc.watch().samples[-1].serving_by_revision == {2: 3}
    assert sc.watch().min_serving >= 3, "blue-green never serves fewer than D routes"
    assert sc.watch().max_alive <= 6


async def test_blue_green_auto_promotion_waits_for_its_delay(sc: Scenario) -> None:
    delay = 5.0
    await sc.ready(replicas=2, policy={"strategy": "blue_green", "auto_promote": True, "promote_delay_seconds": delay})
    await sc.start_rollout(rev=revision("v2"))

    dep = await sc.run_until("svc", is_ready)

    assert (dep.sub_step, dep.current_revision) == (SubStep.COMPLETED, 2)
    samples = sc.watch().samples
    green_ready_at = min(s.t for s in samples if s.alive_by_revision.get(2) == 2 and s.serving_by_revision.get(1) == 2
                         and s.sub_step is SubStep.AWAITING_PROMOTION)
    promoted_at = min(s.t for s in samples if s.serving_by_revision.get(2))
    assert promoted_at - green_ready_at >= delay - 0.5  # awaiting is first seen up to one tick late
    assert promoted_at - green_ready_at <= delay + 1.0
    assert all(s.serving_by_revision.get(1) == 2 for s in samples if s.t < promoted_at)


async def test_recreate_never_runs_both_revisions(sc: Scenario) -> None:
    await sc.ready(replicas=3, policy={"strategy": "recreate"})
    await sc.start_rollout(rev=revision("v2"))

    dep = await sc.run_until("svc", is_ready)

    assert (dep.sub_step, dep.current_revision) == (SubStep.COMPLETED, 2)
    for s in sc.watch().samples:
        assert len(s.alive_by_revision) <= 1, f"both revisions alive at t={s.t}: {s.alive_by_revision}"
        assert s.alive <= 3
    assert sc.watch().samples[-1].serving_by_revision == {2: 3}


async def test_routes_without_health_check_are_ready_when_they_listen(sc: Scenario) -> None:
    await sc.ready(replicas=2, policy={"strategy": "rolling"}, rev=revision("v1", check=False))
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=2.0))
    await sc.start_rollout(rev=revision("v2", check=False))

    dep = await sc.run_until("svc", is_ready)

    assert (dep.sub_step, dep.current_revision) == (SubStep.COMPLETED, 2)
    assert sorted(r.revision for r in await sc.alive()) == [2, 2]
