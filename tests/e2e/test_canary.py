"""Canary rollouts as a tested fact, through a real `rollwise server` process, the real Traefik binary and
real example model servers, with real requests through the proxy:

- a canary whose model answers 30 % of its predictions with 500 (`--error-rate 0.3`, its health check
  green all along) is rolled back by the analysis alone, within failure_limit x interval plus one poll
  of the analysis runner (and a margin for a busy 2-core machine) after it first answered; the failed
  measurements are in `GET /v1/deployments/NAME/analysis` with their words, and no request failed
  except the bad canary's own answers;
- a canary held at set_weight 10 gets 8-12 % of 2,000 requests through the proxy, `X-Rollwise-Revision`
  pins a request to r1 or r2 and answers 404 naming an unknown r9, and `rollwise rollout promote --full`
  completes the rollout under load with no failed request.

Every process started here (the server, its routes and Traefik) is stopped when a test ends, passed or
failed: `stopped_everything` kills what a clean stop left.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollwise.cli.demo import free_port
from rollwise.cli.loadgen import LoadGenerator

from .conftest import model_revision
from .server_proc import ROLLWISE, ServerProcess, route_processes, traefik_pid, wait_for

pytestmark = pytest.mark.e2e
NAME = "sentiment"
BAD_ERROR_RATE = "0.3"
INTERVAL = 1.0
FAILURE_LIMIT = 2
ANALYSIS_POLL = 1.0
"""The analysis runner reads the deploying deployments at most once a second (AnalysisRunner.poll_seconds):
its first look at a canary, which starts the first window, comes up to that late."""
MARGIN = 1.5
"""For the rounds a window may end late, the route pass, the proxy reload and the cycle on a busy 2-core
machine. Measured from the canary's first answer to the API showing the rollback: 2.24-2.39 s in 6 runs,
2.31-3.12 s in 3 runs with two CPU hogs beside them (bound 4.5 s)."""
ROLLBACK_BOUND = FAILURE_LIMIT * INTERVAL + ANALYSIS_POLL + MARGIN


# --------------------------------------------------------------------------------------------- helpers


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@contextmanager
def running_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A `rollwise server` with its own ports and data directory; on the way out it is stopped (SIGTERM),
    and whatever it left (route processes, Traefik) is killed, so a failed test leaves nothing behind."""
    server = ServerProcess(tmp_path / "data", api_port=free_port(), proxy_port=free_port())
    try:
        server.start()
        yield server
    finally:
        try:
            status = server.stop(timeout=30)
        except subprocess.TimeoutExpired:
            assert server.proc is not None
            server.proc.kill()
            server.proc.wait()
            status = -9
        deadline = time.monotonic() + 10
        while True:
            left = {p for p in route_processes(server.data_dir) if _alive(p)}
            proxy = traefik_pid(server.data_dir)
            left |= {proxy} if proxy is not None and _alive(proxy) else set()
            if not left:
                break
            if time.monotonic() > deadline:
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                raise AssertionError(f"the server's stop (status {status}) left processes behind: {left}")
            time.sleep(0.1)
        assert status == 0, f"server exited with {status}:\n{server.log_tail()}"




def deployment(client: httpx.Client) -> dict[str, Any]:
    return client.get(f"/v1/deployments/{NAME}").raise_for_status().json()  # type: ignore[no-any-return]


def create(client: httpx.Client, server: ServerProcess, policy: dict[str, Any]) -> None:
    r = client.post("/v1/deployments", json={"name": NAME, "replicas": 3, "policy": policy,
                                             "revision": model_revision("v1")})
    assert r.status_code == 201, r.text
    wait_for("v1 ready", lambda: (d := deployment(client))["lifecycle"] == "ready"
             and sum(r["ready"] for r in d["routes"]) == 3, server)


def start_rollout(client: httpx.Client, label: str, *extra: str) -> int:
    r = client.post(f"/v1/deployments/{NAME}/revisions", json=model_revision(label, *extra))
    assert r.status_code == 201, r.text
    number = int(r.json()["number"])
    r = client.post(f"/v1/deployments/{NAME}/rollout", json={"revision": number})
    assert r.status_code == 202, r.text
    return number


class ThreadLoad:
    """The demo's `LoadGenerator` (answers counted by the version that gave them, a 500 naming its version
    included) from a thread of its own, so the test can block on the server meanwhile."""

    def __init__(self, url: str, *, rate: float = 100.0) -> None:
        self.url = url
        self.rate = rate
        self.load: LoadGenerator | None = None
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        self.load = LoadGenerator(self.url, rate=self.rate)
        async with self.load:
            self._started.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.02)

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        assert self._started.wait(10), "the load did not start"
        assert self.load is not None
        return self.load

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the load did not stop"


def other_failures(load: LoadGenerator, canary: str | None = None) -> dict[str, int]:
    """Failed requests by kind, leaving out the 500s `canary` gave itself."""
    return {k: n for k, n in load.stats.errors.items() if canary is None or k != f"HTTP 500 from {canary}"}


# ----------------------------------------------------------------------------------------------- tests


def test_a_bad_canary_is_rolled_back_by_analysis(tmp_path: Path) -> None:
    policy = {"strategy": "canary", "steps": [{"set_weight": 20}, {"pause": {}}],
              "analysis": {"interval_seconds": INTERVAL, "failure_limit": FAILURE_LIMIT, "min_requests": 5,
                           "metrics": [{"name": "errors", "builtin": "error_rate", "max": 0.05}]}}
    with running_server(tmp_path) as server, server.client() as client:
        create(client, server, policy)
        with ThreadLoad(f"http://127.0.0.1:{server.proxy_port}/d/{NAME}/predict", rate=100) as load:
            wait_for("v1 answering", lambda: load.stats.ok > 50, server)
            number = start_rollout(client, "v2", "--error-rate", BAD_ERROR_RATE)
            assert number == 2
            # The rollback, seen as soon as the API says so (polled every 50 ms).
            dep = wait_for("the rollback", lambda: (d := deployment(client))["rollback_reason"] and d, server,
                           every=0.05)
            seen = time.monotonic()
            done = wait_for("v1 serving alone", lambda: (d := deployment(client))["lifecycle"] == "ready"
                            and all(r["revision"] == 1 for r in d["routes"]) and d, server)
            sent_after = load.stats.sent
            wait_for("traffic after the rollback", lambda: load.stats.sent > sent_after + 100, server)
        canary = load.by_version.get("v2")
        stable = load.by_version["v1"]
        analysis = client.get(f"/v1/deployments/{NAME}/analysis").raise_for_status().json()
        history = [h["message"] for h in client.get(f"/v1/deployments/{NAME}/history").json()]

    assert dep["rollback_reason"] == "analysis", (dep, history[-6:])
    assert (done["current_revision"], done["sub_step"], done["deploying_revision"]) == (1, "rolled_back", None)
    assert done["weights"] is None or done["weights"] == {"r1": 100}, done
    assert canary is not None and canary.first is not None, "the canary never answered"
    delay = seen - canary.first
    print(f"rollback {delay:.2f}s after the canary's first answer (bound {ROLLBACK_BOUND:g}s); canary "
          f"{canary.answers} answers, {canary.errors} of them 500; stable {stable.answers} answers; "
          f"measurements: {[(m['verdict'], m['words']) for m in analysis['measurements']]}")
    assert 0 < delay <= ROLLBACK_BOUND, delay

    failed = [m for m in analysis["measurements"] if m["verdict"] == "failed"]
    assert analysis["revision"] == 2 and analysis["counts"]["failed"] == len(failed) >= FAILURE_LIMIT, analysis
    for m in failed:
        assert m["metric"] == "errors" and m["revision"] == 2, m
        assert re.fullmatch(r"errors = 0\.\d+ > 0\.05", m["words"]), m
        assert float(m["value"]) > 0.05, m
    assert any(f"rolling back (analysis: {failed[-1]['words']})" in h for h in history), history[-6:]
    # Every request but the bad canary's own 500s succeeded: the stable revision never failed one, and
    # nothing was lost to the proxy while the canary came and went.
    assert stable.errors == 0 and other_failures(load, "v2") == {}, dict(load.stats.errors)
    assert canary.errors > 0 and load.stats.failed == canary.errors
    assert canary.last is not None and canary.last <= seen + 1.0  # nothing for v2 once rolled back


def test_canary_weights_and_header_routing_through_the_server(tmp_path: Path) -> None:
    policy = {"strategy": "canary", "steps": [{"set_weight": 10}, {"pause": {}}]}
    with running_server(tmp_path) as server, server.client() as client:
        create(client, server, policy)
        start_rollout(client, "v2")
        dep = wait_for("the canary at 10 %, paused", lambda: (d := deployment(client))["sub_step"]
                       == "awaiting_promotion" and d, server)
        assert dep["weights"] == {"r1": 90, "r2": 10}, dep
        assert sorted(r["revision"] for r in dep["routes"] if r["ready"]) == [1, 1, 1, 2], dep["routes"]
        url = f"http://127.0.0.1:{server.proxy_port}/d/{NAME}/predict"

        # 2,000 requests, 4 at a time: the canary's share is the weight.
        with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=4)) as proxy, ThreadPoolExecutor(4) as pool:
            def one(_: int) -> str:
                r = proxy.post(url, json={"text": "a great model"})
                return str(r.json()["version"]) if r.status_code == 200 else f"HTTP {r.status_code}"

            # The API shows the step once it is stored; the proxy has the new split a route pass and a
            # reload later (0.1-0.3 s: about 60 requests here went to r1 alone before it). Until then an
            # unpinned request never reaches r2.
            wait_for("the proxy to split", lambda: "v2" in pool.map(one, range(20)), server)
            answers = Counter(pool.map(one, range(2000)))
            print(f"2,000 requests at r1 90 / r2 10: {dict(answers)}")
            assert set(answers) == {"v1", "v2"}, answers
            assert 160 <= answers["v2"] <= 240, answers  # 8-12 %

            # Pinned requests reach that revision only; an unknown one is a 404 naming it.
            for pin, version in (("r1", "v1"), ("r2", "v2")):
                pinned = Counter(one_pinned(proxy, url, pin) for _ in range(60))
                assert pinned == Counter({version: 60}), (pin, pinned)
            r = proxy.post(url, json={"text": "a great model"}, headers={"X-Rollwise-Revision": "r9"})
            assert r.status_code == 404, r.text
            body = r.json()
            assert body["error"] == "revision.not_found", body
            assert "revision r9" in body["message"] and "(serving r1, r2)" in body["message"], body

        # `rollout promote --full`, under load: straight to 100 %, no request lost.
        with ThreadLoad(url, rate=100) as load:
            wait_for("load flowing", lambda: load.stats.ok > 50, server)
            promoted = subprocess.run([ROLLWISE, "rollout", "promote", NAME, "--full", "--server", server.url,
                                       "--token", server.token], capture_output=True, text=True, timeout=60)
            assert promoted.returncode == 0, promoted.stdout + promoted.stderr
            assert "full promotion requested" in promoted.stdout, promoted.stdout
            done = wait_for("the rollout completed", lambda: (d := deployment(client))["lifecycle"] == "ready"
                            and d["sub_step"] == "completed" and all(r["revision"] == 2 for r in d["routes"]) and d,
                            server)
            sent_after = load.stats.sent
            wait_for("traffic after completion", lambda: load.stats.sent > sent_after + 100, server)
        assert done["current_revision"] == 2 and done["weights"] is None, done
        assert sorted(r["revision"] for r in done["routes"] if r["ready"]) == [2, 2, 2], done["routes"]
        print(f"promote --full under load: {load.stats.sent} requests, {load.stats.failed} failed, "
              f"answers {dict(load.stats.versions)}")
        assert load.stats.failed == 0, dict(load.stats.errors)
        assert load.stats.versions["v2"] > 100
        assert load.by_version["v2"].last is not None and load.by_version["v1"].last is not None
        assert load.by_version["v1"].last < load.by_version["v2"].last  # v2 alone at the end


def one_pinned(proxy: httpx.Client, url: str, pin: str) -> str:
    r = proxy.post(url, json={"text": "a great model"}, headers={"X-Rollwise-Revision": pin})
    return str(r.json()["version"]) if r.status_code == 200 else f"HTTP {r.status_code}"
