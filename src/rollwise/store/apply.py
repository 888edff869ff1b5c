"""The cycle's single write: a ChangeSet applied in one transaction with a fixed number of statements.

`apply_changes(conn, changes, now)` runs inside the caller's write transaction (Store.apply opens it;
SQLite: BEGIN IMMEDIATE). In order, whatever the number of deployments (id lists are bound as one
array or JSON parameter, never chunked):

1. Guard: `SELECT deployments … WHERE id IN/ANY(ids) FOR UPDATE` (row locks on PostgreSQL; SQLite's
   write lock is already held). A deployment is *kept* when its row exists, `version == expected_version`
   (when given) and `deploying_revision == swap_expected` (when given); otherwise it is *skipped* whole:
   its deployment update, new routes, route updates and history are dropped.
2. One `UPDATE deployments SET <changed columns>, version = :read+1, updated_at = :now
   WHERE id = :id AND version = :read`. Rows are locked since step 1, so columns a row does not change
   are written back with the value read. The swap is SQL:
   `current_revision = CASE WHEN :swap THEN COALESCE(deploying_revision, current_revision) …`,
   `deploying_revision = CASE WHEN :swap THEN NULL …`: it can never write NULL over a serving revision.
   2b. The policy row of each update that carries a policy (operator requests only; a cycle never
   changes a policy, so its statement count does not move).
3. One INSERT of the new routes (ids generated when not given).
4. One UPDATE of the routes: `col = CASE WHEN :set_col THEN :col ELSE col END` for the union of columns
   the updates name (a plain `col = :col` when all name it) `WHERE id = :id AND deployment_id =
   :deployment_id`. Updates of the same route (and tag) are merged first, in ChangeSet order: later
   fields win, exactly as applying them one after the other.
5. History: one SELECT of the last row of every involved deployment, then one INSERT and one UPDATE for
   merges: a row whose `merge_key` equals the deployment's last row (stored, or new in this batch)
   bumps that row's `attempts` and `updated_at` (and keeps the newest `error`).
6. Rollouts (store.rollouts): one UPDATE of the open rollouts that append timeline samples or end;
   rollouts that start: one UPDATE ending what is still open, one INSERT.

How the rows of steps 2-5 travel (`_write_rows`): on PostgreSQL as ONE execution per statement, every
column bound as one array and expanded by `unnest` (`UPDATE … FROM unnest(:ids, :read_versions, …) AS
v(…) WHERE id = v.id …`, `INSERT … SELECT … FROM unnest(…)`); asyncpg runs an executemany as one
execution per row (~0.6 s of a 10,000-deployment cycle). The route UPDATE first locks its routes in id
order (a `MATERIALIZED` CTE with `ORDER BY id FOR UPDATE`), as the executemany did row by row, so
concurrent writers lock routes in the same order whatever plan PostgreSQL picks. On SQLite an
executemany (one prepared statement stepped per row, no round trips).

A statement is skipped when it has nothing to do, so the count depends only on which kinds of change
are present, never on how many deployments they concern (tests/store/test_store_apply.py counts them).

Called by: store.repository (Store.apply). Must not: open or commit
transactions, or catch errors (the caller translates them and the transaction rolls back whole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Integer, and_, bindparam, case, func, insert, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from rollwise.store import queries
from rollwise.store.commands import (
    UNSET,
    ApplyResult,
    ChangeSet,
    DeploymentUpdate,
    NewHistory,
    NewRoute,
    RouteUpdate,
    new_route_id,
)
from rollwise.store.records import HistoryRecord
from rollwise.store.rollouts import write_rollouts
from rollwise.store.rows import (
    deployment_change_values,
    history_from_row,
    history_values,
    new_route_values,
    policy_values,
    route_update_values,
)
from rollwise.store.schema import deployments, history, policies, routes


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
    dialect = conn.dialect.name
    columns, read_back = _deployment_columns(changes.deployments)
    skipped, read = await _guard(conn, dialect, changes.deployments, read_back)

    applied, versions = await _update_deployments(conn, changes.deployments, skipped, read, columns, now)
    await _write_policies(conn, [u for u in changes.deployments if u.deployment_id not in skipped], now)

    route_ids = await _insert_routes(conn, [r for r in changes.new_routes if r.deployment_id not in skipped])
    updates = [u for u in changes.route_updates if u.deployment_id not in skipped]
    await write_route_updates(conn, updates, tagged=True)

    inserted, merged = await _write_history(conn, dialect, [h for h in changes.history if h.deployment_id not in skipped])
    await write_rollouts(
        conn,
        [u for u in changes.rollout_updates if u.deployment_id not in skipped],
        [r for r in changes.new_rollouts if r.deployment_id not in skipped],
    )
    return ApplyResult(
        skipped=skipped,
        applied=applied,
        versions=versions,
        route_ids=route_ids,
        routes_updated=len(updates),
        history_inserted=inserted,
        history_merged=merged,
    )


def _set_based(conn: AsyncConnection) -> bool:
    """True when rows go as arrays through `unnest` (PostgreSQL), False for an executemany (SQLite)."""
    return conn.dialect.name == "postgresql"


def _rows_as_arrays(
    rows: Sequence[Mapping[str, Any]], types: Mapping[str, TypeEngine[Any]], name: str = "v"
) -> Any:
    """`unnest(…) AS name(…)` over `rows`: one array parameter per key of `types` (PostgreSQL)."""
    arrays = queries.column_arrays(rows, types)
    return queries.unnest_rows(name, {key: (type_, arrays[key]) for key, type_ in types.items()})


# ------------------------------------------------------------------------------------ 1. the guard


_SWAP_COLUMNS = ("current_revision", "deploying_revision")
_GUARD_COLUMNS = ("id", "version", "deploying_revision")


def _deployment_columns(updates: Sequence[DeploymentUpdate]) -> tuple[list[str], list[str]]:
    """(columns the deployment UPDATE writes, those of them the guard must read back).

    The UPDATE writes the union of the columns the updates change (and both swap columns when one of
    them swaps); a row that does not change one of them writes back the value the guard read, so only
    a column some update leaves alone needs reading. Computed over every writing update, skipped or not
    (the guard has not run yet): a superset is harmless.
    """
    writing = [u for u in updates if u.writes]
    swap_any = any(u.swap_expected is not None for u in writing)
    columns = sorted({key for u in writing for key in u.changes} | (set(_SWAP_COLUMNS) if swap_any else set()))
    read_back = [c for c in columns if not all(c in u.changes for u in writing)]
    return columns, read_back


async def _guard(
    conn: AsyncConnection, dialect: str, updates: Sequence[DeploymentUpdate], read_back: Sequence[str]
) -> tuple[set[int], dict[int, Mapping[str, Any]]]:
    """Lock and read the rows of the updated deployments; return (skipped ids, rows of kept ones).

    A row read holds `_GUARD_COLUMNS` and `read_back` (not the whole row: a cycle reads 10,000).
    """
    rows: dict[int, Mapping[str, Any]] = {}
    selected = [deployments.c[c] for c in dict.fromkeys([*_GUARD_COLUMNS, *read_back])]
    for clause in queries.id_filters(dialect, deployments.c.id, [u.deployment_id for u in updates]):
        stmt = select(*selected).where(clause).order_by(deployments.c.id).with_for_update()
        for locked in (await conn.execute(stmt)).mappings():
            rows[locked["id"]] = dict(locked)
    skipped: set[int] = set()
    for u in updates:
        row = rows.get(u.deployment_id)
        if (
            row is None
            or (u.expected_version is not None and row["version"] != u.expected_version)
            or (u.swap_expected is not None and row["deploying_revision"] != u.swap_expected)
        ):
            skipped.add(u.deployment_id)
            rows.pop(u.deployment_id, None)
    return skipped, rows


# ------------------------------------------------------------------------- 2. deployment updates

async def _update_deployments(
    conn: AsyncConnection,
    updates: Sequence[DeploymentUpdate],
    skipped: set[int],
    read: Mapping[int, Mapping[str, Any]],
    columns: Sequence[str],
    now: datetime,
) -> tuple[set[int], dict[int, int]]:
    kept = [u for u in updates if u.deployment_id not in skipped]
    versions = {u.deployment_id: read[u.deployment_id]["version"] + (1 if u.writes else 0) for u in kept}
    writing = [u for u in kept if u.writes]
    if not writing:
        return set(), versions

    swap_any = any(u.swap_expected is not None for u in writing)
    params = []
    for u in writing:
        row = read[u.deployment_id]
        changed = deployment_change_values(u.changes)
        p: dict[str, Any] = {f"v_{c}": changed[c] if c in changed else row[c] for c in columns}
        if swap_any:
            p["b_swap"] = u.swap_expected is not None
        p.update(b_id=u.deployment_id, b_read_version=row["version"])
        params.append(p)

    # One row per deployment: the bound values of row `p` are `p[key]` (`v.<key>` on PostgreSQL).
    types: dict[str, TypeEngine[Any]] = {f"v_{c}": deployments.c[c].type for c in columns}
    if swap_any:
        types["b_swap"] = Boolean()
    types.update(b_id=Integer(), b_read_version=Integer())
    set_based = _set_based(conn)
    v = _rows_as_arrays(params, types) if set_based else None

    def value(key: str) -> ColumnElement[Any]:
        return v.c[key] if v is not None else bindparam(key, type_=types[key])

    values: dict[str, Any] = {c: value(f"v_{c}") for c in columns}
    if swap_any:
        swap = value("b_swap")
        values["current_revision"] = case(
            (swap, func.coalesce(deployments.c.deploying_revision, deployments.c.current_revision)),
            else_=value("v_current_revision"),
        )
        values["deploying_revision"] = case((swap, null()), else_=value("v_deploying_revision"))
    values["version"] = value("b_read_version") + 1
    values["updated_at"] = bindparam("b_now", now, type_=deployments.c.updated_at.type)
    stmt = (
        update(deployments)
        .where(deployments.c.id == value("b_id"), deployments.c.version == value("b_read_version"))
        .values(values)
    )
    if set_based:
        await conn.execute(stmt)
    else:
        await conn.execute(stmt, params)
    return {u.deployment_id for u in writing}, versions


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
    rows = [new_route_values(r, r.id if r.id is not None else new_route_id()) for r in new_routes]
    if _set_based(conn):
        v = _rows_as_arrays(rows, {c.name: c.type for c in routes.columns})
        await conn.execute(insert(routes).from_select(list(v.c.keys()), select(*v.c)))
    else:
        await conn.execute(insert(routes), rows)
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
    Updates of one route are merged first (`merge_route_updates`). Routes are locked in id order
    (executemany: rows in id order; PostgreSQL: the locking CTE), so concurrent writers lock routes in
    the same order.
    """
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

    if _set_based(conn):
        v = _rows_as_arrays(params, types)
        match = routes.c.id == v.c.b_id
        if tagged:
            match = and_(match, routes.c.deployment_id == v.c.b_deployment_id)
        locked = (
            select(v).join(routes, match).order_by(v.c.b_id).with_for_update(of=routes)
            .cte("locked").prefix_with("MATERIALIZED")
        )
        source: Any = locked.c
        where = routes.c.id == locked.c.b_id
    else:
        source = {key: bindparam(key, type_=type_) for key, type_ in types.items()}
        where = routes.c.id == source["b_id"]
        if tagged:
            where = and_(where, routes.c.deployment_id == source["b_deployment_id"])
    values: dict[str, ColumnElement[Any]] = {}
    for col in named:
        value = source[f"v_{col}"]
        values[col] = case((source[f"s_{col}"], value), else_=routes.c[col]) if col in conditional else value
    stmt = update(routes).where(where).values(values)
    if _set_based(conn):
        await conn.execute(stmt)
    else:
        await conn.execute(stmt, params)


# ------------------------------------------------------------------------------------ 5. history


async def _write_history(conn: AsyncConnection, dialect: str, new: Sequence[NewHistory]) -> tuple[int, int]:
    if not new:
        return 0, 0
    last_stored: dict[int, HistoryRecord] = {}
    for clause in queries.id_filters(dialect, history.c.deployment_id, [h.deployment_id for h in new]):
        newest = select(func.max(history.c.id)).where(clause).group_by(history.c.deployment_id)
        for row in (await conn.execute(select(history).where(history.c.id.in_(newest)))).mappings():
            last_stored[row["deployment_id"]] = history_from_row(row)

    inserts: list[dict[str, Any]] = []
    merges: dict[int, dict[str, Any]] = {}  # stored history id -> merge params
    # The last row of each deployment so far: a stored record, or the index of a pending insert.
    last: dict[int, HistoryRecord | int] = dict(last_stored)
    keys: list[tuple[object, ...]] = []  # merge_key of each pending insert
    for h in new:
        prev = last.get(h.deployment_id)
        if isinstance(prev, int) and keys[prev] == h.merge_key():
            pending = inserts[prev]
            pending.update(attempts=pending["attempts"] + 1, updated_at=h.at, error=h.error)
        elif isinstance(prev, HistoryRecord) and prev.merge_key() == h.merge_key():
            m = merges.setdefault(prev.id, {"b_id": prev.id, "b_inc": 0})
            m.update(b_inc=m["b_inc"] + 1, b_at=h.at, b_error=h.error)
        else:
            inserts.append(history_values(h))
            keys.append(h.merge_key())
            last[h.deployment_id] = len(inserts) - 1

    set_based = _set_based(conn)
    if inserts:
        if set_based:
            v = _rows_as_arrays(inserts, {key: history.c[key].type for key in inserts[0]})
            await conn.execute(insert(history).from_select(list(v.c.keys()), select(*v.c)))
        else:
            await conn.execute(insert(history), inserts)
    if merges:
        types: dict[str, TypeEngine[Any]] = {
            "b_id": Integer(), "b_inc": Integer(), "b_at": history.c.updated_at.type, "b_error": history.c.error.type
        }
        rows = [merges[key] for key in sorted(merges)]
        v = _rows_as_arrays(rows, types) if set_based else None
        source: Any = v.c if v is not None else {key: bindparam(key, type_=t) for key, t in types.items()}
        stmt = (
            update(history)
            .where(history.c.id == source["b_id"])
            .values(attempts=history.c.attempts + source["b_inc"], updated_at=source["b_at"], error=source["b_error"])
        )
        if set_based:
            await conn.execute(stmt)
        else:
            await conn.execute(stmt, rows)
    merged = len(new) - len(inserts)
    return len(inserts), merged
