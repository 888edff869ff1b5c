"""The cycle's single write: a ChangeSet applied in one transaction with a fixed number of statements.

`apply_changes(conn, changes, now)` runs inside the caller's write transaction (Store.apply opens it;
SQLite: BEGIN IMMEDIATE). In order, whatever the number of deployments (id lists are bound as one
array or JSON parameter, never chunked):

1. Guard: `SELECT deployments … WHERE id IN/ANY(ids) FOR UPDATE` (row locks on PostgreSQL; SQLite's
   write lock is already held). A deployment is *kept* when its row exists, `version == expected_version`
   (when given) and `deploying_revision == swap_expected` (when given); otherwise it is *skipped* whole:
   its deployment update, new routes, route updates and history are dropped.
2. One executemany `UPDATE deployments SET <changed columns>, version = :read+1, updated_at = :now
   WHERE id = :id AND version = :read`. Rows are locked since step 1, so columns a row does not change
   are written back with the value read. The swap is SQL:
   `current_revision = CASE WHEN :swap THEN COALESCE(deploying_revision, current_revision) …`,
   `deploying_revision = CASE WHEN :swap THEN NULL …`: it can never write NULL over a serving revision.
3. One executemany INSERT of the new routes (ids generated when not given).
4. One executemany UPDATE of the routes: `col = CASE WHEN :set_col THEN :col ELSE col END` for the union
   of columns the updates name (a plain `col = :col` when all name it) `WHERE id = :id AND
   deployment_id = :deployment_id`.
5. History: one SELECT of the last row of every involved deployment, then one executemany INSERT and one
   executemany UPDATE for merges: a row whose `merge_key` equals the deployment's last row (stored, or
   new in this batch) bumps that row's `attempts` and `updated_at` (and keeps the newest `error`).

A statement is skipped when it has nothing to do, so the count depends only on which kinds of change
are present, never on how many deployments they concern (tests/store/test_apply.py counts them).

Called by: store.repository (Store.apply, update_deployment, record_history). Must not: open or commit
transactions, or catch errors (the caller translates them and the transaction rolls back whole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Integer, and_, bindparam, case, func, insert, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from rollwise.store import queries
from rollwise.store.records import (
    ApplyResult,
    ChangeSet,
    DeploymentUpdate,
    HistoryRecord,
    NewHistory,
    NewRoute,
    RouteUpdate,
    deployment_change_values,
    history_from_row,
    history_values,
    new_route_id,
    new_route_values,
    route_update_values,
)
from rollwise.store.schema import deployments, history, routes


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


async def apply_changes(conn: AsyncConnection, changes: ChangeSet, now: datetime) -> ApplyResult:
    """Apply a ChangeSet inside the caller's transaction; see the module docstring."""
    check_changes(changes)
    dialect = conn.dialect.name
    skipped, read = await _guard(conn, dialect, changes.deployments)

    applied, versions = await _update_deployments(conn, changes.deployments, skipped, read, now)

    route_ids = await _insert_routes(conn, [r for r in changes.new_routes if r.deployment_id not in skipped])
    updates = [u for u in changes.route_updates if u.deployment_id not in skipped]
    await write_route_updates(conn, updates, tagged=True)

    inserted, merged = await _write_history(conn, dialect, [h for h in changes.history if h.deployment_id not in skipped])
    return ApplyResult(
        skipped=skipped,
        applied=applied,
        versions=versions,
        route_ids=route_ids,
        routes_updated=len(updates),
        history_inserted=inserted,
        history_merged=merged,
    )


# ------------------------------------------------------------------------------------ 1. the guard


async def _guard(
    conn: AsyncConnection, dialect: str, updates: Sequence[DeploymentUpdate]
) -> tuple[set[int], dict[int, Mapping[str, Any]]]:
    """Lock and read the rows of the updated deployments; return (skipped ids, rows of kept ones)."""
    rows: dict[int, Mapping[str, Any]] = {}
    for clause in queries.id_filters(dialect, deployments.c.id, [u.deployment_id for u in updates]):
        stmt = select(deployments).where(clause).order_by(deployments.c.id).with_for_update()
        for row in (await conn.execute(stmt)).mappings():
            rows[row["id"]] = row
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

_SWAP_COLUMNS = ("current_revision", "deploying_revision")


async def _update_deployments(
    conn: AsyncConnection,
    updates: Sequence[DeploymentUpdate],
    skipped: set[int],
    read: Mapping[int, Mapping[str, Any]],
    now: datetime,
) -> tuple[set[int], dict[int, int]]:
    kept = [u for u in updates if u.deployment_id not in skipped]
    versions = {u.deployment_id: read[u.deployment_id]["version"] + (1 if u.writes else 0) for u in kept}
    writing = [u for u in kept if u.writes]
    if not writing:
        return set(), versions

    swap_any = any(u.swap_expected is not None for u in writing)
    columns = sorted({key for u in writing for key in u.changes} | (set(_SWAP_COLUMNS) if swap_any else set()))
    values: dict[str, Any] = {c: bindparam(f"v_{c}", type_=deployments.c[c].type) for c in columns}
    if swap_any:
        swap = bindparam("b_swap", type_=Boolean())
        values["current_revision"] = case(
            (swap, func.coalesce(deployments.c.deploying_revision, deployments.c.current_revision)),
            else_=bindparam("v_current_revision", type_=Integer()),
        )
        values["deploying_revision"] = case(
            (swap, null()), else_=bindparam("v_deploying_revision", type_=Integer())
        )
    values["version"] = bindparam("b_new_version", type_=Integer())
    values["updated_at"] = bindparam("b_now", type_=deployments.c.updated_at.type)
    stmt = (
        update(deployments)
        .where(deployments.c.id == bindparam("b_id"), deployments.c.version == bindparam("b_read_version"))
        .values(values)
    )

    params = []
    for u in writing:
        row = read[u.deployment_id]
        changed = deployment_change_values(u.changes)
        p: dict[str, Any] = {f"v_{c}": changed[c] if c in changed else row[c] for c in columns}
        if swap_any:
            p["b_swap"] = u.swap_expected is not None
        p.update(b_id=u.deployment_id, b_read_version=row["version"], b_new_version=row["version"] + 1, b_now=now)
        params.append(p)
    await conn.execute(stmt, params)
    return {u.deployment_id for u in writing}, versions


# ------------------------------------------------------------------------------ 3./4. routes


async def _insert_routes(conn: AsyncConnection, new_routes: Sequence[NewRoute]) -> list[str]:
    if not new_routes:
        return []
    rows = [new_route_values(r, r.id if r.id is not None else new_route_id()) for r in new_routes]
    await conn.execute(insert(routes), rows)
    return [row["id"] for row in rows]


async def write_route_updates(conn: AsyncConnection, updates: Sequence[RouteUpdate], *, tagged: bool) -> None:
    """One executemany UPDATE for any number of route updates (also used by Store.update_routes).

    With `tagged`, an update only matches its route if the route belongs to `update.deployment_id`.
    Rows are written in route id order (a stable sort: of two updates of one route the later wins), so
    concurrent writers lock routes in the same order.
    """
    updates = sorted(updates, key=lambda u: u.id)
    changes = [route_update_values(u) for u in updates]
    named = sorted({key for c in changes for key in c})
    if not named:
        return
    conditional = {col for col in named if not all(col in c for c in changes)}
    values: dict[str, ColumnElement[Any]] = {}
    for col in named:
        value = bindparam(f"v_{col}", type_=routes.c[col].type)
        if col in conditional:
            values[col] = case((bindparam(f"s_{col}", type_=Boolean()), value), else_=routes.c[col])
        else:
            values[col] = value
    where = routes.c.id == bindparam("b_id")
    if tagged:
        where = and_(where, routes.c.deployment_id == bindparam("b_deployment_id"))
    stmt = update(routes).where(where).values(values)

    params = []
    for u, c in zip(updates, changes, strict=True):
        p: dict[str, Any] = {"b_id": u.id}
        if tagged:
            p["b_deployment_id"] = u.deployment_id
        for col in named:
            p[f"v_{col}"] = c.get(col)
            if col in conditional:
                p[f"s_{col}"] = col in c
        params.append(p)
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
            row = inserts[prev]
            row.update(attempts=row["attempts"] + 1, updated_at=h.at, error=h.error)
        elif isinstance(prev, HistoryRecord) and prev.merge_key() == h.merge_key():
            m = merges.setdefault(prev.id, {"b_id": prev.id, "b_inc": 0})
            m.update(b_inc=m["b_inc"] + 1, b_at=h.at, b_error=h.error)
        else:
            inserts.append(history_values(h))
            keys.append(h.merge_key())
            last[h.deployment_id] = len(inserts) - 1

    if inserts:
        await conn.execute(insert(history), inserts)
    if merges:
        stmt = (
            update(history)
            .where(history.c.id == bindparam("b_id"))
            .values(
                attempts=history.c.attempts + bindparam("b_inc", type_=Integer()),
                updated_at=bindparam("b_at", type_=history.c.updated_at.type),
                error=bindparam("b_error", type_=history.c.error.type),
            )
        )
        await conn.execute(stmt, list(merges.values()))
    merged = len(new) - len(inserts)
    return len(inserts), merged

