"""The `rollouts` table's statements: the timeline's share of the cycle's single write, and its reads.

While a rollout is open, the samples the DEPLOYING cycle appends live on its deployment's row
(`deployments.timeline_*`, for the rollout `timeline_rollout_id` names): store.apply appends them in
the UPDATE of the deployments it makes anyway, in SQL without reading the list (SQLite
`json_insert(…, '$[#]', json(:s))`, at most two samples; PostgreSQL `… || CAST(:new AS JSONB)`). For any
other rollout (a newer one, one opened before migration 0007) the rollouts row holds everything
(`_timeline_of`: the one rule every read and write here uses). Statements of this module, run inside
`Store.apply`'s transaction for the deployments the guard kept, whatever their number:

1. `read_full_timelines`: when an append would pass MAX_SAMPLES (the caller's `known_count` says so),
   one SELECT of those lists, thinned here (`thin`: every other sample of the middle goes, the first and
   the newest stay), the new samples appended; the caller writes them whole. About once per 250
   samples of a long rollout.
2. `RolloutUpdate`s that end a rollout: ONE UPDATE setting `ended_at`, `outcome`, `last_history_id` and
   the samples (the deployment row's while they are this rollout's, with the update's appended).
3. `NewRollout`s: one UPDATE ending the deployments' rollouts still open (outcome "aborted": a new
   rollout superseded them; their samples moved the same way), then one INSERT.

A step with nothing to do issues no statement. Reads: `with_marks` (the DEPLOYING cycle's read joins
each deployment's open rollout: `Store.read_cycle`), `list_rollouts`, `read_timeline`.

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


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def dump_json(value: Any) -> str:
    """Compact JSON text (the samples' transport). One shared encoder: `json.dumps` with separators
    builds a new one per call (~15 us; a cycle writes 10,000 samples)."""
    return _COMPACT.encode(value)


_dump = dump_json


# ------------------------------------------------------------------------------------------ writes


def _timeline_of(d: Any, r: Any) -> tuple[ColumnElement[Any], ColumnElement[Any], ColumnElement[Any]]:
    """(samples, count, newest key) of rollout `r` whatever holds them: its deployment `d`'s timeline
    columns while they belong to it (store.apply appends there), else its own row."""
    mine = and_(d.c.timeline_rollout_id == r.c.id, r.c.ended_at.is_(None))
    return (
        case((mine, d.c.timeline_samples), else_=r.c.samples),
        case((mine, d.c.timeline_count), else_=r.c.sample_count),
        case((mine, d.c.timeline_last), else_=r.c.last_sample),
    )


async def read_full_timelines(conn: AsyncConnection, updates: Sequence[RolloutUpdate]) -> dict[int, list[Any]]:
    """The whole sample lists (thinned, the new samples appended) of the open rollouts whose append
    would pass MAX_SAMPLES (the caller's `known_count` says so): one SELECT, about once per 250 samples
    of a long rollout; none otherwise. Deployments without an open rollout are absent."""
    full = {u.deployment_id: u for u in updates if u.samples and u.known_count + len(u.samples) > MAX_SAMPLES}
    if not full:
        return {}
    found: dict[int, list[Any]] = {}
    samples, _, _ = _timeline_of(deployments, rollouts)
    stmt = select(rollouts.c.deployment_id, samples).join(deployments, deployments.c.id == rollouts.c.deployment_id)
    for clause in queries.id_filters(conn.dialect.name, rollouts.c.deployment_id, full):
        for deployment_id, stored in await conn.execute(stmt.where(clause, _OPEN)):
            if isinstance(stored, str):  # a CASE over JSON columns comes back as text on SQLite
                stored = json.loads(stored)
            u = full[deployment_id]
            found[deployment_id] = thin(list(stored or ()), MAX_SAMPLES - len(u.samples)) + [
                sample_json(x) for x in u.samples
            ]
    return found


async def write_rollouts(conn: AsyncConnection, ending: Sequence[RolloutUpdate], new: Sequence[NewRollout]) -> None:
    """Steps 6-7 of store.apply's docstring (rollouts that end; rollouts that start), for the
    deployments the guard kept. Samples appended without an end went with the deployments UPDATE."""
    if ending:
        await _end(conn, ending, await read_full_timelines(conn, ending))
    if new:
        await _start(conn, new)


def _ended(u: RolloutUpdate) -> Any:
    return u.at if u.outcome is not None else None


async def _end(conn: AsyncConnection, updates: Sequence[RolloutUpdate], whole: dict[int, list[Any]]) -> None:
    """One UPDATE ending any number of open rollouts: the timeline the deployment row holds for it (or
    its own) with the new samples appended, its end and outcome, its last history row."""
    c = rollouts.c
    postgres = conn.dialect.name == "postgresql"
    rows = []
    for u in updates:
        texts = [dump_json(sample_json(x)) for x in u.samples]
        full = whole.get(u.deployment_id)
        rows.append({
            "b_deployment_id": u.deployment_id, "b_n": len(texts),
            "b_s1": dump_json([sample_json(x) for x in u.samples]) if postgres else (texts[0] if texts else None),
            "b_s2": texts[1] if len(texts) > 1 else None,
            "b_last": u.samples[-1].key if u.samples else None, "b_ended_at": _ended(u), "b_outcome": u.outcome,
            "b_whole": None if full is None else dump_json(full), "b_whole_count": None if full is None else len(full),
        })
    types: dict[str, TypeEngine[Any]] = {
        "b_deployment_id": Integer(), "b_n": Integer(), "b_s1": Text(), "b_s2": Text(), "b_last": Text(),
        "b_ended_at": c.ended_at.type, "b_outcome": String(), "b_whole": Text(), "b_whole_count": Integer(),
    }
    v: Any = queries.rows_source(conn.dialect, "v", {key: (t, [row[key] for row in rows]) for key, t in types.items()})
    samples, count, last = _timeline_of(deployments, rollouts)
    if postgres:
        appended: Any = func.coalesce(samples, cast("[]", JSONB())).op("||", return_type=JSONB())(cast(v.c.b_s1, JSONB()))
        whole_list: Any = cast(v.c.b_whole, JSONB())
    else:
        one = func.json_insert(samples, "$[#]", func.json(v.c.b_s1))
        appended = case((v.c.b_n == 0, samples), (v.c.b_n == 1, one),
                        else_=func.json_insert(one, "$[#]", func.json(v.c.b_s2)))
        whole_list = func.json(v.c.b_whole)
    has_whole = v.c.b_whole.isnot(None)
    stmt = (
        update(rollouts)
        .where(c.deployment_id == v.c.b_deployment_id, deployments.c.id == c.deployment_id, _OPEN)
        .values(
            samples=case((has_whole, whole_list), else_=appended),
            sample_count=case((has_whole, v.c.b_whole_count), else_=count + v.c.b_n),
            last_sample=func.coalesce(v.c.b_last, last),
            ended_at=func.coalesce(v.c.b_ended_at, c.ended_at),
            outcome=func.coalesce(v.c.b_outcome, c.outcome),
            last_history_id=_last_history(v.c.b_outcome),
        )
    )
    await conn.execute(stmt)


async def _start(conn: AsyncConnection, new: Sequence[NewRollout]) -> None:
    """Step 3: end what is still open of these deployments (superseded), then insert the new rollouts."""
    c = rollouts.c
    closing = [{"b_deployment_id": r.deployment_id, "b_at": r.at} for r in new]
    values = [{**new_rollout_values(r), "b_adopted": r.adopted} for r in new]
    types: dict[str, TypeEngine[Any]] = {key: c[key].type for key in values[0] if key != "b_adopted"}
    types["b_adopted"] = Boolean()
    samples, count, last = _timeline_of(deployments, rollouts)
    ends = {"outcome": "aborted", "last_history_id": _newest_history(c.deployment_id),
            "samples": samples, "sample_count": count, "last_sample": last}
    of_deployment = deployments.c.id == c.deployment_id

    def first_history(source: Any) -> ColumnElement[Any]:
        """The start row (this write's newest history row), or none for an adopted rollout (by time)."""
        return case((source["b_adopted"] == true(), null()), else_=_newest_history(source["deployment_id"]))

    if conn.dialect.name == "postgresql":
        v = queries.unnest_rows("v", {
            "b_deployment_id": (Integer(), [row["b_deployment_id"] for row in closing]),
            "b_at": (c.ended_at.type, [row["b_at"] for row in closing]),
        })
        await conn.execute(
            update(rollouts).where(c.deployment_id == v.c.b_deployment_id, of_deployment, _OPEN)
            .values(ended_at=v.c.b_at, **ends)
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
        .where(c.deployment_id == bindparam("b_deployment_id", type_=Integer()), of_deployment, _OPEN)
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
    """`deployment_select` with each deployment's open rollout joined: MARK_COLUMNS more columns at the
    end, read by `mark_from_row` (NULLs when none is open)."""
    _, count, last = _timeline_of(deployments, rollouts)
    return deployment_select.outerjoin(rollouts, and_(rollouts.c.deployment_id == deployments.c.id, _OPEN)).add_columns(
        rollouts.c.id.label("open_rollout_id"), count.label("open_sample_count"), last.label("open_last_sample"),
    )


MARK_COLUMNS = 3
"""The columns `with_marks` adds."""


def mark_from_row(row: Sequence[Any]) -> RolloutMark | None:
    """The last MARK_COLUMNS of a `with_marks` row."""
    rollout_id, count, last = row[-MARK_COLUMNS:]
    return None if rollout_id is None else RolloutMark(rollout_id=rollout_id, sample_count=count, last_key=last)


def _rollout_select() -> Select[Any]:
    """The `rollouts` columns of ROLLOUT_COLUMNS, the open rollout's count as its deployment holds it."""
    _, count, _ = _timeline_of(deployments, rollouts)
    return select(*(count.label(name) if name == "sample_count" else rollouts.c[name] for name in ROLLOUT_COLUMNS)).select_from(
        rollouts.join(deployments, deployments.c.id == rollouts.c.deployment_id)
    )


async def list_rollouts(conn: AsyncConnection, deployment_id: int) -> list[RolloutRecord]:
    stmt = _rollout_select().where(rollouts.c.deployment_id == deployment_id).order_by(rollouts.c.id)
    return [rollout_from_row(row) for row in (await conn.execute(stmt)).mappings()]


async def read_timeline(
    conn: AsyncConnection, deployment_id: int, rollout_id: int, history_limit: int
) -> tuple[RolloutRecord, list[TimelineSample], list[HistoryRecord]] | None:
    """One rollout of the deployment with its samples and the history rows of its span (from its start
    row to its end row, both included; to now while it runs. Without them, by time: from `started_at` to
    `ended_at`): the newest `history_limit`, oldest first. None when the deployment has no such rollout."""
    samples, _, _ = _timeline_of(deployments, rollouts)
    stmt = _rollout_select().add_columns(
        rollouts.c.first_history_id, rollouts.c.last_history_id, samples.label("samples")
    ).where(rollouts.c.id == rollout_id, rollouts.c.deployment_id == deployment_id)
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
    stored = row["samples"]
    return rollout, samples_from_json(json.loads(stored) if isinstance(stored, str) else stored), events
