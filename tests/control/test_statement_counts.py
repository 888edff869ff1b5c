"""A cycle issues a fixed number of SQL statements whatever the number of deployments (DESIGN.md, "One
evaluation cycle"): no per-deployment query or write. Counted with a `before_cursor_execute` listener
around one `run_cycle`, with every deployment in the same state so the same kinds of change are present.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from rollwise.control.cycles import CycleKind, CycleReport, run_cycle
from rollwise.model import Lifecycle

from .conftest import OpenScenario
from .harness import Scenario, revision

SIZES = (1, 10, 100)


@contextmanager
def counting(sc: Scenario) -> Iterator[list[str]]:
    statements: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        statements.append(" ".join(statement.split())[:60])

    engine = sc.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def all_ready(sc: Scenario, n: int) -> list[str]:
    names = [f"d{i}" for i in range(n)]
    for name in names:
        await sc.ops.create(name=name, replicas=3, policy={"strategy": "rolling", "max_surge": 1,
                                                           "max_unavailable": 1}, revision=revision("v1"))
    for _ in range(20):
        await sc.step()
        if all(d.lifecycle is Lifecycle.READY for d in await sc.ops.list()):
            return names
    raise AssertionError("not all deployments became ready")


async def measure(sc: Scenario, kind: CycleKind) -> tuple[list[str], CycleReport]:
    with counting(sc) as statements:
        report = await run_cycle(sc.store, kind, sc.clock.now())
    return statements, report


async def test_deploying_cycle_statements_do_not_grow_with_deployments(open_scenario: OpenScenario) -> None:
    counts = {}
    for n in SIZES:
        sc = await open_scenario()
        names = await all_ready(sc, n)
        for name in names:
            added = await sc.ops.add_revision(name, revision("v2"))
            await sc.ops.activate(name, added.number)

        statements, report = await measure(sc, CycleKind.DEPLOYING)

        # Every deployment: one new route, one terminated, its row updated, one history row.
        assert (report.deployments, report.applied, report.created_routes, report.terminated_routes) == (n, n, n, n)
        assert len({h.deployment_id for cs, _ in sc.store.applied[-1:] for h in cs.history}) == n
        counts[n] = statements
    assert len(counts[1]) == len(counts[10]) == len(counts[100]), counts
    # One read transaction of 2 queries (deployments with policies, their open rollout and their
    # revisions' facts; routes with theirs) and one write transaction: the deployments UPDATE (the
    # guard too, and the timeline's start sample this first cycle of each rollout records), the routes
    # INSERT and UPDATE, the history INSERT; with the 2 BEGINs: 8. No statement of the rollouts table.
    assert len(counts[1]) <= 8, counts[1]
    assert [s.split()[0] for s in counts[1]] == ["BEGIN", "SELECT", "SELECT", "BEGIN", "UPDATE", "INSERT", "UPDATE",
                                                 "INSERT"], counts[1]
    assert not any("rollouts" in s.split("SET")[0] for s in counts[1] if s.startswith("UPDATE")), counts[1]
    for name in names:  # the start samples were written all the same
        dep = await sc.dep(name)
        [rollout] = await sc.store.list_rollouts(dep.id)
        assert rollout.sample_count == 1


async def test_deploying_cycle_with_nothing_to_do_writes_nothing(open_scenario: OpenScenario) -> None:
    sc = await open_scenario()
    names = await all_ready(sc, 3)
    for name in names:
        added = await sc.ops.add_revision(name, revision("v2"))
        await sc.ops.activate(name, added.number)
    for _ in range(3):  # until every rollout waits for its new routes (no route pass runs here)
        if not (await run_cycle(sc.store, CycleKind.DEPLOYING, sc.clock.now())).applied:
            break

    statements, report = await measure(sc, CycleKind.DEPLOYING)

    assert (report.deployments, report.applied) == (3, 0)
    assert [s.split()[0].upper() for s in statements] == ["BEGIN", "SELECT", "SELECT"], statements  # reads only


@pytest.mark.parametrize("kind", [CycleKind.CHECK_REPLICAS])
async def test_replica_cycle_statements_do_not_grow_with_deployments(
    open_scenario: OpenScenario, kind: CycleKind
) -> None:
    counts = {}
    for n in SIZES:
        sc = await open_scenario()
        names = await all_ready(sc, n)
        for name in names:  # one crashed route in each
            dep = await sc.dep(name)
            sc.runtime.crash((await sc.store.list_routes([dep.id]))[0].id)
        await sc.coord.routes.reconcile()
        sc.clock.advance(1.0)  # the crash-loop back-off's first second: the replacements are due now

        statements, report = await measure(sc, kind)

        assert (report.deployments, report.applied, report.created_routes) == (n, n, n)
        counts[n] = statements
    assert len(counts[1]) == len(counts[10]) == len(counts[100]), counts
