"""The one write path of a `Store`: writers of this process take turns in a queue, and requests of one
kind that arrive while the writer is busy are written together, in one transaction.

- `WriterQueue`: a FIFO lock every write transaction of the store takes before it begins (SQLite and
  PostgreSQL alike). On SQLite this is what keeps `database is locked` from API clients: the database
  has ONE writer at a time, and writers that wait for the file lock inside SQLite poll it with growing
  sleeps (busy_timeout) — unfair, so under load a request's write could lose the race for more than the
  timeout to the coordinator and other requests. Waiting here instead is fair (first come, first
  served) and has no timeout: a write waits as long as the writes queued before it take, then runs.
  SQLite's busy_timeout is left for other processes on the file (a migration, an operator's sqlite3).
- `Combiner`: calls of one kind (creating a deployment, adding a revision, a request's guarded write)
  queue up while a batch of them is being written; the next batch takes everything queued and writes
  it in one transaction with a fixed number of statements (group commit: one commit, one fsync, for
  the batch). A call alone is written at once, in a batch of one, so nothing waits for company. Each
  call gets its own result or its own error; a batch that fails as a whole for a reason one call can
  cause (a constraint) is written again call by call, so one bad call never fails the others.

Called by store.repository. Must not: know tables or statements (the batch writers live in
store.grouped), read the clock, or sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from rollwise.model.errors import RollwiseError

I = TypeVar("I")  # noqa: E741 - an item of a batch
R = TypeVar("R")

MAX_BATCH = 256
"""Calls written together at most (a batch's statements bind its rows per row: executemany)."""


class WriterQueue:
    """The FIFO turn of this process's write transactions (one at a time)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # asyncio.Lock wakes its waiters in arrival order

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._lock:
            yield

    @property
    def busy(self) -> bool:
        return self._lock.locked()


class Combiner(Generic[I, R]):
    """Write calls of one kind in batches (see the module docstring).

    `write_many(items)` writes a batch in ONE transaction and returns one outcome per item, in order
    (its result, or its error: an item refused on its own, e.g. a name taken, gets its error and the
    others are written). When
    it raises instead, a batch of several is written again one item at a time (`write_many([item])`),
    unless the error is transient (the database is unavailable: every call gets that error).
    """

    def __init__(self, write_many: Callable[[list[I]], Awaitable[Sequence[R | BaseException]]],
                 *, max_batch: int = MAX_BATCH) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches written so far (tests and benchmarks read it)."""

    async def submit(self, item: I) -> R:
        """Write `item` with whatever else is queued; its result, or its error raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._draining is None or self._draining.done():
            self._draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        live: list[tuple[I, asyncio.Future[R]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                live = [(item, future) for item, future in batch if not future.done()]  # not cancelled
                if not live:
                    continue
                self.batches += 1
                outcomes = await self._outcomes([item for item, _ in live])
                for (_, future), outcome in zip(live, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            # Cancelled (the loop is shutting down): no call may wait for ever on a batch never written.
            for _, future in [*live, *self._queue]:
                if not future.done():
                    future.cancel()

    async def _outcomes(self, items: list[I]) -> list[R | BaseException]:
        try:
            return list(await self._write_many(items))
        except Exception as e:  # noqa: BLE001 - handed to the callers, each raises it
            if len(items) == 1 or (isinstance(e, RollwiseError) and e.transient):
                return [e] * len(items)
        outcomes: list[R | BaseException] = []
        for item in items:
            try:
                outcomes.extend(await self._write_many([item]))
            except Exception as e:  # noqa: BLE001 - this call's own error
                outcomes.append(e)
        return outcomes
