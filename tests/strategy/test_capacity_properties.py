"""Capacity property tests (Hypothesis, docs/strategies.md "Capacity"): whole rollouts through the real
`decide` on the in-test simulator with a node of C route slots, every alive or terminating route holding
one until it is gone (drains of random length). In every cycle the routes held never exceed C (the
simulator asserts it after each decision). Then, per strategy:

- rolling with `capacity_fallback: replace` completes whenever C >= D, even with no spare slot, and at
  least D - max(1, unavailable) routes serve in every cycle;
- rolling with `wait` and C == D completes when the unavailability budget frees slots, and never
  completes when it is 0: the progress deadline ends it (rollback, or pause), or, with no deadline,
  the rollout waits for ever without touching a route;
- blue-green never serves fewer than D routes and completes only when green fits beside blue (C >= 2D);
- recreate completes whenever C >= D;
- new routes that keep failing roll back within C, and operators and crashes never push the routes held
  over C.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollwise.model import Decision, Policy, SubStep, parse_policy
from rollwise.strategy.cycle import resolve_rolling_limits

from .simulator import ENDS, Simulator

MAX_CYCLES = 400
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

desired = st.integers(0, 6)
int_or_percent = st.one_of(st.integers(0, 3), st.integers(0, 100).map(lambda p: f"{p}%"))
delays = st.integers(0, 3)
drains = st.integers(0, 3)
rngs = st.randoms(use_true_random=False)


@st.composite
def rolling_policies(draw: st.DrawFn, fallback: str = "replace", **extra: object) -> Policy:
    surge = draw(int_or_percent)
    unavailable = draw(int_or_percent)
    if surge in (0, "0%") and unavailable in (0, "0%"):
        unavailable = 1
    return parse_policy(
        {"strategy": "rolling", "max_surge": surge, "max_unavailable": unavailable, "capacity_fallback": fallback,
         **extra}
    )


def simulator(d: int, policy: Policy, rng: random.Random, *, capacity: int, delay: int, drain: int,
              p_fail: float = 0.0) -> Simulator:
    return Simulator(d, policy, rng, fail_probability={"r2": p_fail}, max_delay=delay, capacity=capacity,
                     max_drain=drain)


# -- rolling, replace -----------------------------------------------------------------------------------


@PROPS
@given(d=desired, policy=rolling_policies(), spare=st.integers(0, 2), delay=delays, drain=drains, rng=rngs)
def test_rolling_replace_completes_whenever_the_node_holds_d_routes(
    d: int, policy: Policy, spare: int, delay: int, drain: int, rng: random.Random
) -> None:
    limits = resolve_rolling_limits(policy.max_surge, policy.max_unavailable, d)
    sim = simulator(d, policy, rng, capacity=d + spare, delay=delay, drain=drain)

    def check(s: Simulator, decision: Decision) -> None:
        assert s.alive() <= d + limits.surge, decision.reason
        assert s.serving() >= d - max(1, limits.unavailable), decision.reason

    last = sim.run(MAX_CYCLES, check)
    assert last.sub_step is SubStep.COMPLETED, last.reason
    assert sim.serving() == d


@PROPS
@given(d=st.integers(1, 6), policy=rolling_policies(), delay=delays, drain=drains, rng=rngs)
def test_rolling_replace_without_spare_room_replaces_one_route_at_a_time(
    d: int, policy: Policy, delay: int, drain: int, rng: random.Random
) -> None:
    """C == D and no unavailability budget: only capacity-forced replacements make room, one at a time."""
    limits = resolve_rolling_limits(policy.max_surge, policy.max_unavailable, d)
    sim = simulator(d, policy, rng, capacity=d, delay=delay, drain=drain)
    last = sim.run(MAX_CYCLES)
    assert last.sub_step is SubStep.COMPLETED, last.reason
    forced = [x for x in sim.decisions if x.reason.startswith("rolling: capacity: replacing one r1 route")]
    assert all(len(x.terminate) == 1 and not x.create for x in forced)
    if limits.unavailable == 0 and limits.surge > 0:
        assert len(forced) == d, [x.reason for x in sim.decisions]


@PROPS
@given(d=st.integers(1, 6), policy=rolling_policies(), delay=delays, drain=drains, rng=rngs)
def test_rolling_replace_rolls_back_failing_routes_within_capacity(
    d: int, policy: Policy, delay: int, drain: int, rng: random.Random
) -> None:
    sim = simulator(d, policy, rng, capacity=d, delay=delay, drain=drain, p_fail=1.0)
    last = sim.run(MAX_CYCLES)
    assert last.sub_step is SubStep.ROLLED_BACK, last.reason
    assert sim.serving() == d


# -- rolling, wait ----------------------------------------------------------------------------------------


@PROPS
@given(d=st.integers(1, 6), policy=rolling_policies("wait"), delay=delays, drain=drains, rng=rngs)
def test_rolling_wait_with_no_spare_room(
    d: int, policy: Policy, delay: int, drain: int, rng: random.Random
) -> None:
    """C == D: the unavailability budget frees slots and the rollout completes; without one it never
    completes, and the progress deadline rolls it back (nothing of r2 was ever placed)."""
    limits = resolve_rolling_limits(policy.max_surge, policy.max_unavailable, d)
    sim = simulator(d, policy, rng, capacity=d, delay=delay, drain=drain)
    last = sim.run(MAX_CYCLES)
    if limits.unavailable > 0:
        assert last.sub_step is SubStep.COMPLETED, last.reason
        assert not any("capacity: replacing" in x.reason for x in sim.decisions)
    else:
        assert last.sub_step is SubStep.ROLLED_BACK, last.reason
        assert last.rollback_reason is not None and last.rollback_reason.value == "progress_deadline"
        assert all(not x.changes_routes for x in sim.decisions)
        assert all("waiting for capacity: needs slot 1 per route, free slot 0" in x.reason for x in sim.decisions[:-1])


@PROPS
@given(d=st.integers(1, 6), surge=st.integers(1, 3), delay=delays, rng=rngs, cycles=st.integers(1, 200))
def test_rolling_wait_without_a_deadline_waits_for_ever(
    d: int, surge: int, delay: int, rng: random.Random, cycles: int
) -> None:
    policy = parse_policy({"strategy": "rolling", "max_surge": surge, "max_unavailable": 0,
                           "capacity_fallback": "wait", "progress_deadline_seconds": None})
    sim = simulator(d, policy, rng, capacity=d, delay=delay, drain=0)
    for _ in range(cycles):
        decision = sim.step()
        assert decision.sub_step is SubStep.PROGRESSING and not decision.changes_routes, decision.reason
        sim.advance()


@PROPS
@given(d=st.integers(1, 6), surge=st.integers(1, 3), rng=rngs)
def test_rolling_wait_with_on_deadline_pause_pauses(d: int, surge: int, rng: random.Random) -> None:
    policy = parse_policy({"strategy": "rolling", "max_surge": surge, "max_unavailable": 0,
                           "capacity_fallback": "wait", "on_deadline": "pause", "progress_deadline_seconds": 30})
    sim = simulator(d, policy, rng, capacity=d, delay=0, drain=0)
    for _ in range(20):
        decision = sim.step()
        if decision.set_paused:
            assert decision.sub_step is SubStep.PAUSED
            return
        sim.advance()
    raise AssertionError("the progress deadline never paused the capacity wait")


# -- blue-green and recreate --------------------------------------------------------------------------


@PROPS
@given(d=st.integers(1, 5), room=st.integers(0, 5), delay=delays, drain=drains, rng=rngs,
       fallback=st.sampled_from(["replace", "wait"]))
def test_blue_green_keeps_blue_and_completes_only_when_green_fits(
    d: int, room: int, delay: int, drain: int, rng: random.Random, fallback: str
) -> None:
    policy = parse_policy({"strategy": "blue_green", "auto_promote": True, "progress_deadline_seconds": 60,
                           "capacity_fallback": fallback})
    sim = simulator(d, policy, rng, capacity=d + room, delay=delay, drain=drain)

    def check(s: Simulator, decision: Decision) -> None:
        assert s.serving() >= d, decision.reason
        if decision.sub_step is not SubStep.COMPLETED and decision.rollback_reason is None:
            assert not any(r.revision == "r1" for r in s.routes if r.status.value == "terminating"), decision.reason

    last = sim.run(MAX_CYCLES, check)
    if room >= d:
        assert last.sub_step is SubStep.COMPLETED, last.reason
    else:
        assert last.sub_step is SubStep.ROLLED_BACK and last.rollback_reason is not None, last.reason
        assert any("green does not fit yet" in x.reason for x in sim.decisions)


@PROPS
@given(d=desired, spare=st.integers(0, 2), delay=delays, drain=drains, rng=rngs)
def test_recreate_completes_whenever_the_node_holds_d_routes(
    d: int, spare: int, delay: int, drain: int, rng: random.Random
) -> None:
    sim = simulator(d, parse_policy({"strategy": "recreate"}), rng, capacity=d + spare, delay=delay, drain=drain)

    def check(s: Simulator, decision: Decision) -> None:
        assert s.alive() <= d, decision.reason

    last = sim.run(MAX_CYCLES, check)
    assert last.sub_step is SubStep.COMPLETED, last.reason


# -- operators and crashes never push the routes held over capacity -------------------------------------


@PROPS
@given(
    capacity=st.integers(0, 6),
    policy=st.one_of(
        rolling_policies(), rolling_policies("wait"),
        st.just(parse_policy({"strategy": "blue_green", "auto_promote": True})),
        st.just(parse_policy({"strategy": "recreate"})),
    ),
    delay=delays,
    drain=drains,
    rng=rngs,
    chaos_cycles=st.integers(0, 40),
)
def test_routes_held_never_exceed_capacity_whatever_happens(
    capacity: int, policy: Policy, delay: int, drain: int, rng: random.Random, chaos_cycles: int
) -> None:
    """Random D (within C), pauses, resumes, aborts and crashes, then calm: the simulator checks held <= C
    after every decision (rollbacks started in the same cycle included), and a rolling `replace`
    rollout still ends."""
    d = rng.randint(0, capacity)
    sim = Simulator(d, policy, rng, fail_probability={"r2": 0.2}, max_delay=delay, crash_probability=0.05,
                    capacity=capacity, max_drain=drain)
    for _ in range(chaos_cycles):
        decision = sim.step()
        if decision.sub_step in ENDS:
            return
        roll = rng.random()
        if roll < 0.1:
            sim.desired = rng.randint(0, capacity)
        elif roll < 0.15:
            sim.paused = not sim.paused
        elif roll < 0.18:
            sim.abort = True
        sim.advance()
    sim.paused = False
    sim.crash_probability = 0.0
    if policy.strategy.value == "rolling" and policy.capacity_fallback.value == "replace":
        assert sim.run(MAX_CYCLES).sub_step in ENDS
    else:
        for _ in range(100):
            if sim.step().sub_step in ENDS:
                break
            sim.advance()
