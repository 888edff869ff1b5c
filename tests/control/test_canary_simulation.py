"""`run_simulation` with the simulated proxy: canaries (steps, weights per cycle, analysis on the proxy's
per-revision counters) and `min_ready_seconds`, on the real coordinator, store and simulated runtime.

Each run is deterministic (simulated time, exact request counts), so the numbers below are bounds the
docs promise, not samples: docs/strategies.md ("Canary", "min_ready_seconds"), docs/control.md
("Analysis"), docs/cli.md ("Canaries and traffic in simulated time").
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from rollwise.control.simulation import (
    ANALYSIS_FAILURE_LIMIT,
    ANALYSIS_MIN_REQUESTS,
    SimulationOptions,
    parse_steps,
    run_simulation,
)

D = 3


def v2_weight(row: dict[str, Any]) -> int | None:
    weights = row["weights"]
    return None if weights is None else weights.get("r2", 0)


def events(result: dict[str, Any]) -> list[str]:
    return [e for row in result["timeline"] for e in row["events"]]


# -- min_ready_seconds ------------------------------------------------------------------------------

ROLLING_UNHEALTHY = SimulationOptions(strategy="rolling", replicas=D, max_surge=1, max_unavailable=1,
                                      fail_new="unhealthy", unhealthy_after=1.0)


async def test_without_min_ready_seconds_a_v2_that_fails_after_its_first_probes_lets_every_v1_route_go() -> None:
    """The hazard min_ready_seconds removes: each v2 route counts as ready on its first healthy probes,
    so the rolling update lets the v1 routes go one by one; a second later the v2 routes fail, and for a
    while nothing serves (requests find no backend)."""
    result = (await run_simulation(ROLLING_UNHEALTHY)).to_json()

    assert result["min_serving"] == 0
    assert result["failed_requests"] > 0
    assert any(row["routes"].get("v1", {}).get("ready", 0) == 0 and row["lifecycle"] == "deploying"
               for row in result["timeline"])


@pytest.mark.parametrize("min_ready", [5, 3])
async def test_min_ready_seconds_longer_than_the_time_to_failure_keeps_d_minus_unavailable_serving(
    min_ready: float,
) -> None:
    """A v2 route fails 1 s after it listens, detected within 2 probes of 0.5 s: with min_ready_seconds
    above that, no v2 route ever counts as ready, so at most `unavailable` v1 routes go; the failures
    roll the rollout back."""
    opts = SimulationOptions(**{**ROLLING_UNHEALTHY.__dict__, "min_ready_seconds": min_ready})
    result = (await run_simulation(opts)).to_json()

    assert (result["outcome"], result["final_revision"]) == ("rolled_back", "v1")
    assert result["min_serving"] >= D - 1
    assert all(row["routes"]["v1"]["ready"] >= D - 1 for row in result["timeline"])
    assert result["failed_requests"] == 0
    assert any("healthy for less than min_ready_seconds" in e for e in events(result))
    assert any("rolling back (failure_threshold" in e for e in events(result))


async def test_min_ready_seconds_with_a_good_v2_only_delays_completion() -> None:
    plain = (await run_simulation(SimulationOptions(replicas=D, max_surge=1, max_unavailable=1))).to_json()
    waited = (await run_simulation(SimulationOptions(replicas=D, max_surge=1, max_unavailable=1,
                                                     min_ready_seconds=3))).to_json()
    for result in (plain, waited):
        assert result["outcome"] == "completed" and result["min_serving"] >= D - 1
        assert result["failed_requests"] == 0
    assert waited["timeline"][-1]["t"] >= plain["timeline"][-1]["t"] + 3


# -- canary --------------------------------------------------------------------------------------------


async def test_canary_to_a_good_v2_completes_weights_only_go_up_and_stable_keeps_d_routes() -> None:
    result = (await run_simulation(SimulationOptions(strategy="canary", replicas=D))).to_json()

    assert (result["outcome"], result["final_revision"]) == ("completed", "v2")
    rows = result["timeline"]
    weights = [v2_weight(row) for row in rows]
    # 0 until the canary route is ready, then the steps' 10 and 50, then 100 % (null: by routes) at the end.
    assert weights[-1] in (100, None) and rows[-1]["sub_step"] == "completed"
    seen = [w for i, w in enumerate(weights[:-1]) if i == 0 or w != weights[i - 1]]
    assert seen == [0, 10, 50]
    assert [w or 0 for w in weights[:-1]] == sorted(w or 0 for w in weights[:-1])  # never decreases
    # The stable revision keeps all D routes ready until the rollout completes.
    assert all(row["routes"]["v1"]["ready"] == D for row in rows if row["lifecycle"] == "deploying")
    assert result["min_serving"] >= D
    assert result["failed_requests"] == 0
    assert result["by_revision"]["r2"]["requests"] > 0 and all(
        r["errors"] == 0 for r in result["by_revision"].values()
    )


async def test_canary_answering_errors_is_rolled_back_by_the_analysis_within_its_windows() -> None:
    opts = SimulationOptions(strategy="canary", replicas=D, fail_new="errors", error_share=0.2)
    result = (await run_simulation(opts)).to_json()

    assert (result["outcome"], result["final_revision"]) == ("rolled_back", "v1")
    rows = result["timeline"]
    said = events(result)
    assert any(e.startswith("rolling back (analysis: errors = 0.2 > 0.05)") for e in said), said
    # From the first cycle that gave the canary traffic to the rollback: failure_limit windows of the
    # interval, plus at most a poll of the runner (1 s) and two rounds (the table follows the weights
    # one round later; the rollback is decided in the round that writes the second failure).
    first_traffic = next(row["t"] for row in rows if (v2_weight(row) or 0) > 0)
    assert rows[-1]["t"] - first_traffic <= ANALYSIS_FAILURE_LIMIT * opts.analysis_interval + 1 + 2 * opts.tick
    assert rows[-1]["weights"] is None and rows[-1]["routes"]["v1"]["ready"] == D
    # The canary got at most its weight of the requests, round by round, and the bad answers are
    # error_share of those; the stable revision answered every other request; none found no backend.
    bound = sum((v2_weight(row) or 0) / 100 * opts.rate * opts.tick for row in rows[:-1])
    canary = result["by_revision"]["r2"]
    assert ANALYSIS_FAILURE_LIMIT * ANALYSIS_MIN_REQUESTS <= canary["requests"] <= math.ceil(bound)
    assert canary["errors"] == math.floor(canary["requests"] * opts.error_share)
    assert result["by_revision"]["r1"]["errors"] == 0
    assert result["failed_requests"] == 0
    assert result["min_serving"] >= D


async def test_canary_without_analysis_completes_with_its_errors_counted() -> None:
    opts = SimulationOptions(strategy="canary", replicas=D, fail_new="errors", analysis=False,
                             steps=tuple(parse_steps("20,pause:2")))
    result = (await run_simulation(opts)).to_json()

    assert result["outcome"] == "completed"  # nothing measured the canary: it went all the way
    assert result["by_revision"]["r2"]["errors"] > 0


async def test_an_untimed_pause_ends_the_run_awaiting_promotion_and_runs_repeat() -> None:
    opts = SimulationOptions(strategy="canary", replicas=D, steps=tuple(parse_steps("25, pause:1, pause")))
    first = (await run_simulation(opts)).to_json()
    again = (await run_simulation(opts)).to_json()

    assert first == again
    assert (first["outcome"], first["final_revision"]) == ("awaiting_promotion", "v1")
    assert first["timeline"][-1]["weights"] == {"r1": 75, "r2": 25}
    # The timed pause was waited out (a second of simulated time), not taken for a wait for promote.
    assert any("step 2/3 (pause 1s) done" in e for e in events(first)), events(first)


def test_parse_steps() -> None:
    assert parse_steps("10,pause:5,50,pause:2.5, pause") == [
        {"set_weight": 10}, {"pause": {"seconds": 5}}, {"set_weight": 50}, {"pause": {"seconds": 2.5}}, {"pause": {}},
    ]
    for bad in ("x", "10,", "pause:", "pause:-1", "10%", "set_weight:10"):
        with pytest.raises(ValueError, match="is not a weight or pause:N"):
            parse_steps(bad)
