"""The rollout timeline as the cycles record it (control.rules.timeline, docs/control.md "Rollout
timeline"): whole rollouts on the simulated runtime, read back through `Operations.rollouts` /
`Operations.timeline` (what the API serves)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete

from rollwise.control.cycles import CycleKind, run_cycle
from rollwise.control.rules.timeline import Timeline, compute_percentages, event_kind
from rollwise.model import Lifecycle, SubStep
from rollwise.runtime.simulated import SimBehaviour, SimFailure
from rollwise.store.records import HistoryRecord, RolloutRecord
from rollwise.store.schema import rollouts

from .conftest import OpenScenario
from .harness import Scenario, is_ready, revision, sub_step_is


async def only_timeline(sc: Scenario, name: str = "svc") -> Timeline:
    [rollout] = await sc.ops.rollouts(name)
    return await sc.ops.timeline(name, rollout.id)


def check_samples(t: Timeline) -> None:
    """What holds for every timeline: in time order within the rollout, no two equal in a row (but the
    one at the end, which marks when it ended), weights summing to 100 or empty, both revisions always
    present."""
    times = [s.at for s in t.samples]
    assert times == sorted(times)
    assert t.rollout.started_at <= times[0] and (t.rollout.ended_at is None or times[-1] == t.rollout.ended_at)
    keys = [s.key for s in (t.samples[:-1] if t.rollout.ended_at else t.samples)]
    assert all(a != b for a, b in zip(keys, keys[1:])), keys
    for s in t.samples:
        assert sum(s.weights.values()) in (0, 100), s
        assert {t.rollout.from_revision, t.rollout.to_revision} <= set(s.ready), s
    assert t.rollout.sample_count == len(t.samples)


async def test_a_rolling_update_records_ready_routes_moving_from_old_to_new(open_scenario: OpenScenario) -> None:
    sc = await open_scenario(jitter=0.4, seed=3)
    await sc.ready(replicas=4, policy={"strategy": "rolling", "max_surge": 1, "max_unavailable": 0})
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", is_ready)

    t = await only_timeline(sc)
    r = t.rollout
    assert (r.from_revision, r.to_revision, r.strategy, r.outcome) == (1, 2, "rolling", "completed")
    assert r.ended_at is not None and r.ended_at > r.started_at
    check_samples(t)
    first, last = t.samples[0], t.samples[-1]
    assert (dict(first.ready), dict(first.weights)) == ({1: 4, 2: 0}, {1: 100, 2: 0})
    assert (dict(last.ready), dict(last.weights)) == ({1: 0, 2: 4}, {1: 0, 2: 100})
    assert last.at == r.ended_at
    old = [s.ready[1] for s in t.samples]
    new = [s.ready[2] for s in t.samples]
    assert old == sorted(old, reverse=True) and new == sorted(new), (old, new)
    assert len(t.samples) >= 8  # every wave: a new route ready, an old one gone
    # max_unavailable 0: at least 4 ready routes serve at every sample but the end's swap.
    assert all(sum(s.ready.values()) >= 4 for s in t.samples)
    # The traffic follows the ready routes (each route weighs the same).
    mixed = next(s for s in t.samples if s.ready[1] == 3 and s.ready[2] == 1)
    assert dict(mixed.weights) == {1: 75, 2: 25}

    kinds = [e.kind for e in t.events]
    assert kinds[0] == "started" and kinds[-1] == "completed", kinds
    assert set(kinds[1:-1]) == {"wave"}, kinds
    assert t.events[0].message == "rolling: rollout of revision 2 started (revision 1 serving)"
    assert t.events[0].at == r.started_at and t.events[-1].at == r.ended_at
    # The history before the rollout (scaling) is not part of it.
    assert len(await sc.history()) > len(t.events)


async def test_a_rolled_back_rollout_says_so_and_ends_on_the_old_revision(open_scenario: OpenScenario) -> None:
    sc = await open_scenario(behaviours={2: SimBehaviour(startup_seconds=1.0, failure=SimFailure.START)})
    await sc.ready(replicas=3, policy={"strategy": "rolling", "failure_threshold": 2})
    await sc.start_rollout(rev=revision("broken"))
    dep = await sc.run_until("svc", is_ready)
    assert dep.sub_step is SubStep.ROLLED_BACK

    t = await only_timeline(sc)
    assert t.rollout.outcome == "rolled_back"
    check_samples(t)
    assert (dict(t.samples[-1].ready), dict(t.samples[-1].weights)) == ({1: 3, 2: 0}, {1: 100, 2: 0})
    assert t.events[-1].kind == "rollback"
    assert "failure_threshold" in t.events[-1].message


async def test_an_operator_abort_ends_the_rollout_aborted(sc: Scenario) -> None:
    await sc.ready(replicas=3, policy={"strategy": "blue_green"})
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    await sc.ops.abort("svc")
    await sc.run_until("svc", is_ready)

    t = await only_timeline(sc)
    assert t.rollout.outcome == "aborted"
    check_samples(t)
    kinds = [e.kind for e in t.events]
    assert kinds[0] == "started" and "aborted" in kinds and kinds[-1] == "rollback", kinds
    # Blue-green: the green routes were ready without traffic, then went.
    assert any(s.ready[2] == 3 and s.weights[2] == 0 for s in t.samples)
    assert dict(t.samples[-1].ready) == {1: 3, 2: 0}


async def test_green_routes_turning_ready_are_recorded_though_no_decision_changes(open_scenario: OpenScenario) -> None:
    sc = await open_scenario(behaviours={2: SimBehaviour(startup_seconds=2.0)}, jitter=0.45, seed=5)
    await sc.ready(replicas=3, policy={"strategy": "blue_green"})
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))

    t = await only_timeline(sc)
    assert t.rollout.outcome == "in_progress" and t.rollout.ended_at is None
    check_samples(t)
    green = [s.ready[2] for s in t.samples]
    assert green[0] == 0 and green[-1] == 3
    assert len(set(green)) >= 3, green  # routes that turned ready apart were recorded apart
    assert all(s.weights == {1: 100, 2: 0} for s in t.samples)
    # Some came alone: a green route turned ready, no decision changed anything, no history row.
    assert any(s.at not in {e.at for e in t.events} for s in t.samples), (t.samples, t.events)


async def test_a_superseded_rollout_ends_aborted_and_the_new_one_starts(sc: Scenario) -> None:
    await sc.ready(replicas=2, policy={"strategy": "blue_green"})
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    await sc.start_rollout(rev=revision("v3"), supersede=True)
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    await sc.ops.promote("svc")
    await sc.run_until("svc", is_ready)

    first, second = await sc.ops.rollouts("svc")
    assert (first.to_revision, first.outcome) == (2, "aborted")
    assert (second.from_revision, second.to_revision, second.outcome) == (1, 3, "completed")
    assert first.ended_at == second.started_at
    old = await sc.ops.timeline("svc", first.id)
    assert old.events[-1].kind == "aborted" and "superseding revision 2" in old.events[-1].message
    new = await sc.ops.timeline("svc", second.id)
    check_samples(new)
    assert [e.kind for e in new.events][0] == "started" and new.events[-1].kind == "completed"
    assert dict(new.samples[-1].ready) == {1: 0, 3: 2}


async def test_destroying_a_deploying_deployment_aborts_its_rollout(sc: Scenario) -> None:
    await sc.ready(replicas=2, policy={"strategy": "rolling"})
    await sc.start_rollout(rev=revision("v2"))
    await sc.step()
    await sc.ops.destroy("svc")
    dep = await sc.store.get_deployment("svc")
    assert dep is not None
    [rollout] = await sc.store.list_rollouts(dep.id)
    assert rollout.outcome == "aborted" and rollout.ended_at is not None


async def test_a_canary_records_its_weights_step_by_step(sc: Scenario) -> None:
    policy = {"strategy": "canary", "steps": [{"set_weight": 20}, {"pause": {"seconds": 1}}, {"set_weight": 50}]}
    await sc.ready(replicas=3, policy=policy)
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", is_ready)

    t = await only_timeline(sc)
    check_samples(t)
    assert t.rollout.strategy == "canary"
    shares = [s.weights.get(2, 0) for s in t.samples]
    assert [w for i, w in enumerate(shares) if i == 0 or w != shares[i - 1]] == [0, 20, 50, 100], shares
    kinds = [e.kind for e in t.events]
    assert "step" in kinds and "paused" in kinds and kinds[-1] == "completed", kinds


async def test_a_rollout_without_its_row_gets_one_from_the_next_cycle(sc: Scenario) -> None:
    """A rollout started before the table existed (migration 0006 ran mid-rollout)."""
    await sc.ready(replicas=2, policy={"strategy": "rolling"})
    await sc.start_rollout(rev=revision("v2"))
    dep = await sc.dep()
    async with sc.store.engine.begin() as conn:
        await conn.execute(delete(rollouts))
    await sc.run_until("svc", is_ready)

    [rollout] = await sc.ops.rollouts("svc")
    assert (rollout.started_at, rollout.outcome, rollout.to_revision) == (dep.rollout_started_at, "completed", 2)
    t = await sc.ops.timeline("svc", rollout.id)
    check_samples(t)
    assert dict(t.samples[-1].ready) == {1: 0, 2: 2}


async def test_an_unknown_rollout_is_not_found(sc: Scenario) -> None:
    await sc.ready(replicas=1, policy={"strategy": "rolling"})
    await sc.ready("other", replicas=1, policy={"strategy": "rolling"})
    await sc.start_rollout("other", rev=revision("v2"))
    [theirs] = await sc.ops.rollouts("other")
    assert await sc.ops.rollouts("svc") == []
    try:
        await sc.ops.timeline("svc", theirs.id)
    except Exception as e:  # noqa: BLE001 - checked below
        assert (getattr(e, "code", None), str(e)) == ("not_found", f"deployment 'svc' has no rollout {theirs.id}")
    else:
        raise AssertionError("a rollout of another deployment was found")


def test_percentages_sum_to_100() -> None:
    assert compute_percentages({1: 2.0, 2: 1.0}) == {1: 67, 2: 33}
    assert compute_percentages({1: 1.0, 2: 1.0, 3: 1.0}) == {1: 34, 2: 33, 3: 33}
    assert compute_percentages({1: 0.8, 2: 0.2}) == {1: 80, 2: 20}
    assert compute_percentages({1: 0.0}) == {}
    assert compute_percentages({}) == {}


def test_event_kinds_of_history_rows() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rollout = RolloutRecord(id=1, deployment_id=1, from_revision=1, to_revision=2, strategy="rolling",
                            started_at=t0, ended_at=None, outcome="in_progress", sample_count=0)

    def kind(result: str, message: str, *, to: int = 2, at: datetime = t0, done: bool = False) -> str:
        h = HistoryRecord(id=1, deployment_id=1, created_at=at, updated_at=at, lifecycle_from=Lifecycle.DEPLOYING,
                          lifecycle_to=Lifecycle.READY if done else Lifecycle.DEPLOYING, sub_step=None,
                          result=result, message=message, strategy="rolling", from_revision=1, to_revision=to,
                          attempts=1, error=None)
        return event_kind(rollout, h)

    later = t0.replace(second=5)
    assert kind("operator", "rolling: rollout of revision 2 started (revision 1 serving)") == "started"
    assert kind("operator", "rolling: rollout of revision 3 started, superseding revision 2", to=3, at=later) == "aborted"
    assert kind("operator", "rolling: abort requested by an operator") == "aborted"
    assert kind("operator", "rolling: paused by an operator") == "paused"
    assert kind("operator", "blue-green: promotion requested by an operator") == "promoted"
    assert kind("operator", "rolling: resumed by an operator") == "step"
    assert kind("progress", "rolling: created 1, terminating 0") == "wave"
    assert kind("waiting", "blue-green: awaiting promotion") == "paused"
    assert kind("failure", "rolling back (progress_deadline)") == "rollback"
    assert kind("error", "rolling: evaluation failed") == "error"
    assert kind("success", "rolling: completed; revision 2 is serving", done=True) == "completed"


async def test_a_sample_alone_is_written_but_is_no_progress(sc: Scenario) -> None:
    await sc.ready(replicas=3, policy={"strategy": "blue_green"})
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    dep = await sc.dep()
    [rollout] = await sc.store.list_rollouts(dep.id)
    blue = next(r for r in await sc.alive() if r.revision == 1)
    sc.runtime.crash(blue.id)  # a blue route dies while the rollout waits: nothing for it to decide
    await sc.coord.routes.reconcile()

    report = await run_cycle(sc.store, CycleKind.DEPLOYING, sc.clock.now())

    assert report.applied == 0 and not report.changed
    assert (await sc.dep()).version == dep.version  # a pure guard: the deployment row is untouched
    [after] = await sc.store.list_rollouts(dep.id)
    assert after.sample_count == rollout.sample_count + 1
    t = await sc.ops.timeline("svc", rollout.id)
    assert dict(t.samples[-1].ready) == {1: 2, 2: 3} and dict(t.samples[-1].weights) == {1: 100, 2: 0}
    assert t.samples[-1].at not in {e.at for e in t.events}
