"""How one deploying cycle scales with the number of deployments, against a one-at-a-time baseline.

For each size N, N DEPLOYING deployments are written straight into a fresh database, every one mid-way
through the same rolling update (D=3, max_surge 2, max_unavailable 1; routes: 3 ready of revision 1
and 1 provisioning of revision 2). Then ONE full deploying cycle runs — `run_cycle(store,
CycleKind.DEPLOYING, now)`: load, evaluate, apply — and is timed, with its SQL statements counted.
Each deployment's decision is the same: create 1 route, terminate 1, update its row, 1 history row;
so the cycle writes N new routes, N route updates, N deployment updates and N history rows, and appends
N timeline samples (each rollout's first: its row is as the activation left it).

Then, on the state that cycle left, the cycles as the coordinator runs them (not compared with the
naive run): one over a single deployment (`only={id}`: what one deployment's route becoming ready
triggers, control.coordinator.CycleWatch) and a sweep over all of them a page of `SWEEP_PAGE` at a
time (`one_deployment_seconds` / `_statements`, `sweep_seconds`, `sweep_pages`,
`sweep_page_max_seconds`: how long the loop is held at most).

With `--naive` the same work also runs one deployment at a time, on a second database built the same
way: per deployment `get_deployment`, `list_routes([id])`, `health_check_flags`, the same pure rule
(`compute_deploying_outcome`) and its own `Store.apply` transaction. Both runs must end in the same
database state (checked), so the comparison is like for like.

    .venv/bin/python benchmarks/evaluator_scale.py --sizes 100,1000,10000 [--naive]
        [--database postgresql+asyncpg://postgres@127.0.0.1:5432/test] [--profile]

Default database: a temporary SQLite file per run. PostgreSQL: each run gets a fresh schema, dropped
afterwards. Setup time is not measured. A human table is printed, then, as the LAST line, JSON:
{"results": [{"deployments", "routes", "seconds_per_cycle", "statements_per_cycle",
"naive_seconds_per_cycle", "one_deployment_seconds", ...}]} (naive null when not run).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select, text

from rollwise.control.coordinator import SWEEP_PAGE
from rollwise.control.cycles import CycleKind, run_cycle
from rollwise.control.rules.deploying import compute_deploying_outcome
from rollwise.control.rules.outcome import gather
from rollwise.model import Health, Lifecycle, Mode, Policy, RouteStatus, StrategyName, SubStep, Traffic
from rollwise.store import ChangeSet, NewRoute, RevisionSpec, Store
from rollwise.store.rows import revision_values
from rollwise.store.schema import deployments, history, policies, revisions, rollouts, routes

REPLICAS = 3
POLICY = Policy(strategy=StrategyName.ROLLING, max_surge=2, max_unavailable=1)
ROUTES_PER_DEPLOYMENT = 4
BATCH = 5_000
"""Rows per bulk INSERT during setup (keeps every statement far below the drivers' parameter limits)."""

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(seconds=30)


def revision_spec(label: str) -> RevisionSpec:
    return RevisionSpec(
        command=("model-server", "--version", label),
        health_check={"path": "/healthz", "interval_seconds": 1.0, "healthy_threshold": 1, "unhealthy_threshold": 3},
        label=label,
    )


# ------------------------------------------------------------------------------------------- setup


@dataclass
class Database:
    url: str
    schema: str | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None

    async def open(self) -> Store:
        return await Store.open(self.url, schema=self.schema)

    async def drop(self, store: Store) -> None:
        if self.schema is not None:
            async with store.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        if self.tmp is not None:
            self.tmp.cleanup()


def fresh_database(url: str | None) -> Database:
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="rollwise-bench-")
        return Database(f"sqlite+aiosqlite:///{Path(tmp.name) / 'bench.db'}", tmp=tmp)
    if url.startswith("postgresql"):
        return Database(url, schema=f"rw_bench_{uuid.uuid4().hex[:10]}")
    return Database(url)


def chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), BATCH):
        yield rows[i : i + BATCH]


async def build_state(store: Store, n: int) -> None:
    """N deployments mid-rollout: deployments, policies and revisions by bulk INSERT (one transaction),
    then the routes through `Store.apply` (one ChangeSet, one transaction)."""
    dep_rows = [
        {
            "name": f"bench-{i:05d}",
            "replicas": REPLICAS,
            "lifecycle": Lifecycle.DEPLOYING.value,
            "sub_step": SubStep.PROVISIONING.value,
            "mode": Mode.FORWARD.value,
            "current_revision": 1,
            "deploying_revision": 2,
            "paused": False,
            "abort_requested": False,
            "promote_requested": False,
            "rollout_started_at": T0,
            "last_progress_at": T0,
            "error_count": 0,
            "version": 1,
            "created_at": T0,
            "updated_at": T0,
        }
        for i in range(n)
    ]
    async with store.engine.begin() as conn:
        for part in chunks(dep_rows):
            await conn.execute(insert(deployments), part)
        ids = list((await conn.execute(select(deployments.c.id).order_by(deployments.c.id))).scalars())
        document = POLICY.to_json()
        pol_rows = [{"deployment_id": d, "strategy": POLICY.strategy.value, "document": document, "updated_at": T0}
                    for d in ids]
        for part in chunks(pol_rows):
            await conn.execute(insert(policies), part)
        v1, v2 = revision_spec("v1"), revision_spec("v2")
        rev_rows = [revision_values(d, number, spec, T0) for d in ids for number, spec in ((1, v1), (2, v2))]
        for part in chunks(rev_rows):
            await conn.execute(insert(revisions), part)
        # Each rollout's row as its activation leaves it (no sample yet): the cycle appends its first
        # timeline sample, as a cycle that sees a change does (docs/control.md, "Rollout timeline").
        rollout_rows = [{"deployment_id": d, "from_revision": 1, "to_revision": 2, "strategy": POLICY.strategy.value,
                         "started_at": T0, "ended_at": None, "outcome": "in_progress", "samples": [],
                         "sample_count": 0, "last_sample": None} for d in ids]
        for part in chunks(rollout_rows):
            await conn.execute(insert(rollouts), part)

    new_routes = []
    for d in ids:
        for k in range(REPLICAS):
            new_routes.append(NewRoute(deployment_id=d, revision=1, status=RouteStatus.RUNNING,
                                       health=Health.HEALTHY, created_at=T0 - timedelta(seconds=60 - k)))
        new_routes.append(NewRoute(deployment_id=d, revision=2, status=RouteStatus.PROVISIONING,
                                   health=Health.NOT_CHECKED, traffic=Traffic.ACTIVE, created_at=T0))
    for i in range(0, len(new_routes), 4 * BATCH):
        await store.apply(ChangeSet(new_routes=new_routes[i : i + 4 * BATCH]), T0)


async def summary(store: Store) -> dict[str, Any]:
    """What a cycle changed, to check that the cycle and the baseline did the same work."""
    async with store.engine.connect() as conn:
        by_status = dict(tuple(row) for row in (await conn.execute(
            select(routes.c.status, func.count()).group_by(routes.c.status))).all())
        versions = dict(tuple(row) for row in (await conn.execute(
            select(deployments.c.version, func.count()).group_by(deployments.c.version))).all())
        rows = (await conn.execute(select(func.count()).select_from(history))).scalar_one()
    return {"routes_by_status": by_status, "deployment_versions": versions, "history_rows": rows}


# ------------------------------------------------------------------------------------------ the runs


@contextmanager
def counting(store: Store) -> Iterator[list[str]]:
    statements: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", before)


async def one_cycle(store: Store, profile: bool) -> tuple[float, int, str]:
    profiler = cProfile.Profile() if profile else None
    with counting(store) as statements:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        report = await run_cycle(store, CycleKind.DEPLOYING, NOW)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
    n = report.deployments
    if (report.applied, report.created_routes, report.terminated_routes, report.errors) != (n, n, n, {}):
        raise RuntimeError(f"unexpected cycle: {report}")
    profile_text = ""
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        profile_text = out.getvalue()
    return seconds, len(statements), profile_text


async def naive_cycle(store: Store) -> tuple[float, int]:
    """The same decisions, one deployment at a time: its own reads and its own transaction."""
    written = 0
    started = time.perf_counter()
    names = [d.name for d in await store.list_deployments([Lifecycle.DEPLOYING])]
    for name in names:
        dep = await store.get_deployment(name)
        assert dep is not None
        dep_routes = await store.list_routes([dep.id])
        checks = await store.health_check_flags({(r.deployment_id, r.revision) for r in dep_routes})
        changes = gather([compute_deploying_outcome(dep, dep_routes, checks, NOW)])
        if not changes.is_empty:
            await store.apply(changes, NOW)
            written += 1
    return time.perf_counter() - started, written


async def measure(n: int, database: str | None, naive: bool, profile: bool) -> dict[str, Any]:
    db = fresh_database(database)
    store = await db.open()
    try:
        t = time.perf_counter()
        await build_state(store, n)
        setup = time.perf_counter() - t
        seconds, statements, profile_text = await one_cycle(store, profile)
        after_cycle = await summary(store)
        as_run = await coordinator_cycles(store)
    finally:
        await db.drop(store)
        await store.close()
    if profile_text:
        print(f"--- cProfile of one cycle, {n} deployments ---\n{profile_text}", file=sys.stderr)

    naive_seconds = None
    if naive:
        db = fresh_database(database)
        store = await db.open()
        try:
            await build_state(store, n)
            naive_seconds, written = await naive_cycle(store)
            after_naive = await summary(store)
        finally:
            await db.drop(store)
            await store.close()
        if written != n or after_naive != after_cycle:
            raise RuntimeError(f"the baseline did other work: {after_naive} != {after_cycle}")
    return {
        "deployments": n,
        "routes": n * ROUTES_PER_DEPLOYMENT,
        "seconds_per_cycle": round(seconds, 4),
        "statements_per_cycle": statements,
        "naive_seconds_per_cycle": None if naive_seconds is None else round(naive_seconds, 4),
        **as_run,
        "setup_seconds": round(setup, 2),
    }


async def coordinator_cycles(store: Store) -> dict[str, Any]:
    """The cycles as the coordinator runs them, on the state the full cycle left: over ONE deployment
    (what its route becoming ready triggers: control.coordinator.CycleWatch), and a sweep over all of
    them a page of SWEEP_PAGE at a time (each page read, decided and written on its own)."""
    first = min(d.id for d in await store.list_deployments([Lifecycle.DEPLOYING], limit=1))
    with counting(store) as statements:
        t = time.perf_counter()
        report = await run_cycle(store, CycleKind.DEPLOYING, NOW, only={first})
        one = time.perf_counter() - t
    if report.deployments != 1:
        raise RuntimeError(f"the cycle over one deployment read {report.deployments}")
    pages: list[float] = []
    after: int | None = None
    while True:
        t = time.perf_counter()
        report = await run_cycle(store, CycleKind.DEPLOYING, NOW, after=after, limit=SWEEP_PAGE)
        pages.append(time.perf_counter() - t)
        if report.deployments < SWEEP_PAGE:
            break
        after = max(report.evaluated)
    return {"one_deployment_seconds": round(one, 4), "one_deployment_statements": len(statements),
            "sweep_seconds": round(sum(pages), 3), "sweep_pages": len(pages),
            "sweep_page_max_seconds": round(max(pages), 4)}


def table(results: list[dict[str, Any]], backend: str) -> str:
    lines = [
        f"deploying cycle on {backend}: D={REPLICAS}, rolling surge 2 / unavailable 1, "
        f"{ROUTES_PER_DEPLOYMENT} routes per deployment",
        f"{'deployments':>11} {'routes':>7} {'cycle s':>9} {'statements':>10} {'naive s':>9} {'speed-up':>8}"
        f" {'one dep. s':>10} {'statements':>10} {'sweep s':>8} {'max page s':>10}",
    ]
    for r in results:
        naive = r["naive_seconds_per_cycle"]
        speedup = f"{naive / r['seconds_per_cycle']:.1f}x" if naive else "-"
        naive_s = f"{naive:.3f}" if naive else "-"
        lines.append(f"{r['deployments']:>11} {r['routes']:>7} {r['seconds_per_cycle']:>9.3f} "
                     f"{r['statements_per_cycle']:>10} {naive_s:>9} {speedup:>8} "
                     f"{r['one_deployment_seconds']:>10.4f} {r['one_deployment_statements']:>10} "
                     f"{r['sweep_seconds']:>8.3f} {r['sweep_page_max_seconds']:>10.4f}")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated deployment counts")
    parser.add_argument("--naive", action="store_true", help="also run the one-deployment-at-a-time baseline")
    parser.add_argument("--database", default=None, help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each cycle to stderr")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = []
    for n in sizes:
        results.append(await measure(n, args.database, args.naive, args.profile))
    backend = "PostgreSQL" if args.database and args.database.startswith("postgresql") else "SQLite"
    print(table(results, backend))
    print(json.dumps({"results": [{k: v for k, v in r.items() if k != "setup_seconds"} for r in results]}))


if __name__ == "__main__":
    asyncio.run(main())
