"""The `rollouts` table's statements: the timeline's share of the cycle's single write, and its reads.

`write_rollouts(conn, updates, new)` runs inside `Store.apply`'s transaction (after the history rows),
for the deployments the guard kept. Whatever the number of deployments:

1. `RolloutUpdate`s that append without passing MAX_SAMPLES, or only end the rollout: ONE UPDATE of the
   open rollouts (executemany on SQLite; one execution over `unnest` arrays on PostgreSQL):
   `samples = <samples with the new ones appended>`, `sample_count = sample_count + :n`,
   `last_sample = COALESCE(:last, last_sample)`, `ended_at = COALESCE(:ended_at, ended_at)`,
   `outcome = COALESCE(:outcome, outcome)` `WHERE deployment_id = :id AND ended_at IS NULL`. The
   list is appended to in SQL, never read: SQLite `json_insert(samples, '$[#]', json(:s))` (once per
   sample, at most two), PostgreSQL `samples || CAST(:new AS JSONB)`. This is the one statement a
   DEPLOYING cycle adds, and only when it appends a sample.
2. Those whose append would pass MAX_SAMPLES (the caller's `known_count` says so): one SELECT of their
   lists, thinned here (`thin`: every other sample of the middle goes, the first and the newest stay),
   then one UPDATE writing them whole. About once per 250 samples of a long rollout.
3. `NewRollout`s: one UPDATE ending the deployments' rollouts still open (outcome "aborted": a new
   rollout superseded them), then one INSERT.

A step with nothing to do issues no statement. Reads: `with_marks` (the DEPLOYING cycle's read joins
each deployment's open rollout: `Store.list_deployments_and_rollouts`), `list_rollouts`,
`read_timeline`.

Called by: store.apply and store.repository. Must not: open or commit transactions, or catch errors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from rollwise.store import queries
from rollwise.store.commands import NewRollout, RolloutUpdate
from rollwise.store.records import MAX_SAMPLES, HistoryRecord, RolloutMark, RolloutRecord, TimelineSample
from rollwise.store.rows import (
    ROLLOUT_COLUMNS,
    history_from_row,
    new_rollout_values,
    rollout_from_row,
    sample_json,
    samples_from_json,
)
from rollwise.store.schema import deployments, history, rollouts

_OPEN = rollouts.c.ended_at.is_(None)


def _newest_history(deployment_id: ColumnElement[Any]) -> ColumnElement[Any]:
    """The deployment's newest history row id (this write's rows are inserted already: store.apply)."""
    return select(func.max(history.c.id)).where(history.c.deployment_id == deployment_id).scalar_subquery()


def _last_history(outcome: ColumnElement[Any]) -> ColumnElement[Any]:
    """`last_history_id` as an update leaves it: set when the update ends the rollout (`outcome` given)."""
    return case((outcome.is_(None), rollouts.c.last_history_id), else_=_newest_history(rollouts.c.deployment_id))


def thin(samples: Sequence[Any], keep: int) -> list[Any]:
    """At most `keep` of `samples` (oldest first): every other one of the middle goes, as often as
    needed; the first and the newest always stay, so the chart keeps its start and its end."""
    out = list(samples)
    while len(out) > max(keep, 2):
        out = out[:-1][::2] + [out[-1]]
    return out


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# ------------------------------------------------------------------------------------------ writes


async def write_rollouts(conn: AsyncConnection, updates: Sequence[RolloutUpdate], new: Sequence[NewRollout]) -> None:
    """Steps 1-3 of the module docstring, for the deployments the guard kept."""
    full = [u for u in updates if u.samples and u.known_count + len(u.samples) > MAX_SAMPLES]
    thinned = {u.deployment_id for u in full}
    appending = [u for u in updates if u.deployment_id not in thinned and (u.samples or u.outcome is not None)]
    if appending:
        await _append(conn, appending)
    if full:
        await _thin_and_append(conn, full)
    if new:
        await _start(conn, new)


def _ended(u: RolloutUpdate) -> Any:
    return u.at if u.outcome is not None else None


async def _append(conn: AsyncConnection, updates: Sequence[RolloutUpdate]) -> None:
    """Step 1: one UPDATE for any number of open rollouts."""
    c = rollouts.c
    base: dict[str, Any] = {}
    rows = [
        {
            "b_deployment_id": u.deployment_id,
            "b_n": len(u.samples),
            "b_last": u.samples[-1].key if u.samples else None,
            "b_ended_at": _ended(u),
            "b_outcome": u.outcome,
        }
        for u in updates
    ]
    types: dict[str, TypeEngine[Any]] = {
        "b_deployment_id": Integer(), "b_n": Integer(), "b_last": Text(), "b_ended_at": c.ended_at.type,
        "b_outcome": String(),
    }
    if conn.dialect.name == "postgresql":
        for row, u in zip(rows, updates, strict=True):
            row["b_new"] = _dump([sample_json(s) for s in u.samples])
        types["b_new"] = Text()
        v = queries.unnest_rows("v", {key: (t, [row[key] for row in rows]) for key, t in types.items()})
        source: Any = v.c
        appended: ColumnElement[Any] = c.samples.op("||", return_type=JSONB())(cast(v.c.b_new, JSONB()))
    else:
        for row, u in zip(rows, updates, strict=True):
            texts = [_dump(sample_json(s)) for s in u.samples]
            row.update(b_s1=texts[0] if texts else None, b_s2=texts[1] if len(texts) > 1 else None)
        types.update(b_s1=Text(), b_s2=Text())
        source = {key: bindparam(key, type_=t) for key, t in types.items()}
        one = func.json_insert(c.samples, "$[#]", func.json(source["b_s1"]))
        two = func.json_insert(one, "$[#]", func.json(source["b_s2"]))
        appended = case((source["b_n"] == 0, c.samples), (source["b_n"] == 1, one), else_=two)
    base.update(
        samples=appended,
        sample_count=c.sample_count + source["b_n"],
        last_sample=func.coalesce(source["b_last"], c.last_sample),
        ended_at=func.coalesce(source["b_ended_at"], c.ended_at),
        outcome=func.coalesce(source["b_outcome"], c.outcome),
        last_history_id=_last_history(source["b_outcome"]),
    )
    stmt = update(rollouts).where(c.deployment_id == source["b_deployment_id"], _OPEN).values(base)
    if conn.dialect.name == "postgresql":
        await conn.execute(stmt)
    else:
        await conn.execute(stmt, rows)


async def _thin_and_append(conn: AsyncConnection, updates: Sequence[RolloutUpdate]) -> None:
    """Step 2: read the full lists, thin them, write them whole (rare: few rows, executemany)."""
    c = rollouts.c
    stored: dict[int, list[Any]] = {}
    ids = [u.deployment_id for u in updates]
    for clause in queries.id_filters(conn.dialect.name, c.deployment_id, ids):
        for deployment_id, samples in await conn.execute(select(c.deployment_id, c.samples).where(clause, _OPEN)):
            stored[deployment_id] = list(samples or ())
    rows = []
    for u in updates:
        if u.deployment_id not in stored:
            continue  # no open rollout: nothing to append to (as in step 1)
        samples = thin(stored[u.deployment_id], MAX_SAMPLES - len(u.samples)) + [sample_json(s) for s in u.samples]
        rows.append({
            "b_deployment_id": u.deployment_id, "b_samples": samples, "b_count": len(samples),
            "b_last": u.samples[-1].key, "b_ended_at": _ended(u), "b_outcome": u.outcome,
        })
    if not rows:
        return
    stmt = (
        update(rollouts)
        .where(c.deployment_id == bindparam("b_deployment_id", type_=Integer()), _OPEN)
        .values(
            samples=bindparam("b_samples", type_=c.samples.type),
            sample_count=bindparam("b_count", type_=Integer()),
            last_sample=bindparam("b_last", type_=Text()),
            ended_at=func.coalesce(bindparam("b_ended_at", type_=c.ended_at.type), c.ended_at),
            outcome=func.coalesce(bindparam("b_outcome", type_=String()), c.outcome),
            last_history_id=_last_history(bindparam("b_outcome", type_=String())),
        )
    )
    await conn.execute(stmt, rows)


async def _start(conn: AsyncConnection, new: Sequence[NewRollout]) -> None:
    """Step 3: end what is still open of these deployments (superseded), then insert the new rollouts."""
    c = rollouts.c
    closing = [{"b_deployment_id": r.deployment_id, "b_at": r.at} for r in new]
    values = [{**new_rollout_values(r), "b_adopted": r.adopted} for r in new]
    types: dict[str, TypeEngine[Any]] = {key: c[key].type for key in values[0] if key != "b_adopted"}
    types["b_adopted"] = Boolean()
    ends = {"outcome": "aborted", "last_history_id": _newest_history(c.deployment_id)}

    def first_history(source: Any) -> ColumnElement[Any]:
        """The start row (this write's newest history row), or none for an adopted rollout (by time)."""
        return case((source["b_adopted"] == true(), null()), else_=_newest_history(source["deployment_id"]))

    if conn.dialect.name == "postgresql":
        v = queries.unnest_rows("v", {
            "b_deployment_id": (Integer(), [row["b_deployment_id"] for row in closing]),
            "b_at": (c.ended_at.type, [row["b_at"] for row in closing]),
        })
        await conn.execute(
            update(rollouts).where(c.deployment_id == v.c.b_deployment_id, _OPEN).values(ended_at=v.c.b_at, **ends)
        )
        # The lists travel as JSON text (an array of JSON lists would be read as a 2-D array).
        types["samples"] = Text()
        for row in values:
            row["samples"] = _dump(row["samples"])
        rows = queries.unnest_rows("r", {key: (t, [row[key] for row in values]) for key, t in types.items()})
        names = [key for key in types if key != "b_adopted"]
        columns = [cast(rows.c[key], JSONB()) if key == "samples" else rows.c[key] for key in names]
        await conn.execute(insert(rollouts).from_select(
            [*names, "first_history_id"], select(*columns, first_history(rows.c))
        ))
        return
    await conn.execute(
        update(rollouts)
        .where(c.deployment_id == bindparam("b_deployment_id", type_=Integer()), _OPEN)
        .values(ended_at=bindparam("b_at", type_=c.ended_at.type), **ends),
        closing,
    )
    binds = {key: bindparam(key, type_=t) for key, t in types.items()}
    stmt = insert(rollouts).values(
        {**{key: bind for key, bind in binds.items() if key != "b_adopted"}, "first_history_id": first_history(binds)}
    )
    await conn.execute(stmt, values)


# ------------------------------------------------------------------------------------------- reads


def with_marks(deployment_select: Select[Any]) -> Select[Any]:
    """`deployment_select` with each deployment's open rollout joined: three more columns at the end,
    read by `mark_from_row` (NULLs when none is open)."""
    return deployment_select.outerjoin(rollouts, and_(rollouts.c.deployment_id == deployments.c.id, _OPEN)).add_columns(
        rollouts.c.id.label("open_rollout_id"), rollouts.c.sample_count.label("open_sample_count"),
        rollouts.c.last_sample.label("open_last_sample"),
    )


MARK_COLUMNS = 3
"""The columns `with_marks` adds."""


def mark_from_row(row: Sequence[Any]) -> RolloutMark | None:
    """The last MARK_COLUMNS of a `with_marks` row."""
    rollout_id, count, last = row[-MARK_COLUMNS:]
    return None if rollout_id is None else RolloutMark(rollout_id=rollout_id, sample_count=count, last_key=last)


async def list_rollouts(conn: AsyncConnection, deployment_id: int) -> list[RolloutRecord]:
    stmt = (select(*(rollouts.c[name] for name in ROLLOUT_COLUMNS))
            .where(rollouts.c.deployment_id == deployment_id).order_by(rollouts.c.id))
    return [rollout_from_row(row) for row in (await conn.execute(stmt)).mappings()]


async def read_timeline(
    conn: AsyncConnection, deployment_id: int, rollout_id: int, history_limit: int
) -> tuple[RolloutRecord, list[TimelineSample], list[HistoryRecord]] | None:
    """One rollout of the deployment with its samples and the history rows of its span (from its start
    row to its end row, both included; to now while it runs. Without them, by time: from `started_at` to
    `ended_at`): the newest `history_limit`, oldest first. None when the deployment has no such rollout."""
    stmt = select(rollouts).where(rollouts.c.id == rollout_id, rollouts.c.deployment_id == deployment_id)
    row = (await conn.execute(stmt)).mappings().first()
    if row is None:
        return None
    rollout = rollout_from_row(row)
    first, last = row["first_history_id"], row["last_history_id"]
    # By row id where known: a rollout superseded at the same instant as the next one starts shares its
    # time, not its rows (the superseding row, the newest of the write that ends one and starts the
    # other, belongs to both).
    span = [history.c.deployment_id == deployment_id,
            history.c.created_at >= rollout.started_at if first is None else history.c.id >= first]
    if last is not None:
        span.append(history.c.id <= last)
    elif rollout.ended_at is not None:
        span.append(history.c.created_at <= rollout.ended_at)
    rows = (await conn.execute(
        select(history).where(*span).order_by(history.c.id.desc()).limit(history_limit)
    )).mappings()
    events = [history_from_row(r) for r in rows]
    events.reverse()
    return rollout, samples_from_json(row["samples"]), events
