"""The canary analysis' pure rules (control/rules/analysis.py): verdict tables of the builtin metrics
(max, max_over_stable, both, latency p99 in ms, min_requests), of command metrics (exit 0 / 1 / other,
timeout, a program that cannot start), which deployments are analysed and when a measurement is due."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollwise.control.rules.analysis import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    Measured,
    analysed_spec,
    has_canary_traffic,
    is_due,
    last_line,
    measure_builtin,
    measure_command,
    stable_revision,
)
from rollwise.model import Lifecycle, MetricSpec, Mode, parse_policy
from rollwise.store.records import DeploymentRecord
from rollwise.traffic.base import RevisionStats

NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)
INF = float("inf")


def metric(**fields: Any) -> MetricSpec:
    return MetricSpec.model_validate({"name": "errors", **fields})


def requests(n: int, errors: int = 0, *, buckets: tuple[tuple[float, int], ...] = ()) -> RevisionStats:
    return RevisionStats(requests=n, errors=errors, by_code={200: n - errors, 500: errors}, buckets=buckets)


def latency(fast: int, slow: int, *, slow_bound: float) -> tuple[tuple[float, int], ...]:
    """A histogram: `fast` requests under 0.1 s, `slow` between 0.1 s and `slow_bound`."""
    return ((0.1, fast), (slow_bound, fast + slow), (INF, fast + slow))


# ------------------------------------------------------------------------------------------ error_rate

ERROR_RATE_TABLE = [
    # (metric fields, canary (requests, errors), stable (requests, errors) or None, verdict, value, words)
    ({"max": 0.01}, (1000, 34), (1000, 0), FAILED, "0.034", "errors = 0.034 > 0.01"),
    ({"max": 0.01}, (1000, 10), (1000, 0), PASSED, "0.01", "errors = 0.01 <= 0.01"),
    ({"max": 0.01}, (1000, 2), None, PASSED, "0.002", "errors = 0.002 <= 0.01"),
    ({"max_over_stable": 0.005}, (1000, 30), (1000, 20), FAILED, "0.03",
     "errors = 0.03 > stable 0.02 + 0.005"),
    ({"max_over_stable": 0.005}, (1000, 25), (1000, 20), PASSED, "0.025",
     "errors = 0.025 <= stable 0.02 + 0.005"),  # exactly the bound (float rounding aside) passes
    ({"max_over_stable": 0.005}, (1000, 30), (1000, 0), FAILED, "0.03", "errors = 0.03 > stable 0 + 0.005"),
    ({"max_over_stable": 0.005}, (1000, 30), (0, 0), INCONCLUSIVE, "0.03",
     "inconclusive: errors = 0.03, no requests to the stable revision"),
    ({"max_over_stable": 0.005}, (1000, 30), None, PASSED, "0.03", "errors = 0.03 no stable revision to compare with"),
    ({"max": 0.05, "max_over_stable": 0.005}, (1000, 30), (1000, 28), PASSED, "0.03",
     "errors = 0.03 <= 0.05, <= stable 0.028 + 0.005"),
    ({"max": 0.01, "max_over_stable": 0.005}, (1000, 30), (1000, 28), FAILED, "0.03", "errors = 0.03 > 0.01"),
    ({"max": 0.05, "max_over_stable": 0.005}, (1000, 30), (1000, 0), FAILED, "0.03",
     "errors = 0.03 > stable 0 + 0.005"),
    ({"max": 0.01, "max_over_stable": 0.005}, (1000, 30), (1000, 0), FAILED, "0.03",
     "errors = 0.03 > 0.01, > stable 0 + 0.005"),
    ({"max": 0.01, "max_over_stable": 0.005}, (1000, 30), (0, 0), FAILED, "0.03", "errors = 0.03 > 0.01"),
    ({"max": 0.05, "max_over_stable": 0.005}, (1000, 30), (0, 0), INCONCLUSIVE, "0.03",
     "inconclusive: errors = 0.03, no requests to the stable revision"),
    ({"max": 0.0}, (3000, 1), (3000, 0), FAILED, "0.000333333", "errors = 0.0003333 > 0"),
]


@pytest.mark.parametrize(("fields", "canary", "stable", "verdict", "value", "words"), ERROR_RATE_TABLE)
def test_error_rate(fields: dict[str, Any], canary: tuple[int, int], stable: tuple[int, int] | None,
                    verdict: str, value: str, words: str) -> None:
    measured = measure_builtin(
        metric(builtin="error_rate", **fields), requests(*canary), None if stable is None else requests(*stable),
        min_requests=50,
    )
    assert measured == Measured(verdict, value, words)


@pytest.mark.parametrize(("canary", "min_requests", "words"), [
    (12, 50, "inconclusive: 12 requests < 50"),
    (1, 50, "inconclusive: 1 request < 50"),
    (0, 50, "inconclusive: 0 requests < 50"),
    (0, 0, "inconclusive: no requests"),
    (49, 50, "inconclusive: 49 requests < 50"),
])
def test_too_few_canary_requests_are_inconclusive(canary: int, min_requests: int, words: str) -> None:
    for builtin, bound in (("error_rate", {"max": 0.01}), ("latency_p99_ms", {"max": 800})):
        measured = measure_builtin(metric(builtin=builtin, **bound), requests(canary, canary),
                                   requests(1000), min_requests=min_requests)
        assert measured == Measured(INCONCLUSIVE, None, words)


def test_min_requests_counts_the_canary_only() -> None:
    assert measure_builtin(metric(builtin="error_rate", max=0.01), requests(50), requests(3),
                           min_requests=50).verdict == PASSED
    assert measure_builtin(metric(builtin="error_rate", max=0.01), requests(1), requests(0),
                           min_requests=0).verdict == PASSED


# -------------------------------------------------------------------------------------- latency_p99_ms


def test_latency_p99_is_in_milliseconds() -> None:
    # 100 requests: 98 under 100 ms, 2 between 100 ms and 1 s. The 99th is the first of the two slow ones:
    # rank 99 lies half-way into the (0.1, 1.0] bucket: 0.1 + 0.9 * (99 - 98) / 2 = 0.55 s = 550 ms.
    canary = requests(100, buckets=latency(98, 2, slow_bound=1.0))
    assert measure_builtin(metric(name="latency", builtin="latency_p99_ms", max=800), canary, None,
                           min_requests=50) == Measured(PASSED, "550", "latency = 550 <= 800")
    assert measure_builtin(metric(name="latency", builtin="latency_p99_ms", max=500), canary, None,
                           min_requests=50) == Measured(FAILED, "550", "latency = 550 > 500")


def test_latency_over_stable_compares_milliseconds() -> None:
    canary = requests(100, buckets=latency(98, 2, slow_bound=1.0))  # p99 550 ms
    stable = requests(100, buckets=latency(100, 0, slow_bound=1.0))  # p99 99 ms
    assert measure_builtin(metric(name="latency", builtin="latency_p99_ms", max_over_stable=400), canary, stable,
                           min_requests=50) == Measured(FAILED, "550", "latency = 550 > stable 99 + 400")
    assert measure_builtin(metric(name="latency", builtin="latency_p99_ms", max_over_stable=500), canary, stable,
                           min_requests=50) == Measured(PASSED, "550", "latency = 550 <= stable 99 + 500")
    stable_without_histogram = requests(100)
    assert measure_builtin(metric(name="latency", builtin="latency_p99_ms", max_over_stable=500), canary,
                           stable_without_histogram, min_requests=50).verdict == INCONCLUSIVE


def test_latency_without_a_histogram_is_inconclusive() -> None:
    assert measure_builtin(metric(name="latency", builtin="latency_p99_ms", max=800), requests(100), None,
                           min_requests=50) == Measured(INCONCLUSIVE, None, "inconclusive: no response times counted")


# -------------------------------------------------------------------------------------------- commands


def command(**fields: Any) -> MetricSpec:
    return MetricSpec.model_validate({"name": "eval", "command": ["python", "eval.py"], **fields})


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"exit_code": 0, "output": "loading\naccuracy 0.93\n\n"}, Measured(PASSED, "accuracy 0.93", "eval = accuracy 0.93 (exit 0)")),
    ({"exit_code": 0, "output": ""}, Measured(PASSED, None, "eval passed (exit 0)")),
    ({"exit_code": 1, "output": "accuracy 0.71\n"}, Measured(FAILED, "accuracy 0.71", "eval = accuracy 0.71 (exit 1)")),
    ({"exit_code": 1}, Measured(FAILED, None, "eval failed (exit 1)")),
    ({"exit_code": 2, "output": "Traceback ...\nKeyError: 'x'\n"},
     Measured(INCONCLUSIVE, "KeyError: 'x'", "inconclusive: exit 2: KeyError: 'x'")),
    ({"exit_code": 3}, Measured(INCONCLUSIVE, None, "inconclusive: exit 3")),
    ({"exit_code": -9}, Measured(INCONCLUSIVE, None, "inconclusive: killed by signal 9")),
    ({"exit_code": None, "timed_out": True, "output": "step 1\n"},
     Measured(INCONCLUSIVE, "step 1", "inconclusive: timed out after 120 s")),
    ({"exit_code": None, "error": "no such program"},
     Measured(INCONCLUSIVE, None, "inconclusive: cannot run python: no such program")),
])
def test_command_verdicts(kwargs: dict[str, Any], expected: Measured) -> None:
    assert measure_command(command(timeout_seconds=120), **kwargs) == expected


def test_last_line_is_bounded() -> None:
    assert last_line("a\n  b  \n \n") == "b"
    assert last_line(" \n") is None
    long = last_line("x" * 1000)
    assert long is not None and len(long) == 200 and long.endswith("...")


# ---------------------------------------------------------------------------------- who, and when

CANARY = parse_policy({
    "strategy": "canary", "steps": [{"set_weight": 10}, {"pause": {}}],
    "analysis": {"interval_seconds": 30, "metrics": [{"name": "errors", "builtin": "error_rate", "max": 0.01}]},
})


def deployment(**fields: Any) -> DeploymentRecord:
    base = DeploymentRecord(
        id=1, name="svc", replicas=4, lifecycle=Lifecycle.DEPLOYING, sub_step=None, mode=Mode.FORWARD,
        current_revision=1, deploying_revision=2, paused=False, abort_requested=False, promote_requested=False,
        rollout_started_at=NOW, last_progress_at=None, rollback_reason=None, error_count=0, last_error=None,
        version=3, created_at=NOW, updated_at=NOW, policy=CANARY, canary_step=1, traffic_weights={1: 90, 2: 10},
    )
    return replace(base, **fields)


def test_a_forward_canary_with_traffic_is_analysed() -> None:
    assert analysed_spec(deployment()) is CANARY.analysis
    assert analysed_spec(deployment(paused=True)) is CANARY.analysis  # measuring goes on while paused


@pytest.mark.parametrize("fields", [
    {"mode": Mode.ROLLING_BACK},
    {"lifecycle": Lifecycle.READY, "deploying_revision": None},
    {"policy": parse_policy({"strategy": "rolling"})},
    {"policy": parse_policy({"strategy": "canary", "steps": [{"set_weight": 10}]})},  # no analysis
    {"policy": None},
    {"traffic_weights": {1: 100, 2: 0}},  # before the first set_weight sent requests
    {"traffic_weights": {1: 100}},
    {"traffic_weights": None, "canary_step": 0},
])
def test_not_analysed(fields: dict[str, Any]) -> None:
    assert analysed_spec(deployment(**fields)) is None


def test_canary_traffic_from_the_weights_else_from_the_step() -> None:
    assert has_canary_traffic(deployment(traffic_weights={1: 90, 2: 10}, canary_step=0))
    assert not has_canary_traffic(deployment(traffic_weights={1: 100, 2: 0}, canary_step=2))
    assert has_canary_traffic(deployment(traffic_weights=None, canary_step=1))
    assert has_canary_traffic(deployment(traffic_weights={2: 100}, current_revision=None))


def test_stable_revision() -> None:
    assert stable_revision(deployment()) == 1
    assert stable_revision(deployment(current_revision=None)) is None
    assert stable_revision(deployment(current_revision=2)) is None


def test_due_once_an_interval_passed_since_the_window_started() -> None:
    assert not is_due(NOW, NOW, 30)
    assert not is_due(NOW, NOW + timedelta(seconds=29.9), 30)
    assert is_due(NOW, NOW + timedelta(seconds=30), 30)
    assert is_due(NOW, NOW + timedelta(seconds=95), 30)
