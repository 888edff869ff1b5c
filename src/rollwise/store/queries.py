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

from sqlalchemy import ColumnElement, Integer, String, TableValuedAlias, Text, any_, bindparam, cast, func, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from rollwise.store.rows import DEPLOYMENT_COLUMNS, ROUTE_COLUMNS
from rollwise.store.schema import deployments, policies, routes

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
