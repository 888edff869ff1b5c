"""`run_simulation`: the JSON contract the CLI's `rollwise simulate --json` prints, and determinism."""

from __future__ import annotations

import json

from rollwise.control.simulation import SimulationOptions, run_simulation


async def test_json_contract() -> None:
    result = (await run_simulation(SimulationOptions(replicas=2, seed=3))).to_json()

    assert set(result) == {"outcome", "final_revision", "cycles", "max_alive", "min_serving", "max_held", "requests",
                           "failed_requests", "by_revision", "timeline"}
    assert (result["outcome"], result["final_revision"]) == ("completed", "v2")
    assert isinstance(result["cycles"], int) and result["cycles"] >= 1
    assert result["max_alive"] <= 2 + 1 and result["min_serving"] >= 2
    assert result["max_held"] is None  # no capacity: nothing counted
    assert json.loads(json.dumps(result)) == result  # plain JSON values only
    first, last = result["timeline"][0], result["timeline"][-1]
    assert {"cycle", "t", "lifecycle", "sub_step", "alive", "serving", "held", "weights", "routes", "events"} <= set(first)
    assert all(row["weights"] is None for row in result["timeline"])  # a rolling update splits by routes
    # 50 requests/s (the default) from v2's activation until the last round, all answered (each of the
    # two revisions is sent the whole requests it is owed: less than one each may still be owed).
    assert 50 * last["t"] - 2 < result["requests"] <= 50 * last["t"] and result["failed_requests"] == 0
    assert sum(r["requests"] for r in result["by_revision"].values()) == result["requests"]
    assert (last["lifecycle"], last["sub_step"]) == ("ready", "completed")
    assert [e["t"] for e in result["timeline"]] == sorted(e["t"] for e in result["timeline"])


async def test_same_seed_same_result_and_failures_roll_back() -> None:
    opts = SimulationOptions(strategy="blue_green", auto_promote=True, replicas=2, seed=11, fail_new="start")
    first = (await run_simulation(opts)).to_json()
    second = (await run_simulation(opts)).to_json()

    assert first == second
    assert (first["outcome"], first["final_revision"]) == ("rolled_back", "v1")
    assert first["min_serving"] >= 2


async def test_the_seed_drives_the_startup_jitter() -> None:
    def opts(seed: int) -> SimulationOptions:
        return SimulationOptions(replicas=5, max_surge=2, max_unavailable=1, startup_seconds=3, seed=seed)

    one, again, other = [(await run_simulation(opts(seed))).to_json() for seed in (1, 1, 2)]

    assert one == again
    assert one["timeline"] != other["timeline"]
    for result in (one, other):
        assert result["outcome"] == "completed"
        assert result["max_alive"] <= 5 + 2 and result["min_serving"] >= 5 - 1


async def test_stops_when_an_operator_is_needed() -> None:
    result = await run_simulation(SimulationOptions(strategy="blue_green", replicas=1))
    assert (result.outcome, result.final_revision) == ("awaiting_promotion", "v1")
