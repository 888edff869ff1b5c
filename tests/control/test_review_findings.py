"""The weaknesses found in review of the reference design (BEP-1049 PR review, findings 1-8), each as a
scenario that fails if rollwise had that weakness.

1. swap + lifecycle + history in separate transactions    -> test_completion_is_one_transaction_*
2. a hard-coded "Rolling update" history message          -> test_history_names_the_strategy_*
3. evaluation errors dropped, retried forever            -> test_evaluation_errors_*
4. post-processing assumes every deployment was applied   -> test_deployment_skipped_by_the_guard_*
5. deployments without a usable policy stuck forever      -> test_*_never_stays_deploying
6. (rollwise) history only on lifecycle changes           -> test_sub_step_changes_leave_history
8. a second completion sets current_revision to NULL      -> test_completion_applied_twice_*
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, update

from rollwise.control.coordinator import Intervals
from rollwise.control.cycles import CycleKind, run_cycle
from rollwise.control.rules.transitions import MAX_EVALUATION_ERRORS
from rollwise.control.operations import Operations
from rollwise.model import Lifecycle, Mode, RollbackReason, RouteStatus, SubStep
from rollwise.runtime.simulated import SimBehaviour, SimFailure
from rollwise.store import ChangeSet, DeploymentChange, DeploymentUpdate, NewHistory, StoreError
from rollwise.store.errors import IntegrityFailed
from rollwise.store.schema import deployments, policies

from .conftest import OpenScenario
from .harness import Scenario, is_ready, revision, sub_step_is

# ------------------------------------------------------------------------------------------ helpers


@contextmanager
def failing_statement(sc: Scenario, prefix: str) -> Iterator[list[str]]:
    """Make the first SQL statement starting with `prefix` fail like a dying disk would; yields the
    statements executed until then."""
    seen: list[str] = []
    fired = False

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        nonlocal fired
        seen.append(statement.strip())
        if not fired and statement.lstrip().upper().startswith(prefix.upper()):
            fired = True
            raise sqlite3.OperationalError("disk I/O error (injected by the test)")

    engine = sc.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert fired, f"no statement starting with {prefix!r} ran"


async def awaiting_promotion(sc: Scenario, replicas: int = 2) -> None:
    """A blue-green rollout to revision 2 whose promotion was just requested: the next deploying cycle
    completes it (promotes green, terminates blue, swaps revisions, READY, one history row)."""
    await sc.ready(replicas=replicas, policy={"strategy": "blue_green"})
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    await sc.ops.promote("svc")


async def corrupt_policy(sc: Scenario, name: str) -> None:
    """Store a policy document that no longer validates (as an old or hand-edited row would)."""
    dep = await sc.dep(name)
    async with sc.store.engine.begin() as conn:
        await conn.execute(
            update(policies).where(policies.c.deployment_id == dep.id).values(document={"strategy": "canary"})
        )
    corrupted = await sc.dep(name)
    assert corrupted.policy is None and corrupted.policy_error


async def rounds_until_ready(sc: Scenario, name: str, limit: int) -> int:
    """Coordinator rounds until the deployment is READY; fails past `limit` rounds."""
    for rounds in range(1, limit + 1):
        await sc.step()
        if (await sc.dep(name)).lifecycle is Lifecycle.READY:
            return rounds
    raise AssertionError(f"{name} still {(await sc.dep(name)).lifecycle} after {limit} rounds")


# --------------------------------------------------------------- 1. one transaction for the completion


@pytest.mark.parametrize("failing", ["UPDATE routes", "INSERT INTO history"])
async def test_completion_is_one_transaction_when_its_write_fails_midway(sc: Scenario, failing: str) -> None:
    await awaiting_promotion(sc)
    dep_before, routes_before, history_before = await sc.dep(), await sc.routes(), await sc.history()

    with failing_statement(sc, failing) as executed, pytest.raises(StoreError):
        await run_cycle(sc.store, CycleKind.DEPLOYING, sc.clock.now())

    assert any(s.upper().startswith("UPDATE DEPLOYMENTS") for s in executed), "the swap ran before the failure"
    assert await sc.dep() == dep_before  # still DEPLOYING, deploying_revision 2, same version
    assert (dep_before.lifecycle, dep_before.deploying_revision) == (Lifecycle.DEPLOYING, 2)
    assert await sc.routes() == routes_before
    assert await sc.history() == history_before

    report = await run_cycle(sc.store, CycleKind.DEPLOYING, sc.clock.now())

    dep = await sc.dep()
    assert report.applied == 1 and report.rollouts_ended == [("blue_green", "completed")]
    assert (dep.lifecycle, dep.sub_step, dep.current_revision, dep.deploying_revision) == (
        Lifecycle.READY, SubStep.COMPLETED, 2, None
    )
    last = (await sc.history())[-1]
    assert (last.lifecycle_from, last.lifecycle_to, last.result) == (Lifecycle.DEPLOYING, Lifecycle.READY, "success")
    assert {r.revision for r in await sc.alive()} == {2}


async def test_completion_is_one_transaction_when_a_constraint_fails(sc: Scenario) -> None:
    """Same, with a real database refusal: the ChangeSet carries a history row whose deployment does not
    exist, so the history INSERT (the last statement) violates its foreign key."""
    await awaiting_promotion(sc)
    dep_before, routes_before, history_before = await sc.dep(), await sc.routes(), await sc.history()

    async def add_orphan_history(changes: ChangeSet) -> ChangeSet:
        assert any(u.swap_expected == 2 for u in changes.deployments), "this is the completing write"
        orphan = NewHistory(deployment_id=987654, lifecycle_from=Lifecycle.READY, lifecycle_to=Lifecycle.READY,
                            result="progress", message="orphan", at=sc.clock.now())
        return ChangeSet(deployments=changes.deployments, new_routes=changes.new_routes,
                         route_updates=changes.route_updates, history=[*changes.history, orphan])

    sc.store.before_next_apply = add_orphan_history
    with pytest.raises(IntegrityFailed):
        await sc.coord.run_once(force=True)

    assert (await sc.dep(), await sc.routes(), await sc.history()) == (dep_before, routes_before, history_before)

    await sc.step()
    dep = await sc.dep()
    assert (dep.lifecycle, dep.current_revision, dep.deploying_revision) == (Lifecycle.READY, 2, None)


# --------------------------------------------------------------------- 2. history names the strategy


@pytest.mark.parametrize(
    ("strategy", "words"),
    [("rolling", "rolling"), ("blue_green", "blue-green"), ("recreate", "recreate")],
)
async def test_history_names_the_strategy_that_ran(sc: Scenario, strategy: str, words: str) -> None:
    await sc.ready(replicas=2, policy={"strategy": strategy, "auto_promote": True})
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", is_ready)

    rollout = [h for h in await sc.history() if h.to_revision == 2]
    completion = [h for h in rollout if h.lifecycle_to is Lifecycle.READY]
    assert len(completion) == 1
    assert completion[0].result == "success" and completion[0].sub_step is SubStep.COMPLETED
    assert completion[0].message.startswith(f"{words}: "), completion[0].message
    assert completion[0].strategy == strategy
    for h in rollout:
        assert words in h.message, h.message
        if strategy != "rolling":
            assert "rolling" not in h.message, h.message


async def test_history_of_a_rolled_back_blue_green_rollout_names_blue_green(sc: Scenario) -> None:
    await sc.ready(replicas=2, policy={"strategy": "blue_green"})
    sc.runtime.set_behaviour(2, SimBehaviour(startup_seconds=1, failure=SimFailure.START))
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until("svc", is_ready)

    end = (await sc.history())[-1]
    assert (end.result, end.sub_step, end.strategy) == ("failure", SubStep.ROLLED_BACK, "blue_green")
    assert "blue-green: rolled back to r1" in end.message
    assert "rolling:" not in end.message


# ------------------------------------------------------------- 3. bounded evaluation errors, rollback


async def test_evaluation_errors_are_per_deployment_bounded_and_end_in_a_rollback(sc: Scenario) -> None:
    for name in "abc":
        await sc.create(name, replicas=3, policy={"strategy": "rolling", "max_surge": 1})
    for name in "abc":
        await sc.run_until(name, is_ready)
    for name in "abc":
        await sc.start_rollout(name, rev=revision("v2"))
    await corrupt_policy(sc, "b")
    b = await sc.dep("b")

    reports = []
    for _ in range(MAX_EVALUATION_ERRORS):  # deploying cycles exactly, with route passes between them
        reports.append(await run_cycle(sc.store, CycleKind.DEPLOYING, sc.clock.now()))
        sc.clock.advance(1.0)
        await sc.coord.routes.reconcile()

    assert [r.errors.keys() for r in reports] == [{b.id}] * MAX_EVALUATION_ERRORS
    assert "stored policy no longer validates" in reports[0].errors[b.id] and "canary" in reports[0].errors[b.id]
    # The others went on in the very cycles where b failed.
    assert reports[0].created_routes == 2
    assert sum(r.terminated_routes for r in reports) >= 2
    for n in "ac":
        assert [r.revision for r in await sc.alive(n)].count(2) >= 1
    assert [r.revision for r in await sc.alive("b")] == [1, 1, 1]
    # Two failures are one merged history row; the third starts a rollback that says why.
    rows = [h for h in await sc.history("b") if h.result in ("error", "failure")]
    assert [(h.result, h.attempts) for h in rows] == [("error", MAX_EVALUATION_ERRORS - 1), ("failure", 1)]
    assert "canary" in (rows[0].error or "")
    assert f"{MAX_EVALUATION_ERRORS} times in a row, rolling back" in rows[1].message
    b = await sc.dep("b")
    assert (b.lifecycle, b.mode, b.rollback_reason) == (
        Lifecycle.DEPLOYING, Mode.ROLLING_BACK, RollbackReason.EVALUATION_ERROR
    )

    b = await sc.run_until("b", is_ready, max_rounds=10)
    assert (b.sub_step, b.current_revision, b.deploying_revision, b.error_count) == (SubStep.ROLLED_BACK, 1, None, 0)
    assert sorted(r.revision for r in await sc.alive("b")) == [1, 1, 1]
    for n in "ac":
        dep = await sc.run_until(n, is_ready)
        assert (dep.sub_step, dep.current_revision) == (SubStep.COMPLETED, 2)


async def test_evaluation_errors_mid_rollout_roll_back_the_new_routes(sc: Scenario) -> None:
    await sc.ready(replicas=3, policy={"strategy": "rolling", "max_surge": 1, "max_unavailable": 1})
    await sc.start_rollout(rev=revision("v2"))
    await sc.run_until_sample("svc", lambda s: s.alive_by_revision.get(2, 0) >= 1 and s.alive_by_revision[1] < 3)
    await corrupt_policy(sc, "svc")

    dep = await sc.run_until("svc", is_ready, max_rounds=20)

    assert (dep.sub_step, dep.current_revision, dep.rollback_reason) == (
        SubStep.ROLLED_BACK, 1, RollbackReason.EVALUATION_ERROR
    )
    assert sorted(r.revision for r in await sc.alive()) == [1, 1, 1]
    assert sc.watch().min_serving >= 2, "the rollback keeps the rolling limits (unavailable 1)"


async def test_a_failed_evaluation_is_retried_next_round_not_at_once(sc: Scenario) -> None:
    """The coordinator re-runs a cycle within a round when it changed something; an evaluation error
    must not count as such a change, or the three failures in a row would happen in one instant."""
    await sc.ready(replicas=2, policy={"strategy": "rolling"})
    await sc.start_rollout(rev=revision("v2"))
    await corrupt_policy(sc, "svc")

    seen = []
    for _ in range(MAX_EVALUATION_ERRORS):
        step = await sc.step()
        dep = await sc.dep()
        failures = sum(1 for c in step.cycles if c.errors)
        seen.append((failures, dep.mode, dep.error_count))

    assert seen == [(1, Mode.FORWARD, 1), (1, Mode.FORWARD, 2), (1, Mode.ROLLING_BACK, 1)]


# ---------------------------------------------------------------------- 4. skipped by the guard


async def test_deployment_skipped_by_the_guard_is_reported_and_evaluated_again(open_scenario: OpenScenario) -> None:
    # No health checks (route passes change nothing once routes run) and a long interval: a cycle runs
    # only when something marks it needed.
    sc = await open_scenario(intervals=Intervals(long=1e6))
    await sc.ready(replicas=2, policy={"strategy": "rolling", "max_surge": 1}, rev=revision("v1", check=False))
    await sc.start_rollout(rev=revision("v2", check=False))
    dep = await sc.dep()
    other_server = Operations(sc.store, sc.clock)  # an operator on another server: marks nothing here

    async def operator_pauses(changes: ChangeSet) -> ChangeSet:
        await other_server.pause("svc")
        return changes

    sc.store.before_next_apply = operator_pauses
    step = await sc.coord.run_once(force=True)

    deploying = next(c for c in step.cycles if c.kind is CycleKind.DEPLOYING)
    assert deploying.skipped == {dep.id}
    assert (deploying.applied, deploying.created_routes, deploying.changed) == (0, 0, False)
    assert [r.revision for r in await sc.alive()] == [1, 1], "nothing of the skipped decision was written"

    step = await sc.coord.run_once()  # not forced: runs what is marked needed
    kinds = [c.kind for c in step.cycles]
    assert CycleKind.DEPLOYING in kinds, "a skipped deployment marks its cycle needed again"
    deploying = next(c for c in step.cycles if c.kind is CycleKind.DEPLOYING)
    assert (deploying.skipped, deploying.applied) == (set(), 1)
    dep = await sc.dep()
    assert (dep.sub_step, dep.paused) == (SubStep.PAUSED, True)
    assert [r.revision for r in await sc.alive()] == [1, 1]

    step = await sc.coord.run_once()
    assert CycleKind.DEPLOYING not in [c.kind for c in step.cycles], "and only then"


async def test_cycle_report_counts_what_the_cycle_wrote(sc: Scenario) -> None:
    """Observers (metrics, the coordinator's next steps) read the report: it must match the database."""
    await awaiting_promotion(sc, replicas=2)
    dep = await sc.dep()
    before = {r.id: r for r in await sc.routes()}

    report = await run_cycle(sc.store, CycleKind.DEPLOYING, sc.clock.now())

    after = {r.id: r for r in await sc.routes()}
    terminated = [i for i, r in after.items() if r.status is RouteStatus.TERMINATING and before[i].status.is_alive]
    activated = [i for i, r in after.items() if r.traffic is not before[i].traffic and r.status.is_alive]
    assert (len(terminated), len(activated)) == (2, 2)  # blue terminated, green activated
    assert (report.created_routes, report.terminated_routes) == (0, len(terminated))
    assert report.lifecycle_changes == {dep.id: Lifecycle.READY}
    assert report.rollouts_ended == [("blue_green", "completed")]


async def test_a_rollout_ended_without_a_usable_policy_is_still_reported(sc: Scenario) -> None:
    await sc.ready(replicas=1, policy={"strategy": "recreate"})
    await sc.start_rollout()
    await corrupt_policy(sc, "svc")

    ended = []
    for _ in range(MAX_EVALUATION_ERRORS + 2):
        step = await sc.step()
        ended += [e for c in step.cycles for e in c.rollouts_ended]

    assert (await sc.dep()).lifecycle is Lifecycle.READY
    assert ended == [("unknown", "rolled_back")]


# ------------------------------------------------------------- 5. never DEPLOYING forever


async def test_a_deployment_whose_policy_cannot_be_evaluated_never_stays_deploying(sc: Scenario) -> None:
    await sc.ready(replicas=2, policy={"strategy": "blue_green"})
    await sc.start_rollout(rev=revision("v2"))
    await sc.step()
    await corrupt_policy(sc, "svc")

    rounds = await rounds_until_ready(sc, "svc", limit=MAX_EVALUATION_ERRORS + 3)

    dep = await sc.dep()
    assert rounds == MAX_EVALUATION_ERRORS + 1  # three failures, then the rollback in one round
    assert (dep.current_revision, dep.deploying_revision, dep.error_count) == (1, None, 0)
    await sc.steps(4)
    assert sorted(r.revision for r in await sc.alive()) == [1, 1]


async def test_a_rollback_that_cannot_be_evaluated_is_abandoned_not_looped(sc: Scenario) -> None:
    await sc.ready(replicas=2, policy={"strategy": "rolling", "max_surge": 1})
    await sc.start_rollout(rev=revision("v2"))
    await sc.step()
    assert any(r.revision == 2 for r in await sc.alive())
    dep = await sc.dep()
    async with sc.store.engine.begin() as conn:  # a state no rule can decide, forward or back
        await conn.execute(update(deployments).where(deployments.c.id == dep.id).values(replicas=-1))

    rounds = await rounds_until_ready(sc, "svc", limit=3 * MAX_EVALUATION_ERRORS)

    assert rounds == 2 * MAX_EVALUATION_ERRORS - 1  # three forward failures, two more rolling back
    dep = await sc.dep()
    assert (dep.current_revision, dep.deploying_revision, dep.sub_step) == (1, None, SubStep.ROLLED_BACK)
    assert [r.revision for r in await sc.alive()] == [1, 1], "the abandoned revision's routes are terminated"
    abandoned = [h for h in await sc.history() if h.lifecycle_to is Lifecycle.READY and h.from_revision == 2]
    assert len(abandoned) == 1 and "rollout abandoned" in abandoned[0].message
    assert abandoned[0].result == "failure" and abandoned[0].error


# ------------------------------------------------------------- 6. history without lifecycle change


async def test_sub_step_changes_leave_history_while_the_lifecycle_stays(sc: Scenario) -> None:
    # Two probes to become healthy: the routes spend a while running but not ready ("progressing").
    await sc.ready(replicas=2, policy={"strategy": "blue_green"})
    await sc.start_rollout(rev=revision("v2", healthy_threshold=2))
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    await sc.steps(5)

    rows = [h for h in await sc.history() if h.to_revision == 2 and h.result != "operator"]
    assert [h.sub_step for h in rows] == [SubStep.PROVISIONING, SubStep.PROGRESSING, SubStep.AWAITING_PROMOTION]
    assert all(h.lifecycle_from is h.lifecycle_to is Lifecycle.DEPLOYING for h in rows)
    assert [h.result for h in rows] == ["progress", "progress", "waiting"]
    assert (await sc.dep()).lifecycle is Lifecycle.DEPLOYING


# ---------------------------------------------------------------- 8. completion applied twice


async def test_completion_applied_twice_keeps_the_new_revision(sc: Scenario) -> None:
    await awaiting_promotion(sc)
    await sc.step()
    completing = [cs for cs, _ in sc.store.applied if any(u.swap_expected == 2 for u in cs.deployments)]
    assert len(completing) == 1
    dep, history = await sc.dep(), await sc.history()
    assert (dep.current_revision, dep.deploying_revision) == (2, None)

    again = await sc.store.apply(completing[0], sc.clock.now())

    assert again.skipped == {dep.id} and not again.applied
    # Even without the version guard, the swap guard refuses: deploying_revision is no longer 2.
    swap_only = DeploymentUpdate(deployment_id=dep.id, expected_version=None, change=DeploymentChange(lifecycle=Lifecycle.READY),
                                 swap_expected=2)
    assert (await sc.store.apply(ChangeSet(deployments=[swap_only]), sc.clock.now())).skipped == {dep.id}
    after = await sc.dep()
    assert (after.current_revision, after.deploying_revision, after.version) == (2, None, dep.version)
    assert await sc.history() == history
