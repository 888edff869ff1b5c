"""The route controller's idle pass at scale: N deployments x 4 running, healthy routes, nothing to do.

Every `Intervals.routes` (0.2 s) the route controller reads the live routes and what it needs to act
on them (starting, probing, draining) and publishes the routing table. When nothing changes, that pass
is pure overhead; at 10,000 deployments x 4 routes = 40,000 routes it must stay small (issue 16: at most
100 ms, reading only what it uses).

    .venv/bin/python benchmarks/route_pass.py [--deployments 10000] [--passes 5] [--database URL]

Setup (not timed): deployments READY on revision 1 (a health check every hour, so no probe is due after
the first pass), one `SimulatedRuntime` route started per route row (so `is_running` answers for real),
rows bulk-inserted. Then one first pass (timed as `first_pass_seconds`: it reads everything and probes
every route once: what every pass cost before the write feed, and what a full read costs every
`FULL_READ_SECONDS`), `--passes` timed idle passes (`seconds_per_pass`), `--passes` passes after a
write through the store to the routes of 1 % of the deployments (`seconds_per_pass_after_writes`: those
deployments are re-read), and one pass when the periodic full read is due (`full_read_pass_seconds`:
everything read in pages, only what differs from memory visited). Statements counted with a `before_cursor_execute` listener. The last line
printed is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event, insert, select

from rollwise.control.clock import ManualClock
from rollwise.control.route_controller import FULL_READ_SECONDS, RouteController
from rollwise.model import Health, Lifecycle, Mode, Policy, RouteStatus, StrategyName
from rollwise.runtime.base import LaunchSpec
from rollwise.runtime.simulated import SimBehaviour, SimulatedRuntime
from rollwise.store import ChangeSet, NewRoute, RevisionSpec, RouteUpdate, Store
from rollwise.store.rows import revision_values
from rollwise.store.schema import deployments, policies, revisions
from rollwise.traffic.base import NoTraffic

from evaluator_scale import BATCH, chunks, fresh_database  # noqa: E402 (benchmarks/ is the script's dir)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPLICAS = 4
POLICY = Policy(strategy=StrategyName.ROLLING, max_surge=1, max_unavailable=0)
SPEC = RevisionSpec(
    command=("model-server", "--port", "{port}"),
    health_check={"path": "/healthz", "interval_seconds": 3600.0, "healthy_threshold": 1, "unhealthy_threshold": 3},
    env={"MODEL": "x" * 200},
    label="v1",
)


async def build(store: Store, runtime: SimulatedRuntime, n: int) -> None:
    rows = [{"name": f"svc-{i:05d}", "replicas": REPLICAS, "lifecycle": Lifecycle.READY.value, "mode": Mode.FORWARD.value,
             "current_revision": 1, "paused": False, "abort_requested": False, "promote_requested": False,
             "error_count": 0, "version": 1, "created_at": T0, "updated_at": T0} for i in range(n)]
    async with store.engine.begin() as conn:
        for part in chunks(rows):
            await conn.execute(insert(deployments), part)
        ids = list((await conn.execute(select(deployments.c.id).order_by(deployments.c.id))).scalars())
        document = POLICY.to_json()
        for part in chunks([{"deployment_id": d, "strategy": POLICY.strategy.value, "document": document,
                             "updated_at": T0} for d in ids]):
            await conn.execute(insert(policies), part)
        for part in chunks([revision_values(d, 1, SPEC, T0) for d in ids]):
            await conn.execute(insert(revisions), part)
    new = []
    for d in ids:
        for k in range(REPLICAS):
            route_id = f"r{d:05d}{k}"
            handle = await runtime.start(LaunchSpec(route_id=route_id, deployment=f"svc-{d}", revision=1,
                                                    command=SPEC.command, env={}))
            new.append(NewRoute(id=route_id, deployment_id=d, revision=1, status=RouteStatus.RUNNING,
                                health=Health.HEALTHY, created_at=T0, address=handle.address, pid=handle.pid,
                                identity=handle.identity))
    for i in range(0, len(new), 4 * BATCH):
        await store.apply(ChangeSet(new_routes=new[i : i + 4 * BATCH]), T0)


async def measure(n: int, passes: int, database: str | None, profile: bool = False) -> dict[str, Any]:
    db = fresh_database(database)
    store = await db.open()
    clock = ManualClock(T0 + timedelta(seconds=10))
    runtime = SimulatedRuntime(clock.now, default=SimBehaviour(startup_seconds=0.0))
    try:
        await build(store, runtime, n)
        controller = RouteController(store=store, runtime=runtime, prober=runtime, traffic=NoTraffic(), clock=clock)
        t = time.perf_counter()
        warm = await controller.reconcile()
        first = time.perf_counter() - t
        assert not warm.changed, "the warm-up pass changed routes: the state is not idle"
        statements: list[str] = []
        event.listen(store.engine.sync_engine, "before_cursor_execute",
                     lambda *a: statements.append(str(a[2]).split()[0]))
        async def timed_passes(before_each: Callable[[], Awaitable[None]] | None = None) -> list[float]:
            """`passes` passes that change nothing, each 0.2 s after the last; `statements` holds the last one's."""
            seconds = []
            for _ in range(passes):
                if before_each is not None:
                    await before_each()
                clock.advance(0.2)
                statements.clear()
                t = time.perf_counter()
                report = await controller.reconcile()
                seconds.append(time.perf_counter() - t)
                assert not report.changed
            return seconds

        seconds = await timed_passes()
        idle_statements = len(statements)
        routes = await store.list_routes(None)
        written = [r for r in routes if r.deployment_id % 100 == 0]

        async def write() -> None:
            # Another writer of this server (a cycle, a request) touches 1 % of the deployments' routes.
            await store.update_routes([RouteUpdate(id=r.id, deployment_id=r.deployment_id,
                                                   traffic_ratio=r.traffic_ratio) for r in written])

        after_writes = await timed_passes(write)
        after_writes_statements = len(statements)
        clock.advance(FULL_READ_SECONDS)
        statements.clear()
        profiler = cProfile.Profile() if profile else None
        t = time.perf_counter()
        if profiler:
            profiler.enable()
        report = await controller.reconcile()
        full_read = time.perf_counter() - t
        if profiler:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
        assert not report.changed
        served = sum(len(s) for s in controller.table.services.values())
        return {"full_read_pass_seconds": round(full_read, 4), "statements_full_read": len(statements),"deployments": n, "routes": n * REPLICAS, "served_routes": served,
                "first_pass_seconds": round(first, 4),
                "seconds_per_pass": round(statistics.median(seconds), 4), "statements_per_pass": idle_statements,
                "seconds_per_pass_after_writes": round(statistics.median(after_writes), 4),
                "statements_per_pass_after_writes": after_writes_statements, "deployments_written": len(
                    {r.deployment_id for r in written})}
    finally:
        await store.close()
        await db.drop(store)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deployments", type=int, default=10_000)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--database", default=None, help="SQLAlchemy URL (default: a fresh SQLite file)")
    p.add_argument("--profile", action="store_true", help="cProfile of the full-read pass, to stderr")
    args = p.parse_args()
    result = await measure(args.deployments, args.passes, args.database, args.profile)
    print(f"{result['routes']} routes: first pass (reads everything) {result['first_pass_seconds'] * 1000:.0f} ms; "
          f"idle pass {result['seconds_per_pass'] * 1000:.0f} ms (median of {args.passes}), "
          f"{result['statements_per_pass']} statements; after writes to {result['deployments_written']} "
          f"deployments {result['seconds_per_pass_after_writes'] * 1000:.0f} ms, "
          f"{result['statements_per_pass_after_writes']} statements; the full read every {FULL_READ_SECONDS:g} s "
          f"{result['full_read_pass_seconds'] * 1000:.0f} ms, {result['statements_full_read']} statements")
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
