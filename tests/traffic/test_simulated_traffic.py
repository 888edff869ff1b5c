"""`SimulatedTraffic` (traffic/simulated.py): the TrafficLayer protocol over simulated requests, split by
the table's per-revision weights, counted exactly (no randomness), with requests that found no backend
counted apart."""

from __future__ import annotations

import math

import pytest

from rollwise.traffic.base import Backend, TrafficLayer
from rollwise.traffic.simulated import DURATION_BUCKETS, SimulatedTraffic
from rollwise.traffic.stats import error_rate, latency_quantile, window


def canary_table(stable: float, canary: float) -> dict[str, list[Backend]]:
    """3 stable routes sharing `stable` percent, 1 canary route at `canary` percent."""
    return {
        "sim": [
            *(Backend(f"sim:{port}", stable / 3, revision=1) for port in (1, 2, 3)),
            Backend("sim:4", canary, revision=2),
        ]
    }


def test_is_a_traffic_layer() -> None:
    assert isinstance(SimulatedTraffic(), TrafficLayer)


async def test_requests_split_by_revision_weight_exactly() -> None:
    traffic = SimulatedTraffic(rate=50, started=1000.0)
    await traffic.apply(canary_table(90, 10))
    for _ in range(40):  # 20 s in steps of 0.5 s: 1000 requests
        traffic.advance(0.5)

    stats = await traffic.revision_stats()
    assert set(stats) == {("sim", 1), ("sim", 2)}
    assert (stats[("sim", 1)].requests, stats[("sim", 2)].requests) == (900, 100)
    assert traffic.sent == {"sim": 1000}
    assert traffic.failed_requests == {}
    assert all(s.started == 1000.0 and s.errors == 0 and s.by_code == {200: s.requests} for s in stats.values())


async def test_fractions_carry_over_so_counts_never_drift() -> None:
    # 7 requests/s in steps of 0.1 s is 0.7 request a step, 1 % of which to the canary: nothing is lost.
    traffic = SimulatedTraffic(rate=7)
    await traffic.apply(canary_table(99, 1))
    for step in range(1, 1001):
        traffic.advance(0.1)
        assert traffic.sent["sim"] in (math.floor(step * 0.7 + 1e-9), math.floor(step * 0.7 + 1e-9) - 1)
    stats = await traffic.revision_stats()
    assert stats[("sim", 1)].requests + stats[("sim", 2)].requests == traffic.sent["sim"] == 700
    assert stats[("sim", 2)].requests == 7


async def test_weight_zero_backends_get_nothing_and_no_backend_is_a_failed_request() -> None:
    traffic = SimulatedTraffic(rate=10)
    await traffic.apply({"sim": [Backend("sim:1", 1.0, revision=1), Backend("sim:2", 0.0, revision=2)],
                         "empty": [], "pinned": [Backend("sim:3", 0.0, revision=1)]})
    traffic.advance(3)

    stats = await traffic.revision_stats()
    assert stats[("sim", 1)].requests == 30
    assert stats[("sim", 2)].requests == 0  # in the table (pinned only), counted as zeros
    assert stats[("pinned", 1)].requests == 0
    assert traffic.failed_requests == {"empty": 30, "pinned": 30}
    assert traffic.sent == {"sim": 30, "empty": 30, "pinned": 30}


async def test_error_share_and_latency_per_revision() -> None:
    traffic = SimulatedTraffic(rate=100, started=5.0)
    traffic.set_behaviour("sim", 2, error_share=0.2, latency_s=0.3)
    await traffic.apply(canary_table(50, 50))
    before = await traffic.revision_stats()
    for _ in range(10):
        traffic.advance(0.5)
    after = await traffic.revision_stats()

    canary = window(before[("sim", 2)], after[("sim", 2)])
    stable = window(before[("sim", 1)], after[("sim", 1)])
    assert (canary.requests, canary.errors, canary.by_code) == (250, 50, {200: 200, 500: 50})
    assert error_rate(canary) == 0.2 and error_rate(stable) == 0.0
    assert dict(canary.buckets)[0.25] == 0 and dict(canary.buckets)[0.5] == 250 == dict(canary.buckets)[math.inf]
    assert [b for b, _ in canary.buckets] == [*DURATION_BUCKETS, math.inf]
    p99 = latency_quantile(canary, 0.99)
    assert p99 is not None and 0.25 < p99 <= 0.5
    stable_p99 = latency_quantile(stable, 0.99)
    assert stable_p99 is not None and stable_p99 <= 0.05  # the default 0.05 s


async def test_same_steps_same_counts_and_set_rate_per_deployment() -> None:
    async def run() -> tuple[dict[str, int], dict[tuple[str, int], int]]:
        traffic = SimulatedTraffic(rate=33.3)
        traffic.set_rate("other", 0)
        traffic.set_behaviour("sim", 2, error_share=0.37)
        await traffic.apply({**canary_table(70, 30), "other": [Backend("sim:9", 1.0, revision=1)]})
        for seconds in (0.3, 0.7, 0.25, 1.1) * 20:
            traffic.advance(seconds)
        return traffic.sent, {k: s.errors for k, s in (await traffic.revision_stats()).items()}

    first, again = await run(), await run()
    assert first == again
    # Each revision gets the floor of its own share: 70 % and 30 % of 33.3 x 47 s = 1565.1.
    assert first[0]["sim"] == math.floor(0.7 * 1565.1) + math.floor(0.3 * 1565.1) == 1564
    assert "other" not in first[0]
    assert first[1][("sim", 1)] == 0 and first[1][("other", 1)] == 0


async def test_confirm_removed_follows_the_table() -> None:
    traffic = SimulatedTraffic()
    await traffic.apply(canary_table(90, 10))
    assert not await traffic.confirm_removed("sim", ["sim:4"])
    await traffic.apply(canary_table(100, 0) | {"sim": canary_table(100, 0)["sim"][:3]})
    assert await traffic.confirm_removed("sim", ["sim:4"])
    assert await traffic.confirm_removed("nope", ["sim:1"])
    assert await traffic.wait_applied() and traffic.running and not await traffic.ensure_running()


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_bad_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        SimulatedTraffic(rate=bad)
    with pytest.raises(ValueError):
        SimulatedTraffic().advance(bad)
    with pytest.raises(ValueError):
        SimulatedTraffic().set_behaviour("sim", 2, latency_s=bad)
    with pytest.raises(ValueError):
        SimulatedTraffic().set_behaviour("sim", 2, error_share=bad if bad != -1.0 else 1.5)
