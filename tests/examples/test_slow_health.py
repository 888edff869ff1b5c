"""--slow-health and --slow-health-every, in both HTTP modes: which /healthz answers are slow, that a
probe with a shorter timeout fails exactly on those, and that predictions never wait.

Durations are checked against wide margins (a fast answer takes milliseconds, a slow one at least the
delay): a behaviour check that a busy machine does not break, not a benchmark.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest
from model_server_process import Server

SLOW = 2.0
"""The delay of the slow answers in these tests: at least this long by construction."""
FAST = SLOW
"""A fast /healthz answer takes milliseconds; anything that beats the slow delay counts as fast (a busy
machine stretches milliseconds, never to the delay)."""


def timed_get(url: str, *, timeout: float = 10.0) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = httpx.get(url, timeout=timeout)
    return time.monotonic() - started, response


def test_every_second_healthz_is_slow_starting_with_the_second(start_server: Callable[..., Server]) -> None:
    server = start_server("--slow-health", str(SLOW), "--slow-health-every", "2")
    durations: list[float] = []
    for _ in range(4):
        elapsed, response = timed_get(f"{server.url}/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        durations.append(elapsed)
    fast, slow = durations[0::2], durations[1::2]  # the 1st, 3rd; the 2nd, 4th
    assert all(d < FAST for d in fast), durations
    assert all(d >= SLOW for d in slow), durations


def test_by_default_every_healthz_is_slow(start_server: Callable[..., Server]) -> None:
    server = start_server("--slow-health", "0.5")
    for _ in range(3):
        elapsed, response = timed_get(f"{server.url}/healthz")
        assert response.status_code == 200
        assert elapsed >= 0.5


def test_without_the_flag_healthz_is_fast(start_server: Callable[..., Server]) -> None:
    server = start_server()
    for _ in range(4):
        assert timed_get(f"{server.url}/healthz")[0] < FAST


def test_a_probe_with_a_shorter_timeout_fails_on_every_nth_only_and_leaves_no_trace(
    start_server: Callable[..., Server],
) -> None:
    # What rollwise's health checker sees of a route like MLServer on a saturated machine: most probes
    # pass, one in three times out. The server must shrug off the probes that gave up.
    server = start_server("--slow-health", "2", "--slow-health-every", "3", "--version", "v3")
    outcomes: list[int | str] = []
    for _ in range(6):
        try:
            outcomes.append(httpx.get(f"{server.url}/healthz", timeout=1.0).status_code)
        except httpx.TimeoutException:
            outcomes.append("timeout")
    assert outcomes == [200, 200, "timeout", 200, 200, "timeout"]
    assert httpx.post(f"{server.url}/predict", json={"text": "great"}).json()["version"] == "v3"
    code, err = server.stop()
    assert code == 0
    assert len(err.strip().splitlines()) == 2, err  # started, stopped: no traceback for the gone clients


def test_a_slow_healthz_holds_up_neither_predictions_nor_other_requests(
    start_server: Callable[..., Server],
) -> None:
    server = start_server("--slow-health", "5")
    health: dict[str, float] = {}
    probe = threading.Thread(target=lambda: health.setdefault("elapsed", timed_get(f"{server.url}/healthz")[0]))
    probe.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(5):
                assert client.post("/predict", json={"text": "awful"}).json()["label"] == "negative"
                assert client.get("/version").status_code == 200
        assert probe.is_alive()  # ten answers came while the slow /healthz was pending
    finally:
        probe.join(timeout=10)
    assert health["elapsed"] >= 5.0


@pytest.mark.parametrize("args", [["--slow-health-every", "0"], ["--slow-health", "-1"], ["--slow-health-every", "x"]])
def test_bad_values_are_refused(start_server: Callable[..., Server], args: list[str]) -> None:
    server = start_server(*args, wait=False)
    assert server.process.wait(timeout=10) == 2  # argparse's usage error
    assert "--slow-health" in server.stop()[1]
