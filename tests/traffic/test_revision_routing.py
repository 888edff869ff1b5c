"""Per-revision traffic through a real Traefik: exact revision weights, the revision header, the 404 for a
revision the table does not serve, and per-revision counters (`TraefikLayer.revision_stats`).

Backends are stdlib HTTP servers in threads answering with their name (`r1-a`, `r2-a`...), so the client
sees which revision served each request. Every test starts its own Traefik (the `layer` fixture of
conftest.py closes it, and conftest's finalizer kills any Traefik a failing test left behind); backends
are closed by the `make_backend` fixture. Tests wait on conditions (counts, Traefik's API), never on
fixed sleeps.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from rollwise.traffic.base import Backend, NoTraffic, RevisionStats
from rollwise.traffic.stats import error_rate, latency_quantile, window
from rollwise.traffic.traefik import TraefikLayer

if TYPE_CHECKING:
    from conftest import TinyBackend

DEMO = "demo"

MakeBackend = Callable[[str], "TinyBackend"]


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=10.0, trust_env=False)


async def apply_and_wait(layer: TraefikLayer, services: dict[str, list[Backend]]) -> None:
    await layer.apply(services)
    assert await layer.wait_applied(5.0)
    assert await layer.config_errors() == {}


def canary(stable: list[TinyBackend], new: list[TinyBackend], percent: float) -> list[Backend]:
    """The table the control layer writes for a canary at `percent`: each route of a revision weighs
    the revision's percentage divided by its number of routes."""
    return [Backend(b.address, (100 - percent) / len(stable), 1) for b in stable] + [
        Backend(b.address, percent / len(new), 2) for b in new
    ]


async def send(
    layer: TraefikLayer, n: int, *, path: str = "/x", revision: str | None = None, workers: int = 4
) -> collections.Counter[str]:
    """`n` GETs through the proxy from `workers` concurrent clients; body (or "HTTP <status>") -> count."""
    headers = {} if revision is None else {"X-Rollwise-Revision": revision}
    seen: collections.Counter[str] = collections.Counter()
    left = [n]

    async def worker() -> None:
        async with client() as c:
            while left[0] > 0:
                left[0] -= 1
                r = await c.get(f"{layer.proxy_url}/d/{DEMO}{path}", headers=headers)
                seen[r.text if r.status_code == 200 else f"HTTP {r.status_code}"] += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return seen


def by_revision(seen: collections.Counter[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, n in seen.items():
        key = name.partition("-")[0]
        out[key] = out.get(key, 0) + n
    return out


async def test_ten_percent_canary_gets_ten_percent_of_2000_requests(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    stable = [make_backend("r1-a"), make_backend("r1-b")]
    new = [make_backend("r2-a")]
    await apply_and_wait(layer, {DEMO: canary(stable, new, 10)})
    seen = await send(layer, 2000)
    share = by_revision(seen)
    assert sum(share.values()) == 2000 and set(share) == {"r1", "r2"}, seen
    assert 160 <= share["r2"] <= 240, seen  # 8 % to 12 % (measured: exactly 200)
    assert abs(seen["r1-a"] - seen["r1-b"]) <= 0.1 * share["r1"], seen  # the stable routes share evenly


async def test_no_failed_request_while_the_canary_goes_10_50_100_and_the_old_revision_leaves(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    stable = [make_backend("r1-a"), make_backend("r1-b")]
    new = [make_backend("r2-a")]
    await apply_and_wait(layer, {DEMO: canary(stable, new, 10)})
    phase = "10"
    """The table Traefik reported loaded when a request began (requests begun later are routed by it)."""
    results: collections.Counter[tuple[str, str]] = collections.Counter()
    stop = asyncio.Event()
    progress = asyncio.Condition()
    workers = 4
    began_in = [""] * workers
    """Per worker: the phase its last finished request began in (each worker sends one at a time)."""

    async def hammer(worker: int) -> None:
        async with client() as c:
            while not stop.is_set():
                began = phase
                try:
                    r = await c.get(f"{layer.proxy_url}/d/{DEMO}/x")
                    outcome = r.text.partition("-")[0] if r.status_code == 200 else f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    outcome = type(e).__name__
                async with progress:
                    results[began, outcome] += 1
                    began_in[worker] = began
                    progress.notify_all()

    async def requests_in(p: str, at_least: int) -> None:
        def enough() -> bool:
            return sum(n for (q, _), n in results.items() if q == p) >= at_least and set(began_in) == {p}

        async with progress:
            await asyncio.wait_for(progress.wait_for(enough), timeout=30)

    tasks = [asyncio.create_task(hammer(i)) for i in range(workers)]
    try:
        await requests_in("10", 200)
        for percent in (50, 100):
            await apply_and_wait(layer, {DEMO: canary(stable, new, percent)})
            phase = str(percent)
            await requests_in(phase, 200)
        # The old revision leaves the table; once Traefik confirms it, its backends are drained and stop.
        await layer.apply({DEMO: canary(stable, new, 100)[len(stable):]})
        while not await layer.confirm_removed(DEMO, [b.address for b in stable]):
            await asyncio.sleep(0.005)  # the next look at Traefik's API
        phase = "removed"
        await requests_in("removed", 20)  # every request begun before the removal has finished
        for b in stable:
            await asyncio.to_thread(b.close)
        phase = "stopped"
        await requests_in("stopped", 200)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    outcomes = collections.Counter(outcome for (_, outcome), n in results.items() for _ in range(n))
    assert set(outcomes) == {"r1", "r2"}, results  # no failed request
    in_phase = {p: {o: n for (q, o), n in results.items() if q == p} for p in ("10", "50", "100", "stopped")}
    assert 0.35 <= in_phase["50"].get("r2", 0) / sum(in_phase["50"].values()) <= 0.65, in_phase
    assert set(in_phase["100"]) == {"r2"} and set(in_phase["stopped"]) == {"r2"}, in_phase


async def test_the_revision_header_pins_a_request_to_that_revision(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    stable = [make_backend("r1-a"), make_backend("r1-b")]
    new = [make_backend("r2-a")]
    await apply_and_wait(layer, {DEMO: canary(stable, new, 10)})
    assert await send(layer, 40, revision="r2") == {"r2-a": 40}
    assert await send(layer, 40, revision="r1") == {"r1-a": 20, "r1-b": 20}
    # An empty value is no pin: the weighted split.
    assert set(by_revision(await send(layer, 40, revision=""))) <= {"r1", "r2"}
    # The prefix is stripped for pinned requests as for the others.
    assert new[0].paths[:2] == ["/x", "/x"]


async def test_a_revision_without_share_is_reachable_by_its_header_only(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    old, preview = make_backend("r1-a"), make_backend("r2-a")
    await apply_and_wait(layer, {DEMO: [Backend(old.address, 1.0, 1), Backend(preview.address, 0.0, 2)]})
    assert await send(layer, 30) == {"r1-a": 30}
    assert await send(layer, 10, revision="r2") == {"r2-a": 10}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("r7", "deployment demo has no ready route of revision r7 (serving r1, r2)"),
        ("R2", 'deployment demo has no revision "R2": X-Rollwise-Revision values look like r1'),
        ("2", 'deployment demo has no revision "2"'),
        ("r", 'deployment demo has no revision "r"'),
        ("r1,r2", 'deployment demo has no revision "r1,r2"'),
    ],
)
async def test_a_revision_the_table_does_not_serve_answers_404_naming_it(
    layer: TraefikLayer, make_backend: MakeBackend, value: str, words: str
) -> None:
    stable, new = [make_backend("r1-a")], [make_backend("r2-a")]
    await apply_and_wait(layer, {DEMO: canary(stable, new, 10)})
    async with client() as c:
        started = time.monotonic()
        r = await c.get(f"{layer.proxy_url}/d/{DEMO}/pinned", headers={"X-Rollwise-Revision": value})
        elapsed = time.monotonic() - started
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == "revision.not_found" and body["message"].startswith(words), body
    assert elapsed < 0.5
    assert stable[0].paths == new[0].paths == []  # not a fall-through to the weighted split
    stats = await layer.revision_stats()
    assert {k: s.requests for k, s in stats.items()} == {(DEMO, 1): 0, (DEMO, 2): 0}


def test_the_plugin_source_is_private_in_traefiks_directory(layer: TraefikLayer) -> None:
    files = sorted(p for p in (layer.dir / "plugins-local").rglob("*"))
    assert {p.name for p in files if p.is_file()} == {"revisionnotfound.go", "go.mod", ".traefik.yml"}
    assert {oct(p.stat().st_mode & 0o777) for p in files if p.is_file()} == {"0o600"}
    assert {oct(p.stat().st_mode & 0o777) for p in files if p.is_dir()} == {"0o700"}
    assert os.readlink(f"/proc/{layer.pid}/cwd") == str(layer.dir)


async def test_unknown_revision_of_a_deployment_without_backends_is_404_too(layer: TraefikLayer) -> None:
    await apply_and_wait(layer, {DEMO: []})
    async with client() as c:
        pinned = await c.get(f"{layer.proxy_url}/d/{DEMO}/x", headers={"X-Rollwise-Revision": "r1"})
        plain = await c.get(f"{layer.proxy_url}/d/{DEMO}/x")
    assert pinned.status_code == 404
    assert pinned.json()["message"] == "deployment demo has no ready route of revision r1 (serving none)"
    assert plain.status_code == 503  # no backend: Traefik's "no available server", as before


async def test_revision_stats_count_per_revision_and_their_window_gives_error_rate_and_p99(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    stable = [make_backend("r1-a"), make_backend("r1-b")]
    new = [make_backend("r2-a")]
    await apply_and_wait(layer, {DEMO: canary(stable, new, 10)})
    zero = await layer.revision_stats()
    assert set(zero) == {(DEMO, 1), (DEMO, 2)} and all(s.requests == 0 for s in zero.values())

    # r2 answers 500 on /fail, r1 does not: the counters say which revision failed.
    for b in stable:
        b.failing = False
    seen = await send(layer, 200, path="/fail")
    after = await layer.revision_stats()
    r1, r2 = window(zero[DEMO, 1], after[DEMO, 1]), window(zero[DEMO, 2], after[DEMO, 2])
    assert r1.by_code == {200: seen["r1-a"] + seen["r1-b"]}
    assert r2.by_code == {500: seen["HTTP 500"]} and 15 <= seen["HTTP 500"] <= 25, seen
    assert (r2.requests, r2.errors) == (seen["HTTP 500"], seen["HTTP 500"])
    assert error_rate(r1) == 0.0 and error_rate(r2) == 1.0
    assert r1.buckets[-1] == (math.inf, r1.requests)
    assert after[DEMO, 1].started == zero[DEMO, 1].started > 0

    # A window of pinned requests to r2: 10 fast 500s, then 40 that take 300 ms (at once).
    before = after
    async with client() as c:
        url = f"{layer.proxy_url}/d/{DEMO}"
        pin = {"X-Rollwise-Revision": "r2"}
        answers = [await c.get(f"{url}/fail", headers=pin) for _ in range(10)]
        answers += await asyncio.gather(*(c.get(f"{url}/sleep/300", headers=pin) for _ in range(40)))
    assert collections.Counter(r.status_code for r in answers) == {200: 40, 500: 10}
    after = await layer.revision_stats()
    w = window(before[DEMO, 2], after[DEMO, 2])
    assert (w.requests, w.errors, w.by_code) == (50, 10, {200: 40, 500: 10})
    assert error_rate(w) == pytest.approx(0.2)
    buckets = dict(w.buckets)
    assert buckets[0.25] <= 10 and buckets[math.inf] == 50, w.buckets  # the 40 slow ones above 250 ms
    # rank 49.5 of 50 is among the slow ones: (0.25, 0.5] unless the machine made them slower still.
    p99 = latency_quantile(w, 0.99)
    assert p99 is not None and 0.3 <= p99 <= 1.5, w.buckets
    if buckets[0.5] == 50:
        assert p99 == pytest.approx(0.25 + 0.25 * (49.5 - buckets[0.25]) / (50 - buckets[0.25]))
    p10 = latency_quantile(w, 0.1)
    assert p10 is not None and p10 <= 0.25, w.buckets
    assert window(before[DEMO, 1], after[DEMO, 1]).requests == 0


async def test_a_backend_refusing_connections_counts_as_502_per_attempt(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    """Connection failures are Traefik's 502s in the counters; the retry middleware's three attempts of a
    GET are three 502s (a POST, not retried, would be one)."""
    alive, dead = make_backend("r1-a"), make_backend("r2-a")
    dead.close()  # its port now refuses connections
    await apply_and_wait(layer, {DEMO: [Backend(alive.address, 1.0, 1), Backend(dead.address, 1.0, 2)]})
    async with client() as c:
        gets = [await c.get(f"{layer.proxy_url}/d/{DEMO}/x", headers={"X-Rollwise-Revision": "r2"}) for _ in range(5)]
        post = await c.post(f"{layer.proxy_url}/d/{DEMO}/x", headers={"X-Rollwise-Revision": "r2"})
    assert [r.status_code for r in gets] == [502] * 5 and post.status_code == 502
    stats = (await layer.revision_stats())[DEMO, 2]
    assert stats.by_code == {502: 3 * 5 + 3}, stats  # connection refused is retried for any method
    assert stats.errors == stats.requests == 18


async def test_started_moves_when_a_revision_left_the_table_and_its_counters_restarted(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    stable, new = [make_backend("r1-a")], [make_backend("r2-a")]
    await apply_and_wait(layer, {DEMO: canary(stable, new, 50)})
    await send(layer, 20, revision="r2")
    first = await layer.revision_stats()
    assert first[DEMO, 2].requests == 20
    # r2 leaves the table: Traefik drops its counters at the first read of its metrics after that.
    await apply_and_wait(layer, {DEMO: canary(stable, [], 0)})
    deadline = time.monotonic() + 5
    while (DEMO, 2) in await layer.revision_stats():
        assert time.monotonic() < deadline, "Traefik kept counting a revision it no longer serves"
    # Back in the table, r2 counts from zero; `started` says so, and the window is what came since.
    await apply_and_wait(layer, {DEMO: canary(stable, new, 50)})
    await send(layer, 25, revision="r2")
    second = await layer.revision_stats()
    assert second[DEMO, 2].requests == 25
    assert second[DEMO, 2].started > first[DEMO, 2].started
    assert second[DEMO, 1].started == first[DEMO, 1].started
    assert window(first[DEMO, 2], second[DEMO, 2]) is second[DEMO, 2]


async def test_started_changes_when_traefik_restarts(layer: TraefikLayer, make_backend: MakeBackend) -> None:
    b = make_backend("r1-a")
    await apply_and_wait(layer, {DEMO: [Backend(b.address, 1.0, 1)]})
    await send(layer, 10)
    before = await layer.revision_stats()
    pid = layer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not await layer.ensure_running():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)  # the next supervision poll
    await send(layer, 3)
    after = await layer.revision_stats()
    assert after[DEMO, 1].requests == 3
    assert after[DEMO, 1].started > before[DEMO, 1].started
    assert window(before[DEMO, 1], after[DEMO, 1]).requests == 3


async def test_no_traffic_has_no_stats() -> None:
    assert await NoTraffic().revision_stats() == {}
    assert RevisionStats().requests == 0
