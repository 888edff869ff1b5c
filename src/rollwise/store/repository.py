"""`Store`: every read and write rollwise makes to its database (SQLAlchemy 2 Core, async).

One instance per process, shared by the API, the coordinator's cycles and the route controller. Each
write method is one transaction, begun in its FIFO turn (store.writer); creates, revisions and requests'
guarded writes made while another write runs share the next transaction (store.grouped); every write
that changes a deployment row bumps its `version` (the guard cycles and operator verbs use, see
records.DeploymentUpdate). Reads issue a fixed number of queries whatever the number of deployments (id
lists are one array or JSON parameter).

Callers:
- operations (control): create_deployment, add_revision, apply (one guarded ChangeSet per request),
  purge_destroyed, and the reads;
- cycles (control): read_cycle (one read transaction), then ONE `apply(ChangeSet)`;
- the route controller: list_routes, load_revisions, update_routes, delete_terminated_routes, and its
  `feed()` (re-reads only the deployments written since its last pass);
- the server (cli.serve): get_meta / set_meta;
- the canary analysis (control.analysis): add_measurements; the DEPLOYING cycle: analysis_counts; the
  operations and the metrics: list_measurements, measurement_summary;
- the rollout timeline: the DEPLOYING cycle reads its open rollouts with read_cycle (its samples are
  part of `apply`); the operations: list_rollouts, rollout_timeline.

Every public method translates database errors (store.errors); none of SQLAlchemy's, asyncpg's or
sqlite3's exceptions reach the caller. Must not: hold state besides the engine, cache rows, read the
clock (callers pass `now`), or know about strategies. Its one other state: the write feeds of its
readers (store.feed: ids of the deployments each commit touched, added after the commit).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import and_, case, delete, false, func, insert, or_, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rollwise.model import Lifecycle, Policy, RouteStatus, ValidationFailed, check_deployment_name
from rollwise.store import queries
from rollwise.store.apply import apply_changes, check_changes, write_route_updates
from rollwise.store.bulk import gc_paused
from rollwise.store.engine import WRITE_OPTION, create_engine, normalize_url, sqlite_path
from rollwise.store.errors import translate_errors
from rollwise.store.feed import WriteFeed
from rollwise.store.migrate import upgrade as upgrade_to_head
from rollwise.store import grouped
from rollwise.store.grouped import NewDeployment, NewRevision, RequestWrite
from rollwise.store.writer import Combiner, WriterQueue
from rollwise.store.commands import (
    ApplyResult,
    ChangeSet,
    NewMeasurement,
    RevisionSpec,
    RouteUpdate,
)
from rollwise.store.records import (
    AnalysisTally,
    CycleSnapshot,
    DeploymentRecord,
    HistoryRecord,
    MeasurementRecord,
    MeasurementSummary,
    RevisionRecord,
    RolloutMark,
    RolloutRecord,
    RouteRecord,
    TimelineSample,
)
from rollwise.store import rollouts as rollout_queries
from rollwise.store.rows import (
    add_revision_facts,
    deployment_from_row,
    history_from_row,
    measurement_from_row,
    measurement_values,
    revision_from_row,
    route_from_row,
)
from rollwise.store.schema import deployments, history, measurements, meta, revisions, routes

KEEP_FAILED_ROUTES = 10
"""Failed routes kept per deployment by the purge (the newest; older ones are deleted at once)."""
_ROUTE_ORDER = (routes.c.deployment_id, routes.c.created_at, routes.c.id)


class Store:
    """The repository over one database; create with `await Store.open(url)`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # An in-memory SQLite database is ONE connection (StaticPool): callers take turns on it.
        in_memory = engine.dialect.name == "sqlite" and sqlite_path(engine.url) is None
        self._turns: asyncio.Lock | None = asyncio.Lock() if in_memory else None
        # Write transactions take turns in this process's queue (store/writer.py, docs/storage.md).
        self._writer = WriterQueue()
        self._creates: Combiner[NewDeployment, Any] = Combiner(self._grouped(grouped.create_deployments))
        self._revisions: Combiner[NewRevision, Any] = Combiner(self._grouped(grouped.add_revisions))
        self._requests: Combiner[RequestWrite, Any] = Combiner(self._grouped(grouped.apply_requests))
        self._feeds: weakref.WeakSet[WriteFeed] = weakref.WeakSet()

    # ------------------------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, schema: str | None = None) -> Store:
        """Connect to `sqlite+aiosqlite:///path` or `postgresql+asyncpg://…` and migrate to head.

        `schema` (PostgreSQL only, ignored on SQLite) keeps every table in that schema, created when
        missing. Raises ValidationFailed for an unusable URL, StoreError when the database cannot be
        reached (only noticed here when `migrate` is true: otherwise at the first query).
        """
        async with translate_errors():  # the SQLite file is created here (OSError: StoreError)
            engine = create_engine(normalize_url(url), schema=schema)
        store = cls(engine)
        try:
            if schema is not None and engine.dialect.name == "postgresql":
                async with store._write() as conn:
                    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            if migrate:
                await upgrade_to_head(engine)
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        """Close every pooled connection; the Store is unusable afterwards."""
        async with translate_errors():
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def engine(self) -> AsyncEngine:
        """The engine (tests hook `engine.sync_engine` events, e.g. to count statements)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._engine.dialect.name

    def feed(self) -> WriteFeed:
        """A new feed of the deployments this store's writes touch (store.feed), for a reader that keeps
        rows in memory; it lives as long as the reader holds it."""
        feed = WriteFeed()
        self._feeds.add(feed)
        return feed

    def _touched(self, ids: Iterable[int | None], *, by: WriteFeed | None = None) -> None:
        """After a commit: these deployments' rows or routes changed (None: unknown ones). `by`: the
        writer's own feed, left out (it knows what it wrote)."""
        written = list(ids)
        for feed in list(self._feeds):
            if feed is not by:
                feed.add(written)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._turns is None:
            yield
        else:
            async with self._turns:
                yield

    def _grouped(self, write: Callable[[AsyncConnection, Any], Awaitable[list[Any]]]) -> Callable[[Any], Awaitable[list[Any]]]:
        """A batch writer of store.grouped run in one write transaction of this store."""

        async def write_many(items: Any) -> list[Any]:
            async with self._write() as conn:
                return await write(conn, items)

        return write_many

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._turn(), translate_errors():
            async with self._engine.connect() as conn:
                yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE), committed when the block ends normally; it
        begins when the writes queued before it are done (store.writer.WriterQueue)."""
        async with self._turn(), self._writer.turn(), translate_errors():
            async with self._engine.connect() as conn:
                await conn.execution_options(**{WRITE_OPTION: True})
                async with conn.begin():
                    yield conn

    # ---------------------------------------------------------------------------- operation writes

    async def create_deployment(
        self, *, name: str, replicas: int, policy: Policy, revision: RevisionSpec, now: datetime
    ) -> DeploymentRecord:
        """A PENDING deployment with its policy and revision 1 (current_revision = 1); ValidationFailed
        unless `name` passes the model's deployment-name rule, Conflict if the name is taken."""
        return (await self.create_deployment_and_revision(
            name=name, replicas=replicas, policy=policy, revision=revision, now=now
        ))[0]

    async def create_deployment_and_revision(
        self, *, name: str, replicas: int, policy: Policy, revision: RevisionSpec, now: datetime
    ) -> tuple[DeploymentRecord, RevisionRecord]:
        """`create_deployment`, and the revision 1 it stored (no second read)."""
        check_deployment_name(name)
        if replicas < 0:
            raise ValidationFailed(f"replicas: {replicas} is negative")
        # Written with the creations queued meanwhile, in one transaction (store.grouped).
        created: tuple[DeploymentRecord, RevisionRecord] = await self._creates.submit(
            NewDeployment(name, replicas, policy, revision, now)
        )
        self._touched([created[0].id])
        return created

    async def add_revision(self, deployment_id: int, spec: RevisionSpec, now: datetime) -> RevisionRecord:
        """Store a new revision with the deployment's next number (1, 2, 3, …); NotFound if the
        deployment does not exist. Does not change the deployment (activation is an update)."""
        record: RevisionRecord = await self._revisions.submit(NewRevision(deployment_id, spec, now))
        return record

    async def purge_destroyed(self) -> int:
        """Delete every DESTROYED deployment (cascading); returns how many. DESTROYED rows are kept
        until this runs, so `history NAME` still answers after a destroy."""
        async with self._write() as conn:
            result = await conn.execute(
                delete(deployments).where(deployments.c.lifecycle == Lifecycle.DESTROYED.value).returning(deployments.c.id)
            )
            purged = list(result.scalars())
        self._touched(purged)
        return len(purged)

    # ------------------------------------------------------------------------------ cycle write

    async def apply(self, changes: ChangeSet, now: datetime, *, combine: bool = False) -> ApplyResult:
        """A cycle's whole write in ONE transaction (store/apply.py, docs/storage.md). An empty
        ChangeSet writes nothing and opens no transaction. `combine` (a request's write, without new
        routes): written together with the requests queued meanwhile (store.grouped.apply_requests);
        the result is this ChangeSet's own, with `written_at` the `now` the batch wrote."""
        if changes.is_empty:
            return ApplyResult()
        check_changes(changes)  # a malformed ChangeSet fails before any I/O
        if combine and not changes.new_routes:
            result: ApplyResult = await self._requests.submit(RequestWrite(changes, now))
        else:
            async with self._write() as conn:
                result = await apply_changes(conn, changes, now)
        self._touched(changes.deployment_ids())
        return result

    # ------------------------------------------------------------------- route controller writes

    async def update_routes(
        self, updates: Sequence[RouteUpdate], *, feed: WriteFeed | None = None, announce: Collection[int] | None = None
    ) -> None:
        """Write route changes (health, status, address, …) in one transaction and one executemany
        statement; untagged updates are fine here (every reader's feed then says "read everything").
        Unknown route ids change nothing. `feed`: the writer's own feed, not told of this write.
        `announce`: the deployments the other feeds are told of (default: those of the updates; the
        route controller leaves out changes no other reader acts on, e.g. a process's address)."""
        if not updates:
            return
        async with self._write() as conn:
            await write_route_updates(conn, updates, tagged=False)
        self._touched({u.deployment_id for u in updates} if announce is None else announce, by=feed)

    async def delete_terminated_routes(self, older_than: datetime, *, keep_failed: int = KEEP_FAILED_ROUTES) -> int:
        """Purge ended routes (`terminated`, `failed_to_start`); returns how many were deleted.

        Per deployment, the newest `keep_failed` failed ones are kept whatever their age (they say why
        the deployment struggles, and the crash-loop back-off reads the newest); older failed ones go
        at once, and ended routes that did not fail go once they ended before `older_than`. Routes of
        DEPLOYING deployments are all kept: a rollout counts its failed routes.
        """
        gone = (RouteStatus.TERMINATED.value, RouteStatus.FAILED_TO_START.value)
        async with self._write() as conn:
            deploying = select(deployments.c.id).where(deployments.c.lifecycle == Lifecycle.DEPLOYING.value)
            rank = func.row_number().over(
                partition_by=(routes.c.deployment_id, routes.c.failed),
                order_by=(routes.c.status_updated_at.desc(), routes.c.id.desc()),
            )
            ended = (
                select(routes.c.id, routes.c.failed, routes.c.status_updated_at, rank.label("rank"))
                .where(routes.c.status.in_(gone), routes.c.deployment_id.not_in(deploying))
                .subquery()
            )
            doomed = select(ended.c.id).where(
                or_(
                    and_(ended.c.failed.is_(false()), ended.c.status_updated_at < older_than),
                    and_(ended.c.failed.is_(true()), ended.c.rank > keep_failed),
                )
            )
            result = await conn.execute(delete(routes).where(routes.c.id.in_(doomed)))
            return int(result.rowcount)

    # ---------------------------------------------------------------------------- measurements

    async def add_measurements(self, rows: Sequence[NewMeasurement]) -> None:
        """Write canary analysis measurements in one transaction (one executemany INSERT); nothing for an
        empty list. IntegrityFailed when a deployment no longer exists (nothing is written then)."""
        if not rows:
            return
        async with self._write() as conn:
            await conn.execute(insert(measurements), [measurement_values(m) for m in rows])
        self._touched({m.deployment_id for m in rows})

    async def list_measurements(
        self, deployment_id: int, *, limit: int | None = None, rollout_started_at: datetime | None = None
    ) -> list[MeasurementRecord]:
        """A deployment's measurements oldest first; only one rollout's with `rollout_started_at`; with
        `limit`, the newest `limit` of them (still oldest first)."""
        stmt = select(measurements).where(measurements.c.deployment_id == deployment_id)
        if rollout_started_at is not None:
            stmt = stmt.where(measurements.c.rollout_started_at == rollout_started_at)
        stmt = stmt.order_by(measurements.c.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._read() as conn:
            rows = [measurement_from_row(row) for row in (await conn.execute(stmt)).mappings()]
        rows.reverse()
        return rows

    async def analysis_counts(self, deployment_ids: Collection[int]) -> dict[int, AnalysisTally]:
        """For each deployment, its measurements in its CURRENT rollout (rows whose `rollout_started_at`
        is the deployment's) counted by verdict, with the newest failure's words, the newest window's end
        and whether every measurement of that window passed. One query (per id chunk on SQLite: never for
        fewer than 20,000 ids); deployments without such measurements are absent (`NO_TALLY`)."""
        m = measurements
        verdict = m.c.verdict
        current = (
            select(
                m.c.id, m.c.deployment_id, verdict, m.c.window_end,
                func.max(m.c.window_end).over(partition_by=m.c.deployment_id).label("last_end"),
            )
            .join(deployments, and_(deployments.c.id == m.c.deployment_id,
                                    deployments.c.rollout_started_at == m.c.rollout_started_at))
        )

        def count(condition: Any) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        found: dict[int, AnalysisTally] = {}
        async with self._read() as conn:
            for clause in queries.id_filters(self.dialect, m.c.deployment_id, deployment_ids):
                rows = current.where(clause).subquery("current")
                tally = (
                    select(
                        rows.c.deployment_id,
                        count(rows.c.verdict == "failed").label("failed"),
                        count(rows.c.verdict == "passed").label("passed"),
                        count(rows.c.verdict == "inconclusive").label("inconclusive"),
                        func.max(rows.c.window_end).label("last_end"),
                        count(and_(rows.c.window_end == rows.c.last_end, rows.c.verdict != "passed")).label("unpassed"),
                        func.max(case((rows.c.verdict == "failed", rows.c.id), else_=None)).label("last_failed"),
                    )
                    .group_by(rows.c.deployment_id)
                    .subquery("tally")
                )
                failure = m.alias("failure")
                stmt = select(tally, failure.c.words).outerjoin(failure, failure.c.id == tally.c.last_failed)
                for row in (await conn.execute(stmt)).mappings():
                    found[row["deployment_id"]] = AnalysisTally(
                        failed=int(row["failed"]),
                        passed=int(row["passed"]),
                        inconclusive=int(row["inconclusive"]),
                        last_failure=row["words"],
                        last_window_end=row["last_end"],
                        last_window_passed=int(row["unpassed"]) == 0,
                    )
        return found

    async def measurement_summary(self) -> list[MeasurementSummary]:
        """Every (deployment, metric) of the deployments not destroyed: its measurements of all rollouts
        counted by verdict, and the value of the newest one; by deployment name, then metric. Two queries
        in one read (a GROUP BY over the table, then the newest row of each pair)."""
        m = measurements
        alive = deployments.c.lifecycle != Lifecycle.DESTROYED.value
        grouped = (
            select(deployments.c.name, m.c.metric, m.c.verdict, func.count().label("n"), func.max(m.c.id).label("last"))
            .join(deployments, deployments.c.id == m.c.deployment_id)
            .where(alive)
            .group_by(deployments.c.name, m.c.metric, m.c.verdict)
        )
        async with self._read() as conn:
            counted = (await conn.execute(grouped)).all()
            newest: dict[tuple[str, str], int] = {}
            counts: dict[tuple[str, str], dict[str, int]] = {}
            for name, metric, verdict_, n, last in counted:
                counts.setdefault((name, metric), {})[verdict_] = int(n)
                newest[(name, metric)] = max(newest.get((name, metric), 0), int(last))
            values: dict[int, str | None] = {}
            for clause in queries.id_filters(self.dialect, m.c.id, newest.values()):
                for id_, value in await conn.execute(select(m.c.id, m.c.value).where(clause)):
                    values[id_] = value
        return [
            MeasurementSummary(deployment=name, metric=metric, counts=counts[(name, metric)],
                               last_value=values.get(newest[(name, metric)]))
            for name, metric in sorted(counts)
        ]

    # ----------------------------------------------------------------------------------- meta

    async def get_meta(self, key: str) -> str | None:
        """A value of the `meta` table (facts about the installation), or None when unset."""
        async with self._read() as conn:
            return (await conn.execute(select(meta.c.value).where(meta.c.key == key))).scalar()

    async def set_meta(self, key: str, value: str, now: datetime) -> None:
        """Write one `meta` value (insert or replace)."""
        async with self._write() as conn:
            changed = await conn.execute(
                update(meta).where(meta.c.key == key).values(value=value, updated_at=now)
            )
            if not changed.rowcount:
                await conn.execute(insert(meta).values(key=key, value=value, updated_at=now))

    # ----------------------------------------------------------------------------------- reads

    async def get_deployment(self, name: str) -> DeploymentRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(queries.DEPLOYMENT_SELECT.where(deployments.c.name == name))).first()
            return None if row is None else deployment_from_row(row)

    async def list_deployments(
        self, lifecycles: Collection[Lifecycle] | None = None, *, ids: Collection[int] | None = None,
        after: int | None = None, limit: int | None = None,
    ) -> list[DeploymentRecord]:
        """Deployments (with policies: one query), by id; only the given lifecycles when given, only
        those of `ids` when given (ids of deployments that do not exist are left out); with `after` and
        `limit`, at most `limit` of those with an id above `after` (keyset paging)."""
        stmt = queries.DEPLOYMENT_SELECT.order_by(deployments.c.id)
        if after is not None:
            stmt = stmt.where(deployments.c.id > after)
        if limit is not None:
            stmt = stmt.limit(limit)
        if lifecycles is not None:
            stmt = stmt.where(deployments.c.lifecycle.in_(sorted(Lifecycle(lc).value for lc in lifecycles)))
        async with self._read() as conn:
            found: list[DeploymentRecord] = []
            statements = [stmt] if ids is None else [
                stmt.where(clause) for clause in queries.id_filters(self.dialect, deployments.c.id, ids)
            ]
            for one in statements:
                result = await conn.execute(one)
                with gc_paused():  # synchronous: the rows are fetched already
                    found.extend(deployment_from_row(row) for row in result.all())
            return found

    async def list_deployments_and_rollouts(
        self, lifecycles: Collection[Lifecycle]
    ) -> tuple[list[DeploymentRecord], dict[int, RolloutMark]]:
        """`list_deployments(lifecycles)` and, in the same query, each one's open rollout (the DEPLOYING
        cycle's read: whether to append a timeline sample, store.rollouts). Deployments without an open
        rollout are absent from the marks."""
        stmt = rollout_queries.with_marks(queries.DEPLOYMENT_SELECT).order_by(deployments.c.id)
        stmt = stmt.where(deployments.c.lifecycle.in_(sorted(Lifecycle(lc).value for lc in lifecycles)))
        records: list[DeploymentRecord] = []
        marks: dict[int, RolloutMark] = {}
        async with self._read() as conn:
            result = await conn.execute(stmt)
            with gc_paused():  # synchronous: the rows are fetched already
                for row in result.all():
                    dep = deployment_from_row(row[: -rollout_queries.MARK_COLUMNS])
                    records.append(dep)
                    if (mark := rollout_queries.mark_from_row(row)) is not None:
                        marks[dep.id] = mark
        return records, marks

    async def read_cycle(
        self, lifecycle: Lifecycle, *, routes: bool = True, facts: bool = True, marks: bool = False,
        ids: Collection[int] | None = None, after: int | None = None, limit: int | None = None,
    ) -> CycleSnapshot:
        """What a lifecycle cycle reads, in ONE read transaction of two queries whatever the number of
        deployments (records.CycleSnapshot): the deployments in `lifecycle` (only `ids` when given),
        with their open rollouts' marks (`marks`), their routes (`routes`), and the facts of the
        revisions those run and the deployments serve or roll out to (`facts`), joined into both.
        `after`, `limit`: one page of those deployments (keyset on the id)."""
        deps_stmt, routes_stmt = queries.cycle_selects(
            self.dialect, Lifecycle(lifecycle).value, with_routes=routes, facts=facts,
            marks=rollout_queries.with_marks if marks else None, ids=ids, after=after, limit=limit,
        )
        snapshot = CycleSnapshot(deployments=[], marks={}, routes=[], health_checks={}, needs={})
        extra = (rollout_queries.MARK_COLUMNS if marks else 0) + (2 * queries.FACT_COLUMNS if facts else 0)
        fact = queries.FACT_COLUMNS
        async with self._read() as conn:
            result = await conn.execute(deps_stmt)
            with gc_paused():  # synchronous: the rows are fetched already
                dep_rows = result.all()
            route_rows: Sequence[Any] = []
            if routes_stmt is not None:
                result = await conn.execute(routes_stmt)
                with gc_paused():
                    route_rows = result.all()
        with gc_paused():  # synchronous: the rows are fetched already
            for row in dep_rows:
                dep = deployment_from_row(row[: len(row) - extra] if extra else row)
                snapshot.deployments.append(dep)
                if marks and (mark := rollout_queries.mark_from_row(row[: len(row) - 2 * fact] if facts else row)):
                    snapshot.marks[dep.id] = mark
                if facts:
                    add_revision_facts(dep.id, row[-2 * fact : -fact], snapshot.health_checks, snapshot.needs)
                    add_revision_facts(dep.id, row[-fact:], snapshot.health_checks, snapshot.needs)
            for row in route_rows:
                route = route_from_row(row[:-fact] if facts else row)
                snapshot.routes.append(route)
                if facts:
                    add_revision_facts(route.deployment_id, row[-fact:], snapshot.health_checks, snapshot.needs)
        return snapshot

    async def list_rollouts(self, deployment_id: int) -> list[RolloutRecord]:
        """The deployment's rollouts, oldest first, without their samples."""
        async with self._read() as conn:
            return await rollout_queries.list_rollouts(conn, deployment_id)

    async def rollout_timeline(
        self, deployment_id: int, rollout_id: int, *, history_limit: int = 1000
    ) -> tuple[RolloutRecord, list[TimelineSample], list[HistoryRecord]] | None:
        """One rollout of the deployment, its samples (oldest first) and the history rows of its time
        span (the newest `history_limit`, oldest first); None when the deployment has no such rollout.
        Two queries in one read."""
        async with self._read() as conn:
            return await rollout_queries.read_timeline(conn, deployment_id, rollout_id, history_limit)

    async def page_deployments(
        self,
        *,
        after: int | None,
        limit: int,
        lifecycles: Collection[Lifecycle] | None = None,
        deploying: bool | None = None,
    ) -> list[DeploymentRecord]:
        """One page of the deployments not DESTROYED (with policies, one query): at most `limit`, by id,
        those with an id above `after` (keyset paging on the primary key: one indexed range read
        wherever the page is). Only the given lifecycles when given; `deploying` True / False: only those
        with / without a rollout in progress (`deploying_revision` set)."""
        stmt = queries.DEPLOYMENT_SELECT.where(deployments.c.lifecycle != Lifecycle.DESTROYED.value)
        if after is not None:
            stmt = stmt.where(deployments.c.id > after)
        if lifecycles is not None:
            stmt = stmt.where(deployments.c.lifecycle.in_(sorted(Lifecycle(lc).value for lc in lifecycles)))
        if deploying is not None:
            column = deployments.c.deploying_revision
            stmt = stmt.where(column.isnot(None) if deploying else column.is_(None))
        async with self._read() as conn:
            result = await conn.execute(stmt.order_by(deployments.c.id).limit(limit))
            return [deployment_from_row(row) for row in result.all()]

    async def list_revisions(self, deployment_id: int) -> list[RevisionRecord]:
        """The deployment's revisions by number."""
        stmt = select(revisions).where(revisions.c.deployment_id == deployment_id).order_by(revisions.c.number)
        async with self._read() as conn:
            return [revision_from_row(row) for row in (await conn.execute(stmt)).mappings()]

    async def load_revisions(self, keys: Collection[tuple[int, int]]) -> dict[tuple[int, int], RevisionRecord]:
        """Revisions by (deployment_id, number): one query. Missing keys are absent."""
        found: dict[tuple[int, int], RevisionRecord] = {}
        async with self._read() as conn:
            for clause in queries.pair_filters(self.dialect, revisions.c.deployment_id, revisions.c.number, keys):
                for row in (await conn.execute(select(revisions).where(clause))).mappings():
                    record = revision_from_row(row)
                    found[(record.deployment_id, record.number)] = record
        return found

    async def health_check_flags(self, keys: Collection[tuple[int, int]]) -> dict[tuple[int, int], bool]:
        """Whether each revision (deployment_id, number) has a health check: one query (`revision_facts`)."""
        return (await self.revision_facts(keys))[0]

    async def revision_facts(
        self, keys: Collection[tuple[int, int]]
    ) -> tuple[dict[tuple[int, int], bool], dict[tuple[int, int], dict[str, int]]]:
        """Of each revision (deployment_id, number): whether it has a health check, and what one route
        needs of the node's slots (only revisions that need something). One query.

        What the lifecycle cycles need of a revision, without reading and decoding its big JSON columns
        (command, env, health check): ~5x cheaper than `load_revisions` at 20,000 revisions. Missing
        keys are absent.
        """
        checks: dict[tuple[int, int], bool] = {}
        needs: dict[tuple[int, int], dict[str, int]] = {}
        has_check = queries.json_has_value(self.dialect, revisions.c.health_check)
        async with self._read() as conn:
            for clause in queries.pair_filters(self.dialect, revisions.c.deployment_id, revisions.c.number, keys):
                stmt = select(revisions.c.deployment_id, revisions.c.number, has_check, revisions.c.resources)
                for deployment_id, number, flag, resources in await conn.execute(stmt.where(clause)):
                    checks[(deployment_id, number)] = bool(flag)
                    if resources:
                        needs[(deployment_id, number)] = dict(resources)
        return checks, needs

    async def list_holding_routes(self) -> list[RouteRecord]:
        """Every route that holds slots now (provisioning, running or terminating, with `holds`), of any
        deployment, ordered like `list_routes`: the capacity read of a cycle (ix_routes_holding)."""
        holding = [s.value for s in (RouteStatus.PROVISIONING, RouteStatus.RUNNING, RouteStatus.TERMINATING)]
        stmt = queries.ROUTE_SELECT.where(routes.c.holds.isnot(None), routes.c.status.in_(holding))
        async with self._read() as conn:
            return [route_from_row(row) for row in (await conn.execute(stmt.order_by(*_ROUTE_ORDER))).all()]

    async def list_routes(
        self,
        deployment_ids: Collection[int] | None = None,
        *,
        statuses: Collection[RouteStatus] | None = None,
    ) -> list[RouteRecord]:
        """Routes of the given deployments (all when None), optionally only some statuses; ordered by
        deployment, creation time, id. One query (PostgreSQL: an array; SQLite: a JSON list)."""
        base = queries.ROUTE_SELECT.order_by(*_ROUTE_ORDER)
        if statuses is not None:
            base = base.where(routes.c.status.in_(sorted(RouteStatus(s).value for s in statuses)))
        async with self._read() as conn:
            if deployment_ids is None:
                return [route_from_row(row) for row in (await conn.execute(base)).all()]
            found: list[RouteRecord] = []
            for clause in queries.id_filters(self.dialect, routes.c.deployment_id, deployment_ids):
                result = await conn.execute(base.where(clause))
                with gc_paused():  # synchronous: the rows are fetched already
                    found.extend(route_from_row(row) for row in result.all())
            return found

    async def list_history(self, deployment_id: int, limit: int | None = None) -> list[HistoryRecord]:
        """History rows oldest first; with `limit`, the newest `limit` rows (still oldest first)."""
        stmt = select(history).where(history.c.deployment_id == deployment_id).order_by(history.c.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._read() as conn:
            rows = [history_from_row(row) for row in (await conn.execute(stmt)).mappings()]
        rows.reverse()
        return rows


async def _lock_deployment(conn: AsyncConnection, deployment_id: int) -> int | None:
    """Lock the deployment row for this transaction; its version, or None if it does not exist."""
    stmt = select(deployments.c.version).where(deployments.c.id == deployment_id).with_for_update()
    return (await conn.execute(stmt)).scalar_one_or_none()


async def _get_deployment(conn: AsyncConnection, deployment_id: int) -> DeploymentRecord:
    row = (await conn.execute(queries.DEPLOYMENT_SELECT.where(deployments.c.id == deployment_id))).one()
    return deployment_from_row(row)
