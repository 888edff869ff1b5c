"""A bounded HTTP load generator for the demo and the benchmarks: sends POST requests at a fixed rate
to one URL on this machine and counts answers by status and by the model version that answered.

It stops by itself (`stop()` or its duration) and never has more than `max_in_flight` requests open.
`version_key` names the field of a 200 answer's JSON that says which model version answered ("version"
for rollwise's example server, "model_version" for a KServe V2 server such as MLServer). Every answer is
also counted by the version that gave it (`by_version`): a 500 whose JSON body names a version (the
example server's `--error-rate` answers) is that version's own error; any other failure (a proxy
502/503/404, a timeout, a 500 naming no version) belongs to no version (`LoadStats.failed` counts all).
Called by `rollwise demo` and `benchmarks/`; not used by the server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class LoadStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    errors: Counter[str] = field(default_factory=Counter)
    failure_times: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    """time.monotonic() when each failed request was sent (the newest 10,000), to place failures in time."""
    failure_ends: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    """time.monotonic() when each of those failures was known (same order): a request in flight when
    something broke was sent before it and fails after it."""
    failure_kinds: deque[str] = field(default_factory=lambda: deque(maxlen=10_000))
    """What each failure in `failure_times` was (same order): "HTTP 502", "ReadTimeout"..."""
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    """Seconds from sending to the answer of each answered request, any status (the newest 100,000)."""

    def snapshot(self) -> tuple[int, int]:
        return self.sent, self.failed

    def split(self) -> dict[str, float]:
        """Share of each version among the recent answers (the traffic split people see)."""
        c = Counter(self.recent)
        total = sum(c.values()) or 1
        return {v: n / total for v, n in sorted(c.items())}


@dataclass
class VersionTally:
    """What one model version answered."""

    answers: int = 0
    """200s and the 500s that name it."""
    errors: int = 0
    """500s whose body names it: its own bad answers."""
    first: float | None = None
    last: float | None = None
    """time.monotonic() when its first and its last answer arrived."""


class LoadGenerator:
    def __init__(
        self,
        url: str,
        *,
        rate: float = 100.0,
        max_in_flight: int = 50,
        timeout: float = 10.0,
        body: dict[str, Any] | None = None,
        version_key: str = "version",
    ) -> None:
        if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
            raise ValueError("the load generator only sends traffic to this machine")
        self.url = url
        self.rate = rate
        self.stats = LoadStats()
        self._sem = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout
        self._body = body or {"text": "what a great and helpful model"}
        self._version_key = version_key
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.by_version: dict[str, VersionTally] = {}

    async def __aenter__(self) -> LoadGenerator:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self, duration: float | None = None) -> None:
        self._task = asyncio.create_task(self._run(duration))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self, duration: float | None) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(timeout=self._timeout, limits=limits) as client:
            start = time.monotonic()
            interval = 1.0 / self.rate
            n = 0
            while not self._stop.is_set():
                if duration is not None and time.monotonic() - start >= duration:
                    break
                await self._sem.acquire()
                task = asyncio.create_task(self._one(client))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
                n += 1
                delay = start + n * interval - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), timeout=delay)
                    except TimeoutError:
                        pass
            if self._pending:
                await asyncio.gather(*self._pending, return_exceptions=True)

    async def _one(self, client: httpx.AsyncClient) -> None:
        self.stats.sent += 1
        sent_at = time.monotonic()
        try:
            resp = await client.post(self.url, json=self._body)
            self.stats.latencies.append(time.monotonic() - sent_at)
            body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else None
            named = body.get(self._version_key) if isinstance(body, dict) else None
            if resp.status_code == 200:
                version = str(named if named is not None else "?")
                self.stats.ok += 1
                self.stats.versions[version] += 1
                self.stats.recent.append(version)
                self._tally(version)
            elif resp.status_code == 500 and isinstance(named, str):
                self._tally(named).errors += 1
                self._failed(sent_at, f"HTTP 500 from {named}")
            else:
                self._failed(sent_at, f"HTTP {resp.status_code}")
        except (httpx.HTTPError, ValueError) as e:
            self._failed(sent_at, type(e).__name__)
        finally:
            self._sem.release()

    def _tally(self, version: str) -> VersionTally:
        tally = self.by_version.setdefault(version, VersionTally())
        now = time.monotonic()
        tally.answers += 1
        tally.first = now if tally.first is None else tally.first
        tally.last = now
        return tally

    def _failed(self, sent_at: float, kind: str) -> None:
        self.stats.failed += 1
        self.stats.errors[kind] += 1
        self.stats.failure_times.append(sent_at)
        self.stats.failure_ends.append(time.monotonic())
        self.stats.failure_kinds.append(kind)
