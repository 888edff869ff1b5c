"""Batch writers: many requests of one kind written in ONE transaction with a fixed number of statements
(store.writer.Combiner calls them with whatever queued up while the previous batch was written).

- `create_deployments`: new deployments with their policy and revision 1. A name taken by a deployment
  that is not destroyed is that call's `Conflict` (so is the second of two calls with one name); a
  destroyed deployment of the name is deleted first (with its rows, as `purge_destroyed` would). SELECT
  the names, DELETE the destroyed ones (only when there are), INSERT deployments (RETURNING ids),
  INSERT policies, INSERT revisions, SELECT the new deployments and revisions back: at most 7
  statements for any batch. The outcome of a created item is (its DeploymentRecord, its revision 1).
- `add_revisions`: each deployment's next revision number(s). Rows locked (PostgreSQL `FOR UPDATE`,
  in id order), the highest numbers read in one GROUP BY, the rows inserted in one executemany and
  read back: 4 statements. A deployment that does not exist is that call's `NotFound`.
- `apply_requests`: the guarded single-deployment ChangeSets of requests (control.operations), merged
  into as few `apply_changes` calls as there are requests for one deployment in the batch (usually
  one): the guard, the version bump and the history row per deployment are exactly a lone request's.
  The merged write uses the batch's latest `now`; every result carries it as `written_at`.

Each function returns one outcome per item, in order: a result, or the error that item alone earned.
An error that is not one item's own (a lost connection) is raised and reaches every item (the
Combiner writes a batch again item by item when a constraint fails it).

Called by store.repository through store.writer. Must not: open transactions (the caller's `conn` is
one), read the clock, or retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from rollwise.model import Lifecycle, Mode, Policy
from rollwise.store import queries
from rollwise.store.apply import apply_changes
from rollwise.store.commands import ChangeSet, RevisionSpec
from rollwise.store.errors import Conflict, NotFound
from rollwise.store.records import DeploymentRecord, RevisionRecord
from rollwise.store.rows import deployment_from_row, policy_values, revision_from_row, revision_values
from rollwise.store.schema import deployments, policies, revisions


@dataclass(frozen=True, slots=True)
class NewDeployment:
    name: str
    replicas: int
    policy: Policy
    revision: RevisionSpec
    now: datetime


@dataclass(frozen=True, slots=True)
class NewRevision:
    deployment_id: int
    spec: RevisionSpec
    now: datetime


@dataclass(frozen=True, slots=True)
class RequestWrite:
    changes: ChangeSet
    now: datetime


Outcome = Any
"""A result, or the exception for that item."""


async def create_deployments(conn: AsyncConnection, items: Sequence[NewDeployment]) -> list[Outcome]:
    """See the module docstring; the outcome of a created item is (its DeploymentRecord, its revision 1)."""
    names = sorted({item.name for item in items})
    found = (await conn.execute(
        select(deployments.c.id, deployments.c.name, deployments.c.lifecycle).where(deployments.c.name.in_(names))
    )).all()
    taken = {name for _, name, lifecycle in found if lifecycle != Lifecycle.DESTROYED.value}
    destroyed = [id_ for id_, _, lifecycle in found if lifecycle == Lifecycle.DESTROYED.value]
    if destroyed:
        await conn.execute(delete(deployments).where(deployments.c.id.in_(destroyed)))
    outcomes: list[Outcome] = []
    fresh: list[NewDeployment] = []
    for item in items:
        if item.name in taken:
            outcomes.append(Conflict(f"deployment {item.name!r} exists already"))
        else:
            taken.add(item.name)
            fresh.append(item)
            outcomes.append(None)
    if not fresh:
        return outcomes
    rows = [
        dict(name=item.name, replicas=item.replicas, lifecycle=Lifecycle.PENDING.value, sub_step=None,
             mode=Mode.FORWARD.value, current_revision=1, deploying_revision=None, paused=False,
             abort_requested=False, promote_requested=False, error_count=0, version=1, created_at=item.now,
             updated_at=item.now)
        for item in fresh
    ]
    # RETURNING in any order (asking for the parameters' order makes SQLite insert row by row): the
    # names of a batch are distinct, so each new id is found by its name.
    result = await conn.execute(insert(deployments).returning(deployments.c.id, deployments.c.name), rows)
    id_of = {name: id_ for id_, name in result.all()}
    ids = [id_of[item.name] for item in fresh]
    await conn.execute(insert(policies), [policy_values(id_, item.policy, item.now) for id_, item in zip(ids, fresh, strict=True)])
    await conn.execute(
        insert(revisions), [revision_values(id_, 1, item.revision, item.now) for id_, item in zip(ids, fresh, strict=True)]
    )
    records: dict[int, DeploymentRecord] = {}
    firsts: dict[int, RevisionRecord] = {}
    for clause in queries.id_filters(conn.dialect.name, deployments.c.id, ids):
        for row in (await conn.execute(queries.DEPLOYMENT_SELECT.where(clause))).all():
            record = deployment_from_row(row)
            records[record.id] = record
    for clause in queries.id_filters(conn.dialect.name, revisions.c.deployment_id, ids):
        for mapping in (await conn.execute(select(revisions).where(clause))).mappings():
            first = revision_from_row(mapping)
            firsts[first.deployment_id] = first
    created = iter(ids)
    out: list[Outcome] = []
    for outcome in outcomes:
        if outcome is None:
            id_ = next(created)
            outcome = (records[id_], firsts[id_])
        out.append(outcome)
    return out


async def add_revisions(conn: AsyncConnection, items: Sequence[NewRevision]) -> list[Outcome]:
    """See the module docstring; the outcome of an added item is its RevisionRecord."""
    dialect = conn.dialect.name
    wanted = sorted({item.deployment_id for item in items})
    existing: set[int] = set()
    highest: dict[int, int] = {}
    for clause in queries.id_filters(dialect, deployments.c.id, wanted):
        lock = select(deployments.c.id).where(clause).order_by(deployments.c.id).with_for_update()
        existing.update(id_ for (id_,) in await conn.execute(lock))
    for clause in queries.id_filters(dialect, revisions.c.deployment_id, existing):
        stmt = select(revisions.c.deployment_id, func.max(revisions.c.number)).where(clause).group_by(
            revisions.c.deployment_id
        )
        highest.update({id_: int(number) for id_, number in await conn.execute(stmt)})
    outcomes: list[Outcome] = []
    rows: list[dict[str, Any]] = []
    for item in items:
        if item.deployment_id not in existing:
            outcomes.append(NotFound(f"deployment {item.deployment_id} does not exist"))
            continue
        number = highest.get(item.deployment_id, 0) + 1
        highest[item.deployment_id] = number
        rows.append(revision_values(item.deployment_id, number, item.spec, item.now))
        outcomes.append((item.deployment_id, number))
    if not rows:
        return outcomes
    await conn.execute(insert(revisions), rows)
    keys = [(row["deployment_id"], row["number"]) for row in rows]
    records: dict[tuple[int, int], RevisionRecord] = {}
    for clause in queries.pair_filters(dialect, revisions.c.deployment_id, revisions.c.number, keys):
        for row in (await conn.execute(select(revisions).where(clause))).mappings():
            record = revision_from_row(row)
            records[(record.deployment_id, record.number)] = record
    return [records[outcome] if isinstance(outcome, tuple) else outcome for outcome in outcomes]


async def apply_requests(conn: AsyncConnection, items: Sequence[RequestWrite]) -> list[Outcome]:
    """See the module docstring; the outcome of each item is its own ApplyResult."""
    outcomes: list[Outcome] = [None] * len(items)
    left = list(enumerate(items))
    while left:
        # Items of distinct deployments merge; a second request for one deployment waits for the next
        # round (in order: its guard then sees what the first one wrote).
        round_: list[tuple[int, RequestWrite]] = []
        later: list[tuple[int, RequestWrite]] = []
        seen: set[int] = set()
        for index, item in left:
            ids = _deployment_ids(item.changes)
            if ids & seen:
                later.append((index, item))
            else:
                seen |= ids
                round_.append((index, item))
        now = max(item.now for _, item in round_)
        result = await apply_changes(conn, _merged([item.changes for _, item in round_]), now)
        for index, item in round_:
            ids = _deployment_ids(item.changes)
            outcomes[index] = replace(
                result,
                skipped=result.skipped & ids,
                applied=result.applied & ids,
                versions={k: v for k, v in result.versions.items() if k in ids},
                route_ids=[] if len(round_) > 1 else result.route_ids,
                written_at=now,
            )
        left = later
    return outcomes


def _deployment_ids(changes: ChangeSet) -> set[int]:
    return {item.deployment_id for f in fields(changes) for item in getattr(changes, f.name)
            if item.deployment_id is not None}


def _merged(sets: Sequence[ChangeSet]) -> ChangeSet:
    """One ChangeSet with every list of `sets` concatenated (whatever lists a ChangeSet has)."""
    if len(sets) == 1:
        return sets[0]
    return ChangeSet(**{f.name: [item for s in sets for item in getattr(s, f.name)] for f in fields(ChangeSet)})
