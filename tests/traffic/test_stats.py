"""The window arithmetic over per-revision counters (`rollwise.traffic.stats`), with hand-made stats.

The same helpers are checked against a real Traefik's counters in test_revision_routing.py.
"""

from __future__ import annotations

import math

import pytest

from rollwise.traffic.base import RevisionStats
from rollwise.traffic.stats import error_rate, latency_quantile, was_reset, window

INF = math.inf


def stats(
    by_code: dict[int, int], buckets: tuple[tuple[float, int], ...] = (), started: float = 100.0
) -> RevisionStats:
    return RevisionStats(
        requests=sum(by_code.values()),
        errors=sum(n for code, n in by_code.items() if code >= 500),
        by_code=by_code,
        buckets=buckets,
        started=started,
    )


BEFORE = stats({200: 90, 500: 10}, ((0.1, 60), (1.0, 95), (INF, 100)))
AFTER = stats({200: 170, 500: 15, 503: 5}, ((0.1, 100), (1.0, 185), (INF, 190)))


def test_window_is_the_difference_of_two_reads() -> None:
    w = window(BEFORE, AFTER)
    assert w == RevisionStats(
        requests=90,
        errors=10,
        by_code={200: 80, 500: 5, 503: 5},
        buckets=((0.1, 40), (1.0, 90), (INF, 90)),
        started=100.0,
    )
    assert error_rate(w) == pytest.approx(10 / 90)


def test_window_leaves_out_codes_that_did_not_move() -> None:
    after = stats({200: 95, 500: 10}, ((0.1, 65), (1.0, 100), (INF, 105)))
    assert window(BEFORE, after).by_code == {200: 5}


def test_window_without_before_is_everything_counted() -> None:
    assert window(None, AFTER) is AFTER


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(stats({200: 500}, ((0.1, 500), (1.0, 500), (INF, 500)), started=200.0), id="proxy-restarted"),
        pytest.param(stats({200: 20}, ((0.1, 20), (1.0, 20), (INF, 20))), id="requests-went-down"),
        pytest.param(stats({200: 300, 500: 5}, ((0.1, 300), (1.0, 300), (INF, 305))), id="a-code-went-down"),
        pytest.param(stats({200: 300, 500: 10}, ((0.1, 10), (1.0, 300), (INF, 310))), id="a-bucket-went-down"),
        pytest.param(stats({200: 300, 500: 10}, ((0.5, 300), (INF, 310))), id="other-bounds"),
    ],
)
def test_a_reset_makes_the_window_the_whole_after(after: RevisionStats) -> None:
    assert was_reset(BEFORE, after)
    assert window(BEFORE, after) is after


def test_same_reads_make_an_empty_window() -> None:
    w = window(AFTER, AFTER)
    assert (w.requests, w.errors, w.by_code) == (0, 0, {})
    assert error_rate(w) is None
    assert latency_quantile(w, 0.99) is None


def test_error_rate() -> None:
    assert error_rate(RevisionStats()) is None
    assert error_rate(stats({200: 3, 502: 1})) == 0.25
    assert error_rate(stats({404: 4})) == 0.0  # a 4xx is the client's, not an error of the revision


HIST = ((0.1, 50), (0.5, 90), (1.0, 100), (INF, 100))


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.1),  # rank 50: the top of the first bucket
        (0.25, 0.05),  # rank 25 within [0, 0.1]
        (0.7, 0.3),  # rank 70: 20 of the 40 in (0.1, 0.5]
        (0.9, 0.5),
        (0.99, 0.95),  # rank 99: 9 of the 10 in (0.5, 1]
        (1.0, 1.0),
        (0.0, 0.0),
    ],
)
def test_latency_quantile_interpolates_within_the_bucket(q: float, expected: float) -> None:
    assert latency_quantile(stats({200: 100}, HIST), q) == pytest.approx(expected)


def test_latency_quantile_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    # As Prometheus's histogram_quantile: nothing is known above the last finite bound.
    assert latency_quantile(stats({200: 20}, ((0.1, 10), (30.0, 15), (INF, 20))), 0.99) == 30.0


def test_latency_quantile_of_a_window() -> None:
    before = stats({200: 10}, ((0.1, 10), (1.0, 10), (INF, 10)))
    after = stats({200: 30}, ((0.1, 10), (1.0, 30), (INF, 30)))
    # The window holds 20 requests, all in (0.1, 1]: rank 19.8 of 20.
    assert latency_quantile(window(before, after), 0.99) == pytest.approx(0.1 + 0.9 * 19.8 / 20)
    # Cumulative since the start, the 10 fast requests pull the p50 down.
    assert latency_quantile(after, 0.5) == pytest.approx(0.1 + 0.9 * 5 / 20)


@pytest.mark.parametrize(
    "buckets",
    [(), ((INF, 5),), ((0.1, 0), (INF, 0)), ((0.1, 3), (1.0, 3))],
    ids=["none", "only-inf", "empty", "no-inf"],
)
def test_latency_quantile_without_a_usable_histogram_is_none(buckets: tuple[tuple[float, int], ...]) -> None:
    assert latency_quantile(stats({200: 5}, buckets), 0.99) is None


@pytest.mark.parametrize("q", [-0.1, 1.1, math.nan])
def test_latency_quantile_refuses_a_quantile_outside_0_1(q: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        latency_quantile(stats({200: 100}, HIST), q)
