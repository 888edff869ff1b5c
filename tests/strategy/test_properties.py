"""Property tests (Hypothesis): whole rollouts driven through the real `decide` by the in-test
simulator, with random D, settings, readiness delays and failures. In every cycle: the surge bound
(rolling D + surge, blue-green 2D, recreate D), availability (rolling D - unavailable, blue-green D),
canary weights that never decrease and a stable revision that keeps D routes,
routes created only for the target revision, decisions well formed; and every rollout ends within a
bounded number of cycles: completed when its routes become ready, rolled back when they keep failing.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollwise.model import Decision, Mode, Policy, SubStep, parse_policy
from rollwise.strategy.cycle import resolve_rolling_limits

from .helpers import check_invariants
from .simulator import ENDS, Simulator

MAX_CYCLES = 400
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

desired = st.integers(0, 8)
int_or_percent = st.one_of(st.integers(0, 4), st.integers(0, 100).map(lambda p: f"{p}%"))
delays = st.integers(0, 4)
rngs = st.randoms(use_true_random=False)


@st.composite
def rolling_policies(draw: st.DrawFn) -> Policy:
    surge = draw(int_or_percent)
    unavailable = draw(int_or_percent)
    if surge in (0, "0%") and unavailable in (0, "0%"):
        unavailable = 1
    return parse_policy({"strategy": "rolling", "max_surge": surge, "max_unavailable": unavailable})


@st.composite
def canary_policies(draw: st.DrawFn) -> Policy:
    """1-4 set_weight steps (non-decreasing weights) with pauses of 0-30 s or for promote between them."""
    weights = sorted(draw(st.lists(st.integers(1, 99), min_size=1, max_size=4)))
    steps: list[dict[str, object]] = []
    for weight in weights:
        if draw(st.booleans()):
            seconds = draw(st.sampled_from([None, 0, 5, 12, 30]))
            steps.append({"pause": {} if seconds is None else {"seconds": seconds}})
        steps.append({"set_weight": weight})
    if draw(st.booleans()):
        steps.append({"pause": draw(st.sampled_from([{}, {"seconds": 10}]))})
    return parse_policy({"strategy": "canary", "steps": steps, "max_surge": draw(int_or_percent)})


@st.composite
def blue_green_policies(draw: st.DrawFn) -> Policy:
    return parse_policy(
        {
            "strategy": "blue_green",
            "auto_promote": draw(st.booleans()),
            "promote_delay_seconds": draw(st.sampled_from([0, 5, 12, 60])),
        }
    )


# -- rolling ----------------------------------------------------------------------------------------


@PROPS
@given(d=desired, policy=rolling_policies(), delay=delays, rng=rngs, p_fail=st.sampled_from([0.0, 0.2, 0.5]))
def test_rolling_limits_hold_every_cycle_and_the_rollout_ends(
    d: int, policy: Policy, delay: int, rng: random.Random, p_fail: float
) -> None:
    limits = resolve_rolling_limits(policy.max_surge, policy.max_unavailable, d)
    sim = Simulator(d, policy, rng, fail_probability={"r2": p_fail}, max_delay=delay)

    def check(s: Simulator, decision: Decision) -> None:
        assert s.alive() <= d + limits.surge, decision.reason
        # no ready route ever fails in this world, so availability must hold in every cycle
        assert s.serving() >= d - limits.unavailable, decision.reason

    last = sim.run(MAX_CYCLES, check)
    if p_fail == 0.0:
        assert last.sub_step is SubStep.COMPLETED, last.reason
    assert last.sub_step in (SubStep.COMPLETED, SubStep.ROLLED_BACK)
    _assert_final_state(sim, last)


@PROPS
@given(d=st.integers(1, 8), policy=rolling_policies(), delay=delays, rng=rngs)
def test_rolling_whose_new_routes_keep_failing_rolls_back(
    d: int, policy: Policy, delay: int, rng: random.Random
) -> None:
    limits = resolve_rolling_limits(policy.max_surge, policy.max_unavailable, d)
    sim = Simulator(d, policy, rng, fail_probability={"r2": 1.0}, max_delay=delay)

    def check(s: Simulator, decision: Decision) -> None:
        assert s.alive() <= d + limits.surge
        assert s.serving() >= d - limits.unavailable

    last = sim.run(MAX_CYCLES, check)
    assert last.sub_step is SubStep.ROLLED_BACK, last.reason
    assert any(x.rollback_reason is not None for x in sim.decisions)
    _assert_final_state(sim, last)


# -- blue-green -------------------------------------------------------------------------------------


@PROPS
@given(d=desired, policy=blue_green_policies(), delay=delays, rng=rngs, p_fail=st.sampled_from([0.0, 0.2, 1.0]))
def test_blue_green_never_exceeds_2d_and_always_serves_d(
    d: int, policy: Policy, delay: int, rng: random.Random, p_fail: float
) -> None:
    sim = Simulator(d, policy, rng, fail_probability={"r2": p_fail}, max_delay=delay)

    def check(s: Simulator, decision: Decision) -> None:
        assert s.alive() <= 2 * d, decision.reason
        assert s.serving() >= d, decision.reason
        if decision.sub_step is SubStep.COMPLETED:
            assert all(r.revision == "r2" for r in s.routes if r.status.is_alive)

    last = sim.run(MAX_CYCLES, check)
    if p_fail == 0.0:
        assert last.sub_step is SubStep.COMPLETED, last.reason
    if p_fail == 1.0 and d > 0:
        assert last.sub_step is SubStep.ROLLED_BACK, last.reason
    _assert_final_state(sim, last)


# -- recreate ---------------------------------------------------------------------------------------


@PROPS
@given(d=desired, delay=delays, rng=rngs, p_fail=st.sampled_from([0.0, 0.2, 1.0]))
def test_recreate_never_exceeds_d(d: int, delay: int, rng: random.Random, p_fail: float) -> None:
    sim = Simulator(d, parse_policy({"strategy": "recreate"}), rng, fail_probability={"r2": p_fail}, max_delay=delay)

    def check(s: Simulator, decision: Decision) -> None:
        assert s.alive() <= d, decision.reason
        revisions = {r.revision for r in s.routes if r.status.is_alive and not r.failed}
        assert len(revisions) <= 1, "two revisions alive at once"

    last = sim.run(MAX_CYCLES, check)
    if p_fail == 0.0:
        assert last.sub_step is SubStep.COMPLETED, last.reason
    if p_fail == 1.0 and d > 0:
        assert last.sub_step is SubStep.ROLLED_BACK, last.reason
    _assert_final_state(sim, last)


# -- canary -----------------------------------------------------------------------------------------


@PROPS
@given(d=desired, policy=canary_policies(), delay=delays, rng=rngs, p_fail=st.sampled_from([0.0, 0.2, 1.0]),
       promote=st.sampled_from([0.3, 1.0]))
def test_canary_weights_never_decrease_and_stable_keeps_d_routes(
    d: int, policy: Policy, delay: int, rng: random.Random, p_fail: float, promote: float
) -> None:
    """Forward progress never lowers the canary's weight; the stable revision keeps its D routes until
    the rollout completes (so a rollback is instant); the canary never has more than D routes; the
    split is 100 % canary when completed, 100 % stable when rolled back."""
    sim = Simulator(d, policy, rng, fail_probability={"r2": p_fail}, max_delay=delay, promote_probability=promote)
    seen = {"weight": 0}

    def check(s: Simulator, decision: Decision) -> None:
        weights = decision.weights
        assert weights is not None, decision.reason
        alive = [r for r in s.routes if r.status.is_alive and not r.failed]
        if decision.sub_step is SubStep.COMPLETED:
            assert weights == {"r2": 100}
        elif decision.mode is Mode.ROLLING_BACK:
            assert weights == {"r1": 100} and decision.sub_step is SubStep.ROLLED_BACK
            assert all(r.revision == "r1" for r in alive) and len(alive) == d
        else:
            assert weights["r2"] >= seen["weight"], decision.reason
            seen["weight"] = weights["r2"]
            assert sum(1 for r in alive if r.revision == "r1") == d, decision.reason
            assert sum(1 for r in alive if r.revision == "r2") <= d, decision.reason

    last = sim.run(MAX_CYCLES, check)
    if p_fail == 0.0:
        assert last.sub_step is SubStep.COMPLETED, last.reason
    if p_fail == 1.0 and d > 0:
        assert last.sub_step is SubStep.ROLLED_BACK, last.reason
    _assert_final_state(sim, last)


# -- chaos: operators and crashes, then calm ---------------------------------------------------------


@PROPS
@given(
    d=desired,
    policy=st.one_of(
        rolling_policies(), blue_green_policies(), st.just(parse_policy({"strategy": "recreate"})), canary_policies()
    ),
    delay=delays,
    rng=rngs,
    chaos_cycles=st.integers(0, 40),
    p_fail=st.sampled_from([0.0, 0.3]),
)
def test_any_rollout_ends_after_operators_and_crashes_stop(
    d: int, policy: Policy, delay: int, rng: random.Random, chaos_cycles: int, p_fail: float
) -> None:
    """Random D changes, pauses, resumes, aborts and crashes of ready new routes for a while; every
    decision stays well formed, and once things calm down the rollout ends."""
    sim = Simulator(d, policy, rng, fail_probability={"r2": p_fail}, max_delay=delay, crash_probability=0.05)
    for _ in range(chaos_cycles):
        before = sim.deployment()
        views = sim.views()
        decision = sim.step()
        check_invariants(decision, before, views)
        if decision.sub_step in ENDS:
            _assert_final_state(sim, decision)
            return
        roll = rng.random()
        if roll < 0.1:
            sim.desired = rng.randint(0, 8)
        elif roll < 0.15:
            sim.paused = not sim.paused
        elif roll < 0.18:
            sim.abort = True
        elif roll < 0.25 and decision.sub_step is SubStep.AWAITING_PROMOTION:
            sim.promote = True
        elif roll < 0.27 and sim.policy.strategy.value == "canary":
            sim.promote_full = True
        sim.advance()
    sim.paused = False
    sim.crash_probability = 0.0
    last = sim.run(MAX_CYCLES, lambda s, dec: None)
    assert last.sub_step in ENDS
    _assert_final_state(sim, last)


def _assert_final_state(sim: Simulator, last: Decision) -> None:
    """After the terminal decision is applied: D alive routes of the revision that now serves (blue-
    green rollback leaves blue as it was), nothing of the other revision alive (rolling, recreate)."""
    serving_revision = "r2" if last.sub_step is SubStep.COMPLETED else "r1"
    alive = [r for r in sim.routes if r.status.is_alive and not r.failed]
    if last.sub_step is SubStep.COMPLETED:
        assert last.mode is Mode.FORWARD
        assert all(r.revision == "r2" for r in alive)
        assert len(alive) == sim.desired
        assert sim.serving() == sim.desired
    else:
        assert last.mode is Mode.ROLLING_BACK
        assert all(r.revision == serving_revision for r in alive)
        if sim.policy.strategy.value not in ("blue_green", "canary"):
            assert len(alive) == sim.desired and sim.serving() == sim.desired
