"""The cycle's single write: a ChangeSet applied in one transaction with a fixed number of statements.

`apply_changes(conn, changes, now)` runs inside the caller's write transaction (Store.apply opens it;
SQLite: BEGIN IMMEDIATE). In order, whatever the number of deployments (id lists are bound as one
array or JSON parameter, never chunked):

0. Only when an appended timeline would pass MAX_SAMPLES: one SELECT of those lists (store.rollouts).
1./2. ONE `UPDATE deployments SET … FROM (rows) AS v WHERE id = v.b_id AND (v.b_expected IS NULL OR
   version = v.b_expected) AND (v.b_swap_expected IS NULL OR deploying_revision = v.b_swap_expected)
   RETURNING id, version[, last history row]`: the guard and the write in one statement. A
   DeploymentUpdate whose row is not returned is *skipped* whole: its new routes, route updates,
   history and rollout changes are dropped. Columns: `col = CASE WHEN v.s_col THEN v.v_col ELSE col
   END`; `version + 1` and `updated_at = :now` only for rows that change something (a pure guard
   changes nothing). The swap is SQL: `current_revision = CASE WHEN v.b_swap THEN
   COALESCE(deploying_revision, current_revision) …`, `deploying_revision = CASE WHEN v.b_swap THEN
   NULL …`: it can never write NULL over a serving revision. Rows are also the deployments whose open
   rollout gets timeline samples (appended on the deployment row: `_timeline_values`, store.rollouts)
   and those that get history rows (unguarded rows that change nothing): RETURNING gives each one's
   last history row (`_last_history_row`), what step 5 merges with. PostgreSQL locks the rows first,
   in id order, in a `MATERIALIZED` CTE of the same statement.
   2b. The policy row of each update that carries a policy (operator requests only; a cycle never
   changes a policy, so its statement count does not move).
3. One `INSERT … SELECT` of the new routes (ids generated when not given).
4. One `UPDATE routes … FROM (rows)`: `col = CASE WHEN v.s_col THEN v.v_col ELSE col END` for the union
   of columns the updates name (a plain `col = v.v_col` when all name it) `WHERE id = v.b_id AND
   deployment_id = v.b_deployment_id`. Updates of the same route (and tag) are merged first, in
   ChangeSet order: later fields win, exactly as applying them one after the other. PostgreSQL locks
   the routes in id order first (a `MATERIALIZED` CTE with `ORDER BY id FOR UPDATE`), so concurrent
   writers lock routes in the same order whatever plan it picks.
5. History: one INSERT, and one UPDATE when some rows merge: a row whose `merge_key` equals the
   deployment's last row (as step 1 returned it, or new in this batch) bumps that row's `attempts` and
   `updated_at` (and keeps the newest `error`).
6. Rollouts (store.rollouts), only when some end or start: one UPDATE of those that end (their samples
   moved from the deployment row), one UPDATE ending what a new rollout supersedes, one INSERT.

How rows travel (`queries.rows_source`): ONE parameter set per statement whatever their number; on
PostgreSQL one array per column expanded by `unnest` (asyncpg runs an executemany as one execution per
row), on SQLite one JSON text expanded by `json_each` (an executemany cannot RETURN rows, and its
per-row parameter handling cost SQLAlchemy more than the statement).

A statement is skipped when it has nothing to do, so the count depends only on which kinds of change
are present, never on how many deployments they concern (tests/store/test_store_apply.py counts them).

Called by: store.repository (Store.apply). Must not: open or commit
transactions, or catch errors (the caller translates them and the transaction rolls back whole).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from rollwise.store import queries
from rollwise.store.bulk import gc_paused
from rollwise.store.commands import (
    UNSET,
    ApplyResult,
    ChangeSet,
    DeploymentUpdate,
    NewHistory,
    NewRoute,
    RolloutUpdate,
    RouteUpdate,
    new_route_id,
)
from rollwise.store.rollouts import dump_json as _dump
from rollwise.store.rollouts import read_full_timelines, write_rollouts
from rollwise.store.rows import (
    HISTORY_KEY_COLUMNS,
    deployment_change_values,
    history_key_values,
    history_values,
    new_route_values,
    policy_values,
    route_update_values,
    sample_json,
)
from rollwise.store.schema import deployments, history, policies, rollouts, routes


def check_changes(changes: ChangeSet) -> None:
    """Reject a malformed ChangeSet before any I/O (ValueError: a caller bug)."""
    seen: set[int] = set()
    for u in changes.deployments:
        if u.deployment_id in seen:
            raise ValueError(f"ChangeSet: two DeploymentUpdates for deployment {u.deployment_id}")
        seen.add(u.deployment_id)
    for r in changes.route_updates:
        if r.deployment_id is None:
            raise ValueError(f"ChangeSet: RouteUpdate of route {r.id!r} is not tagged with its deployment_id")
    for kind, items in (("RolloutUpdates", changes.rollout_updates), ("NewRollouts", changes.new_rollouts)):
        ids = [item.deployment_id for item in items]
        if len(ids) != len(set(ids)):
            raise ValueError(f"ChangeSet: two {kind} for one deployment")


async def apply_changes(conn: AsyncConnection, changes: ChangeSet, now: datetime) -> ApplyResult:
    """Apply a ChangeSet inside the caller's transaction; see the module docstring."""
    check_changes(changes)
    appends = [u for u in changes.rollout_updates if u.outcome is None and u.samples]
    whole = await read_full_timelines(conn, appends)
    written = await _update_deployments(conn, changes, appends, whole, now)
    skipped = written.skipped
    await _write_policies(conn, [u for u in changes.deployments if u.deployment_id not in skipped], now)

    route_ids = await _insert_routes(conn, [r for r in changes.new_routes if r.deployment_id not in skipped])
    updates = [u for u in changes.route_updates if u.deployment_id not in skipped]
    await write_route_updates(conn, updates, tagged=True)

    kept_history = [h for h in changes.history if h.deployment_id not in skipped]
    inserted, merged = await _write_history(conn, kept_history, written.last_history)
    await write_rollouts(
        conn,
        [u for u in changes.rollout_updates if u.outcome is not None and u.deployment_id not in skipped],
        [r for r in changes.new_rollouts if r.deployment_id not in skipped],
    )
    return ApplyResult(
        skipped=skipped,
        applied=written.applied,
        versions=written.versions,
        route_ids=route_ids,
        routes_updated=len(updates),
        history_inserted=inserted,
        history_merged=merged,
    )


def _rows_as_arrays(
    conn: AsyncConnection, rows: Sequence[Mapping[str, Any]], types: Mapping[str, TypeEngine[Any]], name: str = "v"
) -> Any:
    """`rows` as ONE parameter set (queries.rows_source): `unnest(…) AS name(…)` on PostgreSQL, a JSON
    array expanded by `json_each` on SQLite; one column per key of `types`."""
    with gc_paused():  # synchronous: every value of the statement
        arrays = queries.column_arrays(rows, types)
        return queries.rows_source(conn.dialect, name, {key: (type_, arrays[key]) for key, type_ in types.items()})


# ------------------------------------------------------- 1./2. the guarded UPDATE of the deployments


_SWAP_COLUMNS = ("current_revision", "deploying_revision")
_NO_VALUES: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class _Written:
    """What the deployments UPDATE did: the guarded updates skipped, the deployments written (and
    those it wrote without changing them), the version after it, and the last stored history row
    of each returned deployment (None: none)."""

    skipped: set[int]
    applied: set[int]
    versions: dict[int, int]
    last_history: dict[int, tuple[int, tuple[object, ...]] | None]


def _last_history_row(dialect: str) -> ColumnElement[Any]:
    """The deployment's newest history row as JSON text `[id, <merge key columns>]`, for RETURNING.

    Spelled as SQL text: SQLAlchemy renders the columns of a RETURNING clause without their table on
    SQLite, also inside a subquery, where `id` is then ambiguous.
    """
    columns = ", ".join(f"last_h.{name}" for name in ("id", *HISTORY_KEY_COLUMNS))
    row = f"CAST(json_build_array({columns}) AS TEXT)" if dialect == "postgresql" else f"json_array({columns})"
    return literal_column(
        f"(SELECT {row} FROM history AS last_h WHERE last_h.id = "
        "(SELECT max(newest_h.id) FROM history AS newest_h WHERE newest_h.deployment_id = deployments.id))"
    )


async def _update_deployments(
    conn: AsyncConnection, changes: ChangeSet, appends: Sequence[RolloutUpdate], whole: Mapping[int, list[Any]],
    now: datetime,
) -> _Written:
    """Steps 1-2 of the module docstring: ONE `UPDATE deployments … RETURNING` that is the guard too.

    Its rows: every DeploymentUpdate (guarded), the deployments whose open rollout gets samples
    (`appends`; `whole`: those thinned first, their full lists) and those that get history rows
    (unguarded rows that change nothing else, written back as they are: the RETURNING reads their last
    history row). A row not returned was skipped (or does not exist).
    """
    dialect = conn.dialect.name
    updates = {u.deployment_id: u for u in changes.deployments}
    with_samples = {u.deployment_id: u for u in appends}
    ids = sorted(set(updates) | set(with_samples) | {h.deployment_id for h in changes.history})
    if not ids:
        return _Written(set(), set(), {}, {})

    # Each update's column values, computed once (DeploymentUpdate.writes / .changes each rebuild them).
    changed_of: dict[int, dict[str, Any]] = {}
    for du in changes.deployments:
        cols = du.change.columns()
        if cols or du.change.policy is not UNSET or du.swap_expected is not None:  # du.writes
            if du.swap_expected is not None:
                cols.pop("deploying_revision", None)
            changed_of[du.deployment_id] = deployment_change_values(cols)
    writing = [u for u in changes.deployments if u.deployment_id in changed_of]
    swap_any = any(u.swap_expected is not None for u in writing)
    columns = sorted({key for values in changed_of.values() for key in values})
    types: dict[str, TypeEngine[Any]] = {
        "b_id": Integer(), "b_expected": Integer(), "b_swap_expected": Integer(), "b_writes": Boolean(),
    }
    if swap_any:
        types["b_swap"] = Boolean()
    for c in columns:
        types[f"s_{c}"] = Boolean()
        types[f"v_{c}"] = deployments.c[c].type
    if with_samples:
        types.update(b_n=Integer(), b_s1=Text(), b_s2=Text(), b_last=Text(), b_whole=Text(), b_whole_count=Integer())
    with gc_paused():  # synchronous: builds every row of the statement
        rows: list[dict[str, Any]] = []
        for id_ in ids:
            u = updates.get(id_)
            row: dict[str, Any] = {
                "b_id": id_,
                "b_expected": None if u is None else u.expected_version,
                "b_swap_expected": None if u is None else u.swap_expected,
                "b_writes": id_ in changed_of,
            }
            if swap_any:
                row["b_swap"] = u is not None and u.swap_expected is not None
            changed = changed_of.get(id_, _NO_VALUES)
            for c in columns:
                row[f"s_{c}"] = c in changed
                row[f"v_{c}"] = changed.get(c)
            if with_samples:
                r = with_samples.get(id_)
                objects = [sample_json(x) for x in r.samples] if r is not None else []
                full = whole.get(id_)
                row.update(
                    b_n=len(objects), b_s2=_dump(objects[1]) if len(objects) > 1 else None,
                    b_last=r.samples[-1].key if r is not None and r.samples else None,
                    b_whole=None if full is None else _dump(full), b_whole_count=None if full is None else len(full),
                )
                if dialect == "postgresql":  # the new samples as one JSON list
                    row["b_s1"] = _dump(objects)
                else:
                    row["b_s1"] = _dump(objects[0]) if objects else None
            rows.append(row)

        v: Any = queries.rows_source(conn.dialect, "v", {key: (t, [row[key] for row in rows]) for key, t in types.items()})
    d = deployments.c
    source_columns: list[Any] = [*v.c]
    if with_samples:
        open_ = rollouts.alias("open_r")
        source_columns += [open_.c.id.label("open_id"), open_.c.samples.label("open_samples"),
                           open_.c.sample_count.label("open_count")]
        joined: Any = v.outerjoin(open_, and_(open_.c.deployment_id == v.c.b_id, open_.c.ended_at.is_(None)))
    else:
        joined = v
    if dialect == "postgresql":
        # Rows are locked in id order (as concurrent writers do), then written by the UPDATE.
        src: Any = (
            select(*source_columns).select_from(joined.join(deployments, deployments.c.id == v.c.b_id))
            .order_by(v.c.b_id).with_for_update(of=deployments).cte("locked").prefix_with("MATERIALIZED")
        )
    else:
        src = select(*source_columns).select_from(joined).subquery("src") if with_samples else v

    values: dict[str, Any] = {}
    for c in columns:
        values[c] = case((src.c[f"s_{c}"] == true(), src.c[f"v_{c}"]), else_=d[c])
    if swap_any:
        swap = src.c.b_swap == true()
        values["current_revision"] = case((swap, func.coalesce(d.deploying_revision, d.current_revision)),
                                          else_=d.current_revision)
        values["deploying_revision"] = case((swap, null()), else_=values.get("deploying_revision", d.deploying_revision))
    writes = src.c.b_writes == true()
    values["version"] = case((writes, d.version + 1), else_=d.version)
    values["updated_at"] = case((writes, bindparam("b_now", now, type_=d.updated_at.type)), else_=d.updated_at)
    if with_samples:
        values.update(_timeline_values(dialect, src))
    stmt = (
        update(deployments)
        .where(
            d.id == src.c.b_id,
            or_(src.c.b_expected.is_(None), d.version == src.c.b_expected),
            or_(src.c.b_swap_expected.is_(None), d.deploying_revision == src.c.b_swap_expected),
        )
        .values(values)
    )
    returning: list[Any] = [d.id, d.version]
    if changes.history:
        returning.append(_last_history_row(dialect).label("last_history"))
    result = await conn.execute(stmt.returning(*returning))
    versions: dict[int, int] = {}
    last_history: dict[int, tuple[int, tuple[object, ...]] | None] = {}
    with gc_paused():  # synchronous: the rows are fetched already
        returned = result.all()
    for found in returned:
        versions[found[0]] = found[1]
        if changes.history:
            parsed = None if found[2] is None else json.loads(found[2])
            last_history[found[0]] = None if parsed is None else (parsed[0], tuple(parsed[1:]))
    skipped = {id_ for id_ in updates if id_ not in versions}
    return _Written(
        skipped=skipped,
        applied={u.deployment_id for u in writing if u.deployment_id not in skipped},
        versions={id_: versions[id_] for id_ in updates if id_ not in skipped},
        last_history=last_history,
    )


def _timeline_values(dialect: str, src: Any) -> dict[str, Any]:
    """The SET of the open rollout's timeline columns (store.rollouts: samples appended on the row)."""
    d = deployments.c
    appending = and_(src.c.b_n > 0, src.c.open_id.isnot(None))
    mine = d.timeline_rollout_id == src.c.open_id
    base = case((mine, d.timeline_samples), else_=src.c.open_samples)
    base_count = case((mine, d.timeline_count), else_=src.c.open_count)
    whole = src.c.b_whole.isnot(None)
    if dialect == "postgresql":
        appended: Any = func.coalesce(base, cast("[]", JSONB())).op("||", return_type=JSONB())(cast(src.c.b_s1, JSONB()))
        whole_list: Any = cast(src.c.b_whole, JSONB())
    else:
        one = func.json_insert(func.coalesce(base, "[]"), "$[#]", func.json(src.c.b_s1))
        two = func.json_insert(one, "$[#]", func.json(src.c.b_s2))
        appended = case((src.c.b_n == 1, one), else_=two)
        whole_list = func.json(src.c.b_whole)
    return {
        "timeline_samples": case((~appending, d.timeline_samples), (whole, whole_list), else_=appended),
        "timeline_count": case((~appending, d.timeline_count), (whole, src.c.b_whole_count),
                               else_=func.coalesce(base_count, 0) + src.c.b_n),
        "timeline_last": case((~appending, d.timeline_last), else_=src.c.b_last),
        "timeline_rollout_id": case((~appending, d.timeline_rollout_id), else_=src.c.open_id),
    }


async def _write_policies(conn: AsyncConnection, kept: Sequence[DeploymentUpdate], now: datetime) -> None:
    """2b. Replace the policy rows of the kept updates that carry a policy (operator requests: a few at a
    time, never a cycle), each UPDATE then INSERT when the row is missing."""
    for u in kept:
        policy = u.change.policy
        if policy is UNSET:
            continue
        values = policy_values(u.deployment_id, policy, now)
        changed = await conn.execute(update(policies).where(policies.c.deployment_id == u.deployment_id).values(values))
        if changed.rowcount == 0:
            await conn.execute(insert(policies).values(values))


# ------------------------------------------------------------------------------ 3./4. routes


async def _insert_routes(conn: AsyncConnection, new_routes: Sequence[NewRoute]) -> list[str]:
    if not new_routes:
        return []
    with gc_paused():  # synchronous: builds every row of the statement
        rows = [new_route_values(r, r.id if r.id is not None else new_route_id()) for r in new_routes]
        v = _rows_as_arrays(conn, rows, {c.name: c.type for c in routes.columns})
    await conn.execute(insert(routes).from_select(list(v.c.keys()), select(*v.c)))
    return [row["id"] for row in rows]


def merge_route_updates(updates: Sequence[RouteUpdate], *, tagged: bool) -> list[tuple[RouteUpdate, dict[str, Any]]]:
    """The updates in route id order, those of one route merged: (first update, merged column values).

    Merging applies them in their order (later values win, columns named by either are written), which
    is what writing them one after the other does. With `tagged`, only updates with the same
    `deployment_id` merge: an update tagged with another deployment than the route's matches nothing,
    whatever else was sent for that route.
    """
    merged: dict[tuple[str, int | None], tuple[RouteUpdate, dict[str, Any]]] = {}
    for u in sorted(updates, key=lambda u: u.id):  # stable: updates of one route keep their order
        key = (u.id, u.deployment_id if tagged else None)
        if key in merged:
            merged[key][1].update(route_update_values(u))
        else:
            merged[key] = (u, route_update_values(u))
    return list(merged.values())


async def write_route_updates(conn: AsyncConnection, updates: Sequence[RouteUpdate], *, tagged: bool) -> None:
    """One UPDATE for any number of route updates (also used by Store.update_routes).

    With `tagged`, an update only matches its route if the route belongs to `update.deployment_id`.
    Updates of one route are merged first (`merge_route_updates`). PostgreSQL locks the routes in id
    order first (the locking CTE), so concurrent writers lock routes in the same order; on SQLite the
    one writer holds the whole database.
    """
    with gc_paused():  # synchronous: builds every row of the statement
        merged = merge_route_updates(updates, tagged=tagged)
        named = sorted({key for _, c in merged for key in c})
        if not named:
            return
        conditional = {col for col in named if not all(col in c for _, c in merged)}
        params = []
        for u, c in merged:
            p: dict[str, Any] = {"b_id": u.id}
            if tagged:
                p["b_deployment_id"] = u.deployment_id
            for col in named:
                p[f"v_{col}"] = c.get(col)
                if col in conditional:
                    p[f"s_{col}"] = col in c
            params.append(p)

        types: dict[str, TypeEngine[Any]] = {"b_id": routes.c.id.type}
        if tagged:
            types["b_deployment_id"] = Integer()
        for col in named:
            types[f"v_{col}"] = routes.c[col].type
            if col in conditional:
                types[f"s_{col}"] = Boolean()

        v = _rows_as_arrays(conn, params, types)
    match = routes.c.id == v.c.b_id
    if tagged:
        match = and_(match, routes.c.deployment_id == v.c.b_deployment_id)
    if conn.dialect.name == "postgresql":
        locked = (
            select(v).join(routes, match).order_by(v.c.b_id).with_for_update(of=routes)
            .cte("locked").prefix_with("MATERIALIZED")
        )
        source: Any = locked.c
        where = routes.c.id == locked.c.b_id
    else:  # one writer at a time holds the whole database
        source, where = v.c, match
    values: dict[str, ColumnElement[Any]] = {}
    for col in named:
        value = source[f"v_{col}"]
        values[col] = case((source[f"s_{col}"] == true(), value), else_=routes.c[col]) if col in conditional else value
    await conn.execute(update(routes).where(where).values(values))


# ------------------------------------------------------------------------------------ 5. history


async def _write_history(
    conn: AsyncConnection,
    new: Sequence[NewHistory],
    last_stored: Mapping[int, tuple[int, tuple[object, ...]] | None],
) -> tuple[int, int]:
    """Step 5: `last_stored` is each deployment's last stored row (id, merge key as stored) as the
    deployments UPDATE returned it; a deployment it lacks has none."""
    if not new:
        return 0, 0
    with gc_paused():  # synchronous: decides every row
        inserts: list[dict[str, Any]] = []
        merges: dict[int, dict[str, Any]] = {}  # stored history id -> merge params
        # The last row of each deployment so far: a stored (id, key), or the index of a pending insert.
        last: dict[int, tuple[int, tuple[object, ...]] | int | None] = dict(last_stored)
        keys: list[tuple[object, ...]] = []  # stored merge_key of each pending insert
        for h in new:
            key = history_key_values(h)
            prev = last.get(h.deployment_id)
            if isinstance(prev, int) and keys[prev] == key:
                pending = inserts[prev]
                pending.update(attempts=pending["attempts"] + 1, updated_at=h.at, error=h.error)
            elif isinstance(prev, tuple) and prev[1] == key:
                m = merges.setdefault(prev[0], {"b_id": prev[0], "b_inc": 0})
                m.update(b_inc=m["b_inc"] + 1, b_at=h.at, b_error=h.error)
            else:
                inserts.append(history_values(h))
                keys.append(key)
                last[h.deployment_id] = len(inserts) - 1

    if inserts:
        v = _rows_as_arrays(conn, inserts, {key: history.c[key].type for key in inserts[0]})
        await conn.execute(insert(history).from_select(list(v.c.keys()), select(*v.c)))
    if merges:
        types: dict[str, TypeEngine[Any]] = {
            "b_id": Integer(), "b_inc": Integer(), "b_at": history.c.updated_at.type, "b_error": history.c.error.type
        }
        v = _rows_as_arrays(conn, [merges[key] for key in sorted(merges)], types)
        await conn.execute(
            update(history)
            .where(history.c.id == v.c.b_id)
            .values(attempts=history.c.attempts + v.c.b_inc, updated_at=v.c.b_at, error=v.c.b_error)
        )
    merged = len(new) - len(inserts)
    return len(inserts), merged
