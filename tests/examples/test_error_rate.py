"""--error-rate F: which /predict answers are 500 (exactly floor(n F) of the first n, evenly spread, the
same in both HTTP modes and under concurrent requests), what those answers say (the version that gave
them), and that /healthz, /version and bad requests are left alone: only an analysis of the answers can
tell such a server is bad."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import httpx
import pytest
from model_server_process import Server

from rollwise.examples._serving import ErrorSchedule

# ------------------------------------------------------------------------------------- the schedule


def failing(schedule: ErrorSchedule, n: int) -> list[int]:
    """The 1-based numbers of the first n predictions that fail."""
    return [i for i in range(1, n + 1) if schedule.next_fails()]


def test_a_fifth_fails_every_fifth_prediction() -> None:
    assert failing(ErrorSchedule(0.2), 20) == [5, 10, 15, 20]


def test_three_tenths_fail_evenly_spread() -> None:
    assert failing(ErrorSchedule("0.3"), 20) == [4, 7, 10, 14, 17, 20]


@pytest.mark.parametrize("rate", ["0.05", "0.2", "0.3", "1/3", "0.999", "0.5"])
def test_exactly_floor_n_f_of_the_first_n_fail_whatever_n(rate: str) -> None:
    schedule = ErrorSchedule(rate)
    fraction = Fraction(rate)
    failed = 0
    for n in range(1, 2001):
        failed += schedule.next_fails()
        assert failed == math.floor(n * fraction), n


def test_a_float_is_taken_as_the_decimal_it_prints_as() -> None:
    # 0.3 as a float is a hair below 3/10; taken as is, the 10th prediction would not fail.
    schedule = ErrorSchedule(0.3)
    assert schedule.rate == Fraction(3, 10)
    assert failing(schedule, 10) == [4, 7, 10]


def test_zero_fails_none_and_one_fails_all() -> None:
    assert failing(ErrorSchedule(0), 100) == []
    assert failing(ErrorSchedule(1), 5) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("rate", [-0.1, 1.01, "2"])
def test_a_rate_outside_0_1_is_refused(rate: float | str) -> None:
    with pytest.raises(ValueError, match="not between 0 and 1"):
        ErrorSchedule(rate)


# ------------------------------------------------------------------------------- the server, both modes


def predict(client: httpx.Client, text: str = "a great model") -> httpx.Response:
    return client.post("/predict", json={"text": text})


def test_every_fifth_prediction_is_a_500_naming_the_version(start_server: Callable[..., Server]) -> None:
    server = start_server("--version", "v3", "--error-rate", "0.2")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answers = [predict(client) for _ in range(20)]
        assert [i for i, a in enumerate(answers, 1) if a.status_code != 200] == [5, 10, 15, 20]
        for a in answers:
            if a.status_code == 200:
                assert a.json()["version"] == "v3" and a.json()["label"] == "positive"
            else:
                assert a.status_code == 500
                assert a.headers["content-type"] == "application/json"
                assert a.json() == {"error": "injected failure (--error-rate 0.2)", "version": "v3"}
        # Health and version answers are untouched, and never take a turn of the schedule.
        for _ in range(10):
            assert (client.get("/healthz").status_code, client.get("/healthz").json()) == (200, {"status": "ok"})
            assert client.get("/version").json()["version"] == "v3"
        # Refused requests do not count either: the 25th prediction is still the next to fail.
        assert client.post("/predict", content=b"not json").status_code == 400
        assert client.post("/predict", json={"text": 3}).status_code == 400
        assert [predict(client).status_code for _ in range(5)] == [200, 200, 200, 200, 500]
    code, err = server.stop()
    assert code == 0 and "Traceback" not in err, err


def test_concurrent_predictions_fail_exactly_the_share(start_server: Callable[..., Server]) -> None:
    server = start_server("--error-rate", "0.3", "--version", "v2")
    with httpx.Client(base_url=server.url, timeout=10,
                      limits=httpx.Limits(max_connections=16)) as client, ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: predict(client).status_code, range(200)))
    assert codes.count(500) == 60 and codes.count(200) == 140


def test_without_the_flag_nothing_fails(start_server: Callable[..., Server]) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert {predict(client).status_code for _ in range(30)} == {200}


def test_error_rate_one_fails_every_prediction_but_stays_healthy(start_server: Callable[..., Server]) -> None:
    server = start_server("--error-rate", "1")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert {predict(client).status_code for _ in range(10)} == {500}
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("value", ["1.5", "-0.1", "x", "nan"])
def test_bad_values_are_refused(start_server: Callable[..., Server], value: str) -> None:
    server = start_server("--error-rate", value, wait=False)
    assert server.process.wait(timeout=10) == 2  # argparse's usage error
    assert "--error-rate" in server.stop()[1]
