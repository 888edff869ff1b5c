"""The rollouts table (docs/storage.md, "rollouts"): a rollout's row and its timeline samples through
`Store.apply`, on SQLite and PostgreSQL: the round trip, the bound of MAX_SAMPLES (thinned, first and
newest kept), the cycle's read of the open rollout, a superseded rollout, and the statements one
appended sample costs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollwise.model import Lifecycle
from rollwise.store import (
    ChangeSet,
    DeploymentChange,
    DeploymentUpdate,
    IntegrityFailed,
    NewHistory,
    NewRollout,
    RolloutUpdate,
    Store,
    TimelineSample,
)
from rollwise.store.records import MAX_SAMPLES
from rollwise.store.rollouts import thin

from .helpers import NOW, count_statements, make_deployments


def sample(seconds: float, old: int, new: int) -> TimelineSample:
    total = old + new
    weights = {} if not total else {1: round(100 * old / total), 2: 100 - round(100 * old / total)}
    return TimelineSample(at=NOW + timedelta(seconds=seconds), ready={1: old, 2: new}, weights=weights)


def start(dep_id: int, *, to: int = 2, seconds: float = 0, samples: tuple[TimelineSample, ...] = ()) -> NewRollout:
    return NewRollout(deployment_id=dep_id, from_revision=1, to_revision=to, strategy="rolling",
                      at=NOW + timedelta(seconds=seconds), samples=samples)


async def test_a_rollout_round_trip_with_samples_and_its_end(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    first = sample(0, 3, 0)
    await store.apply(ChangeSet(new_rollouts=[start(dep.id, samples=(first,))]), NOW)
    [mark] = (await store.list_deployments_and_rollouts([Lifecycle.PENDING]))[1].values()
    assert (mark.sample_count, mark.last_key) == (1, first.key)

    await store.apply(ChangeSet(rollout_updates=[
        RolloutUpdate(deployment_id=dep.id, at=NOW, samples=(sample(1, 3, 1), sample(1, 2, 1)), known_count=1)
    ]), NOW)
    end = NOW + timedelta(seconds=5)
    await store.apply(ChangeSet(rollout_updates=[
        RolloutUpdate(deployment_id=dep.id, at=end, samples=(sample(5, 0, 3),), outcome="completed", known_count=3)
    ]), end)

    [rollout] = await store.list_rollouts(dep.id)
    assert (rollout.from_revision, rollout.to_revision, rollout.strategy, rollout.outcome) == (1, 2, "rolling", "completed")
    assert (rollout.started_at, rollout.ended_at, rollout.sample_count) == (NOW, end, 4)
    found = await store.rollout_timeline(dep.id, rollout.id)
    assert found is not None
    _, samples, _ = found
    assert samples == [first, sample(1, 3, 1), sample(1, 2, 1), sample(5, 0, 3)]
    assert samples[1].ready == {1: 3, 2: 1} and samples[1].weights == {1: 75, 2: 25}
    # Ended: the cycle's read finds no open rollout any more; another deployment's id finds nothing.
    assert (await store.list_deployments_and_rollouts([Lifecycle.PENDING]))[1] == {}
    assert await store.rollout_timeline(dep.id + 1, rollout.id) is None


async def test_the_samples_stay_bounded_keeping_the_first_and_the_newest(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    await store.apply(ChangeSet(new_rollouts=[start(dep.id, samples=(sample(0, 3, 0),))]), NOW)
    count = 1
    for i in range(1, MAX_SAMPLES + 60):
        # What a cycle does: append with the count it read (the first cycle after the start appends two).
        [mark] = (await store.list_deployments_and_rollouts([Lifecycle.PENDING]))[1].values()
        assert mark.sample_count == count <= MAX_SAMPLES
        await store.apply(ChangeSet(rollout_updates=[
            RolloutUpdate(deployment_id=dep.id, at=NOW, samples=(sample(i, i, 0),), known_count=mark.sample_count)
        ]), NOW)
        count = count + 1 if count < MAX_SAMPLES else len(thin(range(MAX_SAMPLES), MAX_SAMPLES - 1)) + 1

    [rollout] = await store.list_rollouts(dep.id)
    found = await store.rollout_timeline(dep.id, rollout.id)
    assert found is not None
    samples = found[1]
    assert len(samples) == rollout.sample_count == count <= MAX_SAMPLES
    assert samples[0] == sample(0, 3, 0)  # the first stays
    assert samples[-1] == sample(MAX_SAMPLES + 59, MAX_SAMPLES + 59, 0)  # the newest too
    times = [s.at for s in samples]
    assert times == sorted(times) and len(set(times)) == len(times)
    # Thinned evenly: before the thinning, every other sample is left; after it, every one.
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert set(gaps[: MAX_SAMPLES // 2 - 1]) == {2.0} and set(gaps[-50:]) == {1.0}


def test_thin_halves_the_middle() -> None:
    assert thin(list(range(10)), 9) == [0, 2, 4, 6, 8, 9]
    assert thin(list(range(10)), 5) == [0, 4, 8, 9]
    assert thin(list(range(10)), 10) == list(range(10))
    assert thin([0, 1], 0) == [0, 1]


async def test_a_new_rollout_ends_the_open_one_as_aborted(store: Store) -> None:
    [dep, other] = await make_deployments(store, 2)
    await store.apply(ChangeSet(new_rollouts=[start(dep.id), start(other.id)]), NOW)
    later = NOW + timedelta(seconds=3)
    await store.apply(ChangeSet(new_rollouts=[start(dep.id, to=3, seconds=3, samples=(sample(3, 2, 1),))]), later)

    first, second = await store.list_rollouts(dep.id)
    assert (first.to_revision, first.outcome, first.ended_at) == (2, "aborted", later)
    assert (second.to_revision, second.outcome, second.ended_at, second.sample_count) == (3, "in_progress", None, 1)
    [untouched] = await store.list_rollouts(other.id)
    assert untouched.outcome == "in_progress"
    marks = (await store.list_deployments_and_rollouts([Lifecycle.PENDING]))[1]
    assert {d: m.rollout_id for d, m in marks.items()} == {dep.id: second.id, other.id: untouched.id}


async def test_the_timeline_holds_the_history_rows_of_its_span(store: Store) -> None:
    [dep] = await make_deployments(store, 1)

    def row(seconds: float, message: str) -> NewHistory:
        return NewHistory(deployment_id=dep.id, lifecycle_from=Lifecycle.READY, lifecycle_to=Lifecycle.READY,
                          result="progress", message=message, at=NOW + timedelta(seconds=seconds))

    await store.apply(ChangeSet(history=[row(-1, "before")]), NOW)
    await store.apply(ChangeSet(history=[row(0, "start")], new_rollouts=[start(dep.id)]), NOW)
    await store.apply(ChangeSet(history=[row(2, "wave")]), NOW)
    end = NOW + timedelta(seconds=4)
    await store.apply(ChangeSet(history=[row(4, "end")], rollout_updates=[
        RolloutUpdate(deployment_id=dep.id, at=end, outcome="rolled_back")]), end)
    await store.apply(ChangeSet(history=[row(5, "after")]), NOW)

    [rollout] = await store.list_rollouts(dep.id)
    assert rollout.outcome == "rolled_back" and rollout.sample_count == 0
    found = await store.rollout_timeline(dep.id, rollout.id)
    assert found is not None
    assert [h.message for h in found[2]] == ["start", "wave", "end"]
    limited = await store.rollout_timeline(dep.id, rollout.id, history_limit=2)
    assert limited is not None and [h.message for h in limited[2]] == ["wave", "end"]


async def test_a_skipped_deployment_writes_no_sample(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    await store.apply(ChangeSet(new_rollouts=[start(dep.id)]), NOW)
    result = await store.apply(ChangeSet(
        deployments=[DeploymentUpdate(deployment_id=dep.id, expected_version=dep.version + 5)],
        rollout_updates=[RolloutUpdate(deployment_id=dep.id, at=NOW, samples=(sample(1, 3, 0),))],
    ), NOW)
    assert result.skipped == {dep.id}
    assert [r.sample_count for r in await store.list_rollouts(dep.id)] == [0]


async def test_one_statement_appends_samples_for_any_number_of_rollouts(store: Store) -> None:
    """Samples of open rollouts go with the UPDATE of their deployments (the one a cycle writes anyway);
    the rollouts that end, with theirs, in one UPDATE of the rollouts."""
    counts = []
    for n in (3, 20):
        deps = await make_deployments(store, n, prefix=f"n{n}-")
        await store.apply(ChangeSet(new_rollouts=[start(d.id) for d in deps]), NOW)
        with count_statements(store) as appending:
            await store.apply(ChangeSet(rollout_updates=[
                RolloutUpdate(deployment_id=d.id, at=NOW, samples=(sample(1, 3, 0),) * (1 + i % 2)) for i, d in enumerate(deps)
            ]), NOW)
        with count_statements(store) as ending:
            await store.apply(ChangeSet(rollout_updates=[
                RolloutUpdate(deployment_id=d.id, at=NOW, samples=(sample(2, 3, 1),) * (i % 2),
                              outcome="completed" if i % 3 == 0 else None)
                for i, d in enumerate(deps)
            ]), NOW)
        counts.append([[" ".join(s.split()[:2]).upper() for s in statements if not s.startswith(("BEGIN", "COMMIT"))]
                       for statements in (appending, ending)])
        rollouts = [r for d in deps for r in await store.list_rollouts(d.id)]
        assert [r.sample_count for r in rollouts] == [1 + 2 * (i % 2) for i in range(n)]
        assert [r.outcome for r in rollouts] == ["completed" if i % 3 == 0 else "in_progress" for i in range(n)]
        for i, (d, r) in enumerate(zip(deps, rollouts, strict=True)):
            found = await store.rollout_timeline(d.id, r.id)
            assert found is not None
            assert found[1] == [sample(1, 3, 0)] * (1 + i % 2) + [sample(2, 3, 1)] * (i % 2)
    update = "WITH LOCKED" if store.dialect == "postgresql" else "UPDATE DEPLOYMENTS"
    assert counts[0] == counts[1] == [[update], [update, "UPDATE ROLLOUTS"]], counts


async def test_rollouts_go_with_their_deployment(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    with pytest.raises(IntegrityFailed):
        await store.apply(ChangeSet(new_rollouts=[start(dep.id + 99)]), NOW)
    await store.apply(ChangeSet(new_rollouts=[start(dep.id)]), NOW)
    destroyed = DeploymentChange(lifecycle=Lifecycle.DESTROYED)
    await store.apply(ChangeSet(deployments=[DeploymentUpdate(deployment_id=dep.id, expected_version=None,
                                                              change=destroyed)]), NOW)
    assert await store.purge_destroyed() == 1
    assert await store.list_rollouts(dep.id) == []


async def test_samples_kept_on_the_deployment_row_go_to_the_rollout_that_ends(store: Store) -> None:
    """An open rollout's appended samples live on its deployment's row (docs/storage.md, "rollouts"):
    whatever ends it (a new rollout superseding it, an end with or without samples) leaves them all on
    its own row, and the next rollout starts from its own samples, not the old ones."""
    [dep, other] = await make_deployments(store, 2)
    await store.apply(ChangeSet(new_rollouts=[start(dep.id, samples=(sample(0, 3, 0),)), start(other.id)]), NOW)
    for i in (1, 2):
        await store.apply(ChangeSet(rollout_updates=[
            RolloutUpdate(deployment_id=d.id, at=NOW, samples=(sample(i, 3, i),), known_count=i) for d in (dep, other)
        ]), NOW)
    superseding = start(dep.id, to=3, seconds=3, samples=(sample(3, 2, 2),))
    await store.apply(ChangeSet(new_rollouts=[superseding]), NOW)
    await store.apply(ChangeSet(rollout_updates=[
        RolloutUpdate(deployment_id=dep.id, at=NOW, samples=(sample(4, 1, 3),), known_count=1),
        RolloutUpdate(deployment_id=other.id, at=NOW, outcome="completed", known_count=2),
    ]), NOW)

    first, second = await store.list_rollouts(dep.id)
    assert (first.outcome, first.sample_count, second.outcome, second.sample_count) == ("aborted", 3, "in_progress", 2)
    for rollout, expected in ((first, [sample(0, 3, 0), sample(1, 3, 1), sample(2, 3, 2)]),
                              (second, [sample(3, 2, 2), sample(4, 1, 3)])):
        found = await store.rollout_timeline(dep.id, rollout.id)
        assert found is not None and found[1] == expected
    [ended] = await store.list_rollouts(other.id)
    found = await store.rollout_timeline(other.id, ended.id)
    assert ended.outcome == "completed" and found is not None and found[1] == [sample(1, 3, 1), sample(2, 3, 2)]
    [mark] = [m for d, m in (await store.list_deployments_and_rollouts([Lifecycle.PENDING]))[1].items() if d == dep.id]
    assert (mark.rollout_id, mark.sample_count, mark.last_key) == (second.id, 2, sample(4, 1, 3).key)


async def test_an_end_that_would_pass_the_bound_thins_too(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    first = sample(0, 3, 0)
    await store.apply(ChangeSet(new_rollouts=[start(dep.id, samples=(first,))]), NOW)
    for i in range(1, MAX_SAMPLES):  # full: MAX_SAMPLES samples on the deployment row
        await store.apply(ChangeSet(rollout_updates=[
            RolloutUpdate(deployment_id=dep.id, at=NOW, samples=(sample(i, i, 0),), known_count=i)]), NOW)
    last = sample(MAX_SAMPLES, 0, 3)
    await store.apply(ChangeSet(rollout_updates=[RolloutUpdate(
        deployment_id=dep.id, at=NOW, samples=(last,), outcome="completed", known_count=MAX_SAMPLES)]), NOW)
    [rollout] = await store.list_rollouts(dep.id)
    found = await store.rollout_timeline(dep.id, rollout.id)
    assert found is not None
    assert rollout.outcome == "completed" and len(found[1]) == rollout.sample_count <= MAX_SAMPLES
    assert found[1][0] == first and found[1][-1] == last
