"""Set-based filters that stay under the drivers' parameter limits, and shared SELECTs.

SQLite accepts at most 32,766 parameters per statement and asyncpg 32,767, so an `IN (...)` over an
unbounded id list must be split:
- PostgreSQL: one array parameter, `column = ANY(:ids)`, whatever the number of ids (also faster than
  IN: docs/field notes measured 0.18 s vs 0.32 s for 10,000 deployments).
- SQLite: one JSON text parameter expanded by `json_each`: `column IN (SELECT value FROM
  json_each(:ids))`, whatever the number of ids (binding 40,000 separate parameters cost SQLAlchemy
  more than the query itself).
Pairs (`(deployment_id, number) IN (...)`): two arrays through `unnest` on PostgreSQL; on SQLite one
JSON array of [a, b] pairs through `json_each`.
Rows to write (store.apply, PostgreSQL): `column_arrays` turns row dicts into one list per column and
`unnest_rows` binds each list as one array parameter, `unnest(:a, :b, …) AS v(a, b, …)`, for
`INSERT … SELECT` and `UPDATE … FROM`.

Called by: store.repository and store.apply. Must not: execute anything (it builds clauses).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    Dialect,
    FromClause,
    Integer,
    String,
    TableValuedAlias,
    Text,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from rollwise.store.rows import DEPLOYMENT_COLUMNS, ROUTE_COLUMNS
from rollwise.store.schema import deployments, policies, revisions, routes

def id_filters(dialect: str, column: ColumnElement[Any], ids: Collection[int]) -> Iterator[ColumnElement[bool]]:
    """WHERE clauses that together select `column IN ids` (integer ids); one per statement to run.

    Yields nothing for an empty collection (the caller then has nothing to ask).
    """
    values = sorted(set(ids))
    if not values:
        return
    if dialect == "postgresql":
        yield column == any_(bindparam(None, values, type_=ARRAY(Integer())))
        return
    each = func.json_each(bindparam(None, json.dumps(values), type_=String())).table_valued("value")
    yield column.in_(select(each.c.value))


def pair_filters(
    dialect: str, first: ColumnElement[Any], second: ColumnElement[Any], pairs: Collection[tuple[int, int]]
) -> Iterator[ColumnElement[bool]]:
    """WHERE clauses that together select `(first, second) IN pairs`.

    PostgreSQL: one clause, `(first, second) IN (SELECT a, b FROM unnest(:firsts, :seconds))` with two
    array parameters (a long tuple IN list overflows PostgreSQL's parser stack near 10,000 pairs).
    SQLite: one JSON array of pairs, `(first, second) IN (SELECT json_extract(value, '$[0]'), …)`.
    """
    values = sorted(set(pairs))
    if not values:
        return
    if dialect == "postgresql":
        firsts = bindparam(None, [a for a, _ in values], type_=ARRAY(Integer()))
        seconds = bindparam(None, [b for _, b in values], type_=ARRAY(Integer()))
        table = func.unnest(firsts, seconds).table_valued("a", "b").render_derived()
        yield tuple_(first, second).in_(select(table.c.a, table.c.b))
        return
    each = func.json_each(bindparam(None, json.dumps(values), type_=String())).table_valued("value")
    yield tuple_(first, second).in_(
        select(func.json_extract(each.c.value, "$[0]"), func.json_extract(each.c.value, "$[1]"))
    )


def column_arrays(rows: Sequence[Mapping[str, Any]], names: Iterable[str]) -> dict[str, list[Any]]:
    """The rows as one list per column: `{name: [row[name] for row in rows]}` for every name.

    Every row must hold every name (None is a value: it becomes NULL). The lists keep the rows' order,
    so element i of every list belongs to row i; bound as arrays and expanded by `unnest_rows`, they
    give back the rows.
    """
    return {name: [row[name] for row in rows] for name in names}


def unnest_rows(
    name: str, columns: Mapping[str, tuple[TypeEngine[Any], Sequence[Any]]]
) -> TableValuedAlias:
    """PostgreSQL: `unnest(:c1, :c2, …) AS name(c1, c2, …)`, one array parameter per column.

    `columns` maps a column name to (element type, values); all value lists have the same length.
    Each array is bound with its element type (`$1::INTEGER[]`, `$2::TIMESTAMP WITH TIME ZONE[]`,
    …; the type's bind processing applies to every element), so the columns of the result are typed.
    unnest expands the arrays side by side: row i holds element i of every array, NULLs included.
    """
    arrays = [bindparam(None, list(values), type_=ARRAY(type_)) for type_, values in columns.values()]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name)


def rows_source(
    dialect: Dialect, name: str, columns: Mapping[str, tuple[TypeEngine[Any], Sequence[Any]]]
) -> FromClause:
    """Rows bound as ONE parameter set per statement, as a FROM source with one column per key.

    PostgreSQL: `unnest_rows` (one array per column). SQLite: ONE JSON text parameter, an array of
    rows, expanded by `json_each` (`SELECT json_extract(value, '$[0]') AS a, … FROM json_each(:rows)`):
    a set-based statement (`UPDATE … FROM`, `INSERT … SELECT`, with RETURNING) instead of an
    executemany, which can return no rows. Each value first goes through its type's bind processing for
    this dialect (datetimes as SQLAlchemy's DATETIME text, booleans as 0/1, JSON values as their JSON
    text), so the values stored are those an executemany would have stored.
    """
    if dialect.name == "postgresql":
        return unnest_rows(name, columns)
    arrays = []
    for type_, values in columns.values():
        process = type_._cached_bind_processor(dialect)
        arrays.append([process(value) for value in values] if process is not None else values)
    rows = [list(row) for row in zip(*arrays, strict=True)]
    each = func.json_each(bindparam(None, json.dumps(rows, separators=(",", ":")), type_=String())).table_valued(
        "value"
    )
    return select(*(
        type_coerce(func.json_extract(each.c.value, literal_column(f"'$[{i}]'")), type_).label(key)
        for i, (key, (type_, _)) in enumerate(columns.items())
    )).select_from(each).subquery(name)


def json_has_value(dialect: str, column: ColumnElement[Any]) -> ColumnElement[bool]:
    """True when a JSON column holds a value: neither SQL NULL nor JSON `null`.

    SQLAlchemy's JSON type stores Python None as the JSON text `null` (not SQL NULL), so `IS NOT NULL`
    alone would count a revision without a health check as having one.
    """
    typeof = func.jsonb_typeof(column) if dialect == "postgresql" else func.json_type(column)
    return func.coalesce(typeof, "null") != "null"


DEPLOYMENT_SELECT = select(
    *(deployments.c[name] for name in DEPLOYMENT_COLUMNS),
    # The policy as its JSON text, not decoded: records.deployment_from_row validates each distinct
    # text once (a cycle's 10,000 deployments usually share a few policies).
    cast(policies.c.document, Text()).label("policy_document"),
).select_from(deployments.outerjoin(policies, policies.c.deployment_id == deployments.c.id))
"""Deployments with their policy document, for `deployment_from_row` (positional rows): ONE query for
any number of deployments."""

ROUTE_SELECT = select(*(routes.c[name] for name in ROUTE_COLUMNS))
"""Routes, for `route_from_row` (positional rows)."""


FACT_COLUMNS = 3
"""The columns `with_revision_facts` adds: the revision's number (NULL: no such revision), whether it
has a health check, its `resources`."""


def with_revision_facts(
    dialect: str, stmt: Select[Any], deployment_id: ColumnElement[Any], number: ColumnElement[Any], name: str
) -> Select[Any]:
    """`stmt` with the revision (`deployment_id`, `number`) joined: FACT_COLUMNS more columns, what the
    lifecycle cycles need of a revision without its big JSON columns (command, env, health check)."""
    rev = revisions.alias(name)
    return stmt.outerjoin(rev, and_(rev.c.deployment_id == deployment_id, rev.c.number == number)).add_columns(
        # `resources` as its JSON text: mostly the text `null`, which rows.add_revision_facts skips
        # without decoding (a cycle reads it once per route).
        rev.c.number, json_has_value(dialect, rev.c.health_check), cast(rev.c.resources, Text())
    )


def cycle_selects(
    dialect: str, lifecycle: str, *, with_routes: bool, facts: bool, marks: Any = None,
    ids: Collection[int] | None = None, after: int | None = None, limit: int | None = None,
) -> tuple[Select[Any], Select[Any] | None]:
    """The SELECTs of `Store.read_cycle`: the deployments in `lifecycle` (by id; `marks`: a function
    adding their open rollouts' columns, store.rollouts.with_marks), then their routes (ordered like
    `Store.list_routes`; None without `with_routes`). With `facts`, each deployment row ends with the
    facts of its serving and of its deploying revision, each route row with those of its revision.
    `ids`: only those deployments. `after`, `limit`: a page of them (ids above `after`, at most
    `limit`; the routes are those of the same page)."""
    chosen = [deployments.c.lifecycle == lifecycle]
    if ids is not None:
        chosen += list(id_filters(dialect, deployments.c.id, ids)) or [deployments.c.id.is_(None)]
    if after is not None:
        chosen.append(deployments.c.id > after)
    deps: Select[Any] = DEPLOYMENT_SELECT.where(*chosen).order_by(deployments.c.id)
    if limit is not None:
        page = select(deployments.c.id).where(*chosen).order_by(deployments.c.id).limit(limit).subquery()
        deps = deps.limit(limit)
        chosen.append(deployments.c.id <= select(func.max(page.c.id)).scalar_subquery())
    if marks is not None:
        deps = marks(deps)
    if facts:
        deps = with_revision_facts(dialect, deps, deployments.c.id, deployments.c.current_revision, "rev_current")
        deps = with_revision_facts(dialect, deps, deployments.c.id, deployments.c.deploying_revision, "rev_deploying")
    if not with_routes:
        return deps, None
    found: Select[Any] = ROUTE_SELECT.join(deployments, deployments.c.id == routes.c.deployment_id).where(*chosen).order_by(routes.c.deployment_id, routes.c.created_at, routes.c.id)
    if facts:
        found = with_revision_facts(dialect, found, routes.c.deployment_id, routes.c.revision, "rev_route")
    return deps, found
