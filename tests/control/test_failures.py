"""Rollouts that do not go to plan: a new revision that never starts or turns unhealthy, an operator
abort, pause and resume, the progress deadline (rollback or pause), a superseding activation, and undo.
Every one ends with the deployment READY on a revision that serves D routes, and says why in history.
"""

from __future__ import annotations

import pytest

from rollwise.control.errors import NotApplicable, RolloutInProgress
from rollwise.model import Lifecycle, Mode, RollbackReason, SubStep
from rollwise.runtime.simulated import SimBehaviour, SimFailure

from .harness import Scenario, is_ready, revision, sub_step_is

STRATEGIES = ["rolling", "blue_green", "recreate"]


async def assert_back_on_v1(sc: Scenario, reason: RollbackReason, replicas: int = 3) -> None:
    dep = await sc.dep()
    assert (dep.lifecycle, dep.sub_step, dep.current_revision, dep.deploying_revision) == (
        Lifecycle.READY, SubStep.ROLLED_BACK, 1, None
    )
    assert dep.rollback_reason is reason
    assert (dep.mode, dep.paused, dep.abort_requested) == (Mode.FORWARD, False, False)
    await sc.run_until_sample("svc", lambda s: s.serving_by_revision == {1: replicas} and s.alive == replicas)
    end = [h for h in await sc.history() if h.from_revision == 2 and h.lifecycle_to is Lifecycle.READY]
    assert len(end) == 1 and end[0].result == "failure" and reason.value in end[0].message


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_revision_that_never_starts_is_rolled_back(sc: Scenario, strategy: str) -> None:
    await sc.ready(policy={"strategy": strategy})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=1.0, failure=SimFailure.START))
    await sc.start_rollout(rev=revision("v2"))

    await sc.run_until("svc", is_ready)

    await assert_back_on_v1(sc, RollbackReason.FAILURE_THRESHOLD)
    if strategy != "recreate":
        assert sc.watch().min_serving >= 3, "the serving revision kept serving"


@pytest.mark.parametrize(
    ("strategy", "min_serving"),
    [
        # Rolling replaced an old route once a new one was ready; the new one then failed: one short.
        ("rolling", 2),
        ("blue_green", 3),  # green never got traffic
    ],
)
async def test_a_revision_that_turns_unhealthy_is_rolled_back(sc: Scenario, strategy: str, min_serving: int) -> None:
    # Healthy for a second, then failing probes: each such route is stopped as failed.
    await sc.ready(policy={"strategy": strategy, "failure_threshold": 2})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=1.0, failure=SimFailure.UNHEALTHY, unhealthy_after=1.0))
    await sc.start_rollout(rev=revision("v2"))

    await sc.run_until("svc", is_ready)

    await assert_back_on_v1(sc, RollbackReason.FAILURE_THRESHOLD)
    assert sc.watch().min_serving >= min_serving
    assert sc.watch().max_alive <= 6


async def test_a_revision_that_never_turns_healthy_is_rolled_back(sc: Scenario) -> None:
    # Listens but every probe fails: the routes fail at their startup timeout.
    await sc.ready(policy={"strategy": "recreate"})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=1.0, failure=SimFailure.UNHEALTHY, unhealthy_after=0.0))
    await sc.start_rollout(rev=revision("v2", startup_timeout_seconds=4))

    await sc.run_until("svc", is_ready)

    await assert_back_on_v1(sc, RollbackReason.FAILURE_THRESHOLD)


async def test_abort_mid_rollout_rolls_back_with_the_old_revision_serving(sc: Scenario) -> None:
    await sc.ready(policy={"strategy": "rolling", "max_surge": 1, "max_unavailable": 0})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=3.0))
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until_sample("svc", lambda s: s.serving_by_revision.get(2, 0) >= 1)

    await sc.ops.abort("svc")
    await sc.run_until("svc", is_ready)

    await assert_back_on_v1(sc, RollbackReason.ABORTED)
    assert sc.watch().min_serving >= 3
    with pytest.raises(NotApplicable):
        await sc.ops.abort("svc")


async def test_pause_stops_route_changes_until_resume(sc: Scenario) -> None:
    await sc.ready(policy={"strategy": "rolling", "max_surge": 1})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=2.0))
    await sc.start_rollout(rev=revision("v2"))
    await sc.step()
    await sc.ops.pause("svc")
    await sc.step()  # the pause is seen; routes set terminating before it may still drain
    frozen = sc.watch().samples[-1]

    await sc.steps(20)

    dep = await sc.dep()
    assert (dep.lifecycle, dep.sub_step, dep.paused) == (Lifecycle.DEPLOYING, SubStep.PAUSED, True)
    paused = sc.watch().samples[-21:]
    assert {s.route_ids - frozen.terminating for s in paused} == {frozen.route_ids - frozen.terminating}
    assert all(not (s.terminating - frozen.terminating) for s in paused), "nothing terminated while paused"
    assert paused[-1].alive_by_revision == frozen.alive_by_revision
    with pytest.raises(NotApplicable):
        await sc.ops.pause("svc")

    await sc.ops.resume("svc")
    dep = await sc.run_until("svc", is_ready)

    assert (dep.sub_step, dep.current_revision) == (SubStep.COMPLETED, 2)
    messages = [h.message for h in await sc.history()]
    assert "rolling: paused by an operator" in messages and "rolling: resumed by an operator" in messages
    with pytest.raises(NotApplicable):
        await sc.ops.resume("svc")


async def test_abort_while_paused_rolls_back(sc: Scenario) -> None:
    await sc.ready(policy={"strategy": "blue_green"})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=2.0))
    await sc.start_rollout(rev=revision("v2"))
    await sc.step()
    await sc.ops.pause("svc")
    await sc.steps(2)

    await sc.ops.abort("svc")
    await sc.run_until("svc", is_ready)

    await assert_back_on_v1(sc, RollbackReason.ABORTED)
    assert sc.watch().min_serving >= 3


async def test_progress_deadline_rolls_back(sc: Scenario) -> None:
    await sc.ready(policy={"strategy": "rolling", "progress_deadline_seconds": 5})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=25.0))  # listens within its 30 s, too late
    await sc.start_rollout(rev=revision("v2"))
    started = sc.clock.now()

    await sc.run_until("svc", is_ready)

    await assert_back_on_v1(sc, RollbackReason.PROGRESS_DEADLINE)
    rollback_start = next(h for h in await sc.history() if "progress_deadline" in h.message)
    waited = (rollback_start.created_at - started).total_seconds()
    assert 5 < waited <= 6.5


async def test_progress_deadline_can_pause_instead(sc: Scenario) -> None:
    await sc.ready(policy={"strategy": "blue_green", "progress_deadline_seconds": 4, "on_deadline": "pause"})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=25.0))
    await sc.start_rollout(rev=revision("v2"))

    await sc.run_until("svc", lambda d: d.paused)
    await sc.steps(10)
    assert len({s.route_ids for s in sc.watch().samples[-10:]}) == 1, "no route changes while paused"

    dep = await sc.dep()
    assert (dep.lifecycle, dep.sub_step, dep.paused, dep.mode) == (
        Lifecycle.DEPLOYING, SubStep.PAUSED, True, Mode.FORWARD
    )
    assert any("no progress for" in h.message and h.sub_step is SubStep.PAUSED for h in await sc.history())
    assert sc.watch().samples[-1].serving_by_revision == {1: 3}

    # Resuming restarts the clock of the deadline; the routes have had time to start meanwhile.
    sc.clock.advance(20)
    await sc.ops.resume("svc")
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION), max_rounds=40)


async def test_supersede_replaces_a_running_rollout(sc: Scenario) -> None:
    await sc.ready(policy={"strategy": "rolling", "max_surge": 1})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=2.0))
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until_sample("svc", lambda s: s.serving_by_revision.get(2, 0) >= 1)
    v3 = await sc.ops.add_revision("svc", revision("v3"))

    with pytest.raises(RolloutInProgress):
        await sc.ops.activate("svc", v3.number)
    assert (await sc.dep()).deploying_revision == 2
    await sc.ops.activate("svc", v3.number, supersede=True)
    dep = await sc.run_until("svc", is_ready)

    assert (dep.sub_step, dep.current_revision, dep.deploying_revision) == (SubStep.COMPLETED, 3, None)
    assert sorted(r.revision for r in await sc.alive()) == [3, 3, 3]
    assert sc.watch().min_serving >= 3
    assert any("superseding revision 2" in h.message for h in await sc.history())


async def test_activating_the_serving_revision_mid_rollout_aborts_it(sc: Scenario) -> None:
    await sc.ready(replicas=2, policy={"strategy": "rolling"})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=3.0))
    await sc.start_rollout(rev=revision("v2"))
    await sc.step()

    await sc.ops.activate("svc", 1, supersede=True)
    await sc.run_until("svc", is_ready)

    await assert_back_on_v1(sc, RollbackReason.ABORTED, replicas=2)


async def test_undo_goes_back_to_the_previous_revision(sc: Scenario) -> None:
    await sc.ready(policy={"strategy": "rolling"})
    with pytest.raises(NotApplicable):
        await sc.ops.undo("svc")
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", is_ready)
    assert (await sc.dep()).current_revision == 2

    await sc.ops.undo("svc")
    dep = await sc.dep()
    assert (dep.lifecycle, dep.deploying_revision) == (Lifecycle.DEPLOYING, 1)
    with pytest.raises(RolloutInProgress):
        await sc.ops.undo("svc")
    dep = await sc.run_until("svc", is_ready)

    assert (dep.sub_step, dep.current_revision) == (SubStep.COMPLETED, 1)
    assert sorted(r.revision for r in await sc.alive()) == [1, 1, 1]


async def test_a_policy_changed_mid_rollout_applies_from_the_next_cycle(sc: Scenario) -> None:
    await sc.ready(policy={"strategy": "rolling", "max_surge": 1})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=2.0))
    await sc.start_rollout(rev=revision("v2"))
    await sc.step()

    await sc.ops.patch("svc", policy={"strategy": "blue_green", "auto_promote": True})
    dep = await sc.run_until("svc", is_ready)

    assert (dep.sub_step, dep.current_revision) == (SubStep.COMPLETED, 2)
    end = (await sc.history())[-1]
    assert end.strategy == "blue_green" and end.message.startswith("blue-green: ")
    assert sorted(r.revision for r in await sc.alive()) == [2, 2, 2]
