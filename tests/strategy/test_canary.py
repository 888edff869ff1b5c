"""Canary (docs/strategies.md "Canary"): table tests of every rule — the steps (set_weight creating c
routes and completing only when they are ready, timed pauses with requeue_after, pause {} waiting for
promote, promote completing one step, promote --full skipping to the final step), the final step
within max_surge, 100 % and completion, the weights at every step, capacity, the analysis (failure
limit, inconclusive measurements, the final step waiting for the interval), the rollback (100 % stable
in that cycle), abort / pause / resume, the progress deadline and the states no rule expects."""

from __future__ import annotations

import pytest

from rollwise.model import AnalysisCounts, ValidationFailed
from rollwise.strategy.canary import routes_for

from .helpers import Expect, Row, canary, check_row, dep, prov, ready, route, row, run, slots

STEPS = canary(10, 60.0, 50, None)
"""step 0 set_weight 10 (D=4: c 1), step 1 pause 60 s, step 2 set_weight 50 (c 2), step 3 pause {}; 4 = final."""
STABLE = ready("a", "r1", 4)
ANALYSIS = {"interval_seconds": 30, "failure_limit": 2, "metrics": [{"name": "errors", "builtin": "error_rate", "max": 0.01}]}
WITH_ANALYSIS = canary(10, 60.0, 50, None, analysis=ANALYSIS)


def canaries(n: int, **kw: object) -> list:
    """n ready canary routes b1..bn, created after the stable ones."""
    return ready("b", "r2", n, created=40, **kw)  # type: ignore[arg-type]


def split(stable: int) -> dict[str, int]:
    return {"r1": stable, "r2": 100 - stable}


STEP_ROWS = [
    # -- before the first set_weight ------------------------------------------------------------------
    row(
        "a policy that opens with pause {}: no canary route, 100 % stable, waits for promote",
        dep(4), STABLE, canary(None, 10),
        Expect("awaiting_promotion", weights=split(100),
               reason_has=["canary: step 1/2 (pause until promote): r2 routes 0/0 ready", "waiting for promote",
                           "traffic r1 100%, r2 0%"]),
    ),
    row(
        "a policy that opens with a timed pause: 10 s of 30 gone, requeue in 20 s",
        dep(4, step_started=50), STABLE, canary(30.0, 10),
        Expect("awaiting_promotion", weights=split(100), requeue=20, reason_has=["step 1/2 (pause 30s)", "20s left"]),
    ),
    # -- set_weight: c routes, completing only when they are ready -------------------------------------
    row(
        "step set_weight 10, D=4: c = 1 canary route created, stable keeps 4, weights stay 100/0",
        dep(4), STABLE, STEPS,
        Expect("provisioning", create=1, weights=split(100),
               reason_has=["canary: step 1/4 (set_weight 10): created 1, terminating 0; r2 routes 0/1 ready"]),
    ),
    row(
        "set_weight: the canary route provisioning, nothing more to create",
        dep(4), STABLE + prov("b", "r2", 1), STEPS,
        Expect("provisioning", weights=split(100), reason_has=["r2 routes 0/1 ready, 1 provisioning, 0 unready"]),
    ),
    row(
        "set_weight: the canary route running but not ready: progressing, weights still 100/0",
        dep(4), STABLE + [route("b1", "r2", "running", "not_checked", created=41)], STEPS,
        Expect("progressing", weights=split(100), reason_has=["0/1 ready, 0 provisioning, 1 unready"]),
    ),
    row(
        "set_weight completes when c routes are ready: next step (pause 60 s) starts now, weights 90/10",
        dep(4), STABLE + canaries(1), STEPS,
        Expect("awaiting_promotion", set_step=1, weights=split(90), requeue=60,
               reason_has=["canary: step 1/4 (set_weight 10) done; step 2/4 (pause 60s): ", "60s left",
                           "traffic r1 90%, r2 10%"]),
    ),
    row(
        "timed pause: 30 s of 60 gone, requeue_after 30, nothing changes",
        dep(4, step=1, step_started=30), STABLE + canaries(1), STEPS,
        Expect("awaiting_promotion", weights=split(90), requeue=30, reason_has=["30s left"]),
    ),
    row(
        "timed pause over (>=): set_weight 50 starts, c = 2: one more created, weights stay 90/10",
        dep(4, step=1, step_started=0), STABLE + canaries(1), STEPS,
        Expect("provisioning", create=1, set_step=2, weights=split(90),
               reason_has=["step 2/4 (pause 60s) done; step 3/4 (set_weight 50): created 1"]),
    ),
    row(
        "set_weight 50 with 1 of 2 ready: waits, the weight stays at the step before (10)",
        dep(4, step=2), STABLE + canaries(1) + prov("b", "r2", 1, start=2), STEPS,
        Expect("provisioning", weights=split(90), reason_has=["r2 routes 1/2 ready, 1 provisioning"]),
    ),
    row(
        "set_weight 50 with 2 ready: done, pause {} starts, weights 50/50, no requeue",
        dep(4, step=2), STABLE + canaries(2), STEPS,
        Expect("awaiting_promotion", set_step=3, weights=split(50),
               reason_has=["step 3/4 (set_weight 50) done; step 4/4 (pause until promote)", "waiting for promote"]),
    ),
    row(
        "pause {} without promote: waits for ever (no requeue, no deadline)",
        dep(4, step=3, progress=-10000), STABLE + canaries(2), STEPS,
        Expect("awaiting_promotion", weights=split(50)),
    ),
    row(
        "c = max(1, ceil(D * w / 100)): D=10, set_weight 15 -> 2 routes",
        dep(10), ready("a", "r1", 10), canary(15),
        Expect("provisioning", create=2, weights=split(100)),
    ),
    row(
        "set_weight steps that need no more routes pass in one cycle: 10 and 20 (c 1 each), then 50",
        dep(4), STABLE + canaries(1), canary(10, 20, 50),
        Expect("provisioning", create=1, set_step=2, weights=split(80),
               reason_has=["step 1/3 (set_weight 10) done; step 2/3 (set_weight 20) done; step 3/3 (set_weight 50)"]),
    ),
    row(
        "pause {seconds: 0} passes at once",
        dep(4), STABLE + canaries(1), canary(10, 0.0, 50),
        Expect("provisioning", create=1, set_step=2, weights=split(90)),
    ),
    # -- promote ---------------------------------------------------------------------------------------
    row(
        "promote on pause {}: the step completes, the final step starts (surge 25% of 4 = 1)",
        dep(4, step=3, promote=True), STABLE + canaries(2), STEPS,
        Expect("provisioning", create=1, set_step=4, weights=split(50),
               reason_has=["step 4/4 (pause until promote) completed by promote; final step: created 1"]),
    ),
    row(
        "promote on a timed pause: completes it early",
        dep(4, step=1, step_started=55, promote=True), STABLE + canaries(1), STEPS,
        Expect("provisioning", create=1, set_step=2, weights=split(90), reason_has=["completed by promote"]),
    ),
    row(
        "promote completes ONE step: the set_weight step waiting for its route; the pause after it starts",
        dep(4, promote=True), STABLE, STEPS,
        Expect("awaiting_promotion", create=1, set_step=1, weights=split(100), requeue=60,
               reason_has=["step 1/4 (set_weight 10) completed by promote; step 2/4 (pause 60s)"]),
    ),
    row(
        "promote --full from the first pause: the final step",
        dep(4, step=1, promote_full=True), STABLE + canaries(1), STEPS,
        Expect("provisioning", create=1, set_step=4, weights=split(90),
               reason_has=["promote --full: skipping to the final step; final step: created 1"]),
    ),
    row(
        "promote --full before any canary route: final step, one batch of surge",
        dep(4, promote_full=True), STABLE, STEPS,
        Expect("provisioning", create=1, set_step=4, weights=split(100)),
    ),
    # -- the final step ----------------------------------------------------------------------------------
    row(
        "final step: one route not ready = surge used up, nothing created",
        dep(4, step=4), STABLE + canaries(2) + prov("b", "r2", 1, start=3), STEPS,
        Expect("provisioning", weights=split(50), reason_has=["final step: r2 routes 2/4 ready, 1 provisioning", "(surge 1)"]),
    ),
    row(
        "final step: 3 ready, create the last",
        dep(4, step=4), STABLE + canaries(3), STEPS,
        Expect("provisioning", create=1, weights=split(50)),
    ),
    row(
        "final step with max_surge 100%: every missing route at once",
        dep(4, step=1), STABLE + canaries(1), canary(10, max_surge="100%"),
        Expect("provisioning", create=3, weights=split(90)),
    ),
    row(
        "final step, max_surge 0: at least one at a time",
        dep(4, step=1), STABLE + canaries(1), canary(10, max_surge=0),
        Expect("provisioning", create=1, weights=split(90), reason_has=["(surge 1)"]),
    ),
    row(
        "final step, D ready: 100 % to the canary, every stable route terminated, completed",
        dep(4, step=4), STABLE + canaries(4), STEPS,
        Expect("completed", terminate=["a1", "a2", "a3", "a4"], weights={"r2": 100},
               reason_has=["canary: completed: 4/4 r2 routes ready, traffic 100% to r2, terminating 4 other routes"]),
    ),
    row(
        "the last step and the final step complete in one cycle",
        dep(4, step=3, promote=True), STABLE + canaries(4), STEPS,
        Expect("completed", terminate=["a1", "a2", "a3", "a4"], set_step=4, weights={"r2": 100}),
    ),
    row(
        "completion drops surplus canary routes (D lowered): not ready first, then newest",
        dep(2, step=4), ready("a", "r1", 2) + canaries(2) + prov("b", "r2", 1, start=3), STEPS,
        Expect("completed", terminate=["a1", "a2", "b3"], weights={"r2": 100}),
    ),
    # -- stable keeps D; other revisions go -------------------------------------------------------------
    row(
        "stable routes beyond D (D lowered) go, newest first; the canary step goes on",
        dep(3), STABLE, STEPS,
        Expect("provisioning", create=1, terminate=["a4"], weights=split(100)),
    ),
    row(
        "routes of a third revision go at once",
        dep(4), STABLE + [route("x1", "r3", created=30)], STEPS,
        Expect("provisioning", create=1, terminate=["x1"], weights=split(100)),
    ),
    row(
        "canary routes beyond c (D lowered): the newest goes, the step completes",
        dep(4), STABLE + canaries(2), STEPS,
        Expect("awaiting_promotion", terminate=["b2"], set_step=1, weights=split(90)),
    ),
    row(
        "a canary route that fails after its weight was reached: weight falls back, replacement created",
        dep(4, step=3), STABLE + canaries(1) + [route("b2", "r2", "terminated", failed=True, created=42)], STEPS,
        Expect("awaiting_promotion", create=1, weights=split(90)),
    ),
    row(
        "no canary route ready any more: 100 % stable",
        dep(4, step=1, step_started=30), STABLE + [route("b1", "r2", "running", "unhealthy", created=41)], STEPS,
        Expect("awaiting_promotion", weights=split(100)),
    ),
    row(
        "inactive canary routes are put back into traffic",
        dep(4, step=1, step_started=30), STABLE + canaries(1, traffic="inactive"), STEPS,
        Expect("awaiting_promotion", traffic=["b1"], weights=split(90)),
    ),
    # -- capacity -------------------------------------------------------------------------------------------
    row(
        "capacity: set_weight 50 wants 2, P = 1: creates 1, the reason says what is missing",
        dep(4, step=2, capacity=slots(1)), STABLE, STEPS,
        Expect("provisioning", create=1, weights=split(100),
               reason_has=["; waiting for capacity: 0 more routes can be placed; traffic r1 100%, r2 0%"]),
    ),
    row(
        "capacity: P = 0: nothing created, stable untouched (no forced replacement), progressing",
        dep(4, capacity=slots(0)), STABLE, STEPS,
        Expect("progressing", weights=split(100), reason_has=["waiting for capacity"]),
    ),
    row(
        "capacity in the final step: min(surge batch, P)",
        dep(4, step=1, capacity=slots(0)), STABLE + canaries(2), canary(10, max_surge="100%"),
        Expect("progressing", weights=split(90), reason_has=["waiting for capacity"]),
    ),
    # -- no stable revision --------------------------------------------------------------------------------
    row(
        "no stable revision (first rollout): steps skipped, final step at once, 100 % canary",
        dep(4, current=None), [], STEPS,
        Expect("provisioning", create=1, set_step=4, weights={"r2": 100},
               reason_has=["canary: no stable revision, steps skipped; final step: created 1"]),
    ),
    row(
        "deploying the serving revision again: final step at once, completes with D ready",
        dep(4, current="r2"), canaries(4), STEPS,
        Expect("completed", set_step=4, weights={"r2": 100}),
    ),
    row(
        "canary_step beyond the steps (the policy lost steps): the final step",
        dep(4, step=9), STABLE + canaries(2), STEPS,
        Expect("provisioning", create=1, set_step=4, weights=split(50)),
    ),
]


@pytest.mark.parametrize("r", STEP_ROWS)
def test_steps(r: Row) -> None:
    check_row(r)


def failed(n: int) -> AnalysisCounts:
    return AnalysisCounts(failed=n, passed=3, last_failure="errors = 0.034 > 0.01")


CHECK_ROWS = [
    # -- analysis -------------------------------------------------------------------------------------------
    row(
        "analysis: failure_limit failed measurements roll back, 100 % stable, canary terminated, rolled_back",
        dep(4, step=1, analysis=failed(2)), STABLE + canaries(1), WITH_ANALYSIS,
        Expect("rolled_back", terminate=["b1"], mode="rolling_back", rollback_reason="analysis", weights={"r1": 100},
               reason_has=["rolling back (analysis: errors = 0.034 > 0.01): canary: rolled back to r1: "
                           "traffic 100% to r1, terminating 1 other route, r1 kept serving"]),
    ),
    row(
        "analysis: one failure under the limit 2: the rollout goes on",
        dep(4, step=1, step_started=30, analysis=failed(1)), STABLE + canaries(1), WITH_ANALYSIS,
        Expect("awaiting_promotion", weights=split(90)),
    ),
    row(
        "analysis without the words of the failure: the counts",
        dep(4, step=1, analysis=AnalysisCounts(failed=3)), STABLE + canaries(1), WITH_ANALYSIS,
        Expect("rolled_back", terminate=["b1"], mode="rolling_back", rollback_reason="analysis", weights={"r1": 100},
               reason_has=["rolling back (analysis: 3 failed measurements, limit 2)"]),
    ),
    row(
        "inconclusive measurements never roll back",
        dep(4, step=1, step_started=30, analysis=AnalysisCounts(inconclusive=500, interval_passed=False)),
        STABLE + canaries(1), WITH_ANALYSIS,
        Expect("awaiting_promotion", weights=split(90)),
    ),
    row(
        "failed counts without an analysis in the policy are ignored",
        dep(4, step=1, step_started=30, analysis=failed(9)), STABLE + canaries(1), STEPS,
        Expect("awaiting_promotion", weights=split(90)),
    ),
    row(
        "the analysis is checked while the rollout is paused (like the failure threshold)",
        dep(4, step=1, paused=True, analysis=failed(2)), STABLE + canaries(1), WITH_ANALYSIS,
        Expect("rolled_back", terminate=["b1"], mode="rolling_back", rollback_reason="analysis", weights={"r1": 100}),
    ),
    row(
        "the final step waits while the current interval has not passed: progressing",
        dep(4, step=4, analysis=AnalysisCounts(passed=4, interval_passed=False)), STABLE + canaries(4), WITH_ANALYSIS,
        Expect("progressing", weights=split(50),
               reason_has=["final step: r2 routes 4/4 ready, 0 provisioning, 0 unready (surge 1); "
                           "waiting for the current analysis interval to pass"]),
    ),
    row(
        "the final step completes once the interval passed",
        dep(4, step=4, analysis=AnalysisCounts(passed=5, inconclusive=2)), STABLE + canaries(4), WITH_ANALYSIS,
        Expect("completed", terminate=["a1", "a2", "a3", "a4"], weights={"r2": 100}),
    ),
    row(
        "the interval flag only matters with an analysis in the policy",
        dep(4, step=4, analysis=AnalysisCounts(interval_passed=False)), STABLE + canaries(4), STEPS,
        Expect("completed", terminate=["a1", "a2", "a3", "a4"], weights={"r2": 100}),
    ),
    row(
        "the wait for the interval is bounded by the progress deadline",
        dep(4, step=1, progress=0, analysis=AnalysisCounts(interval_passed=False)), STABLE + canaries(4),
        canary(10, analysis=ANALYSIS, progress_deadline_seconds=30),
        Expect("rolled_back", terminate=["b1", "b2", "b3", "b4"], mode="rolling_back",
               rollback_reason="progress_deadline", weights={"r1": 100}),
    ),
    # -- failures, abort, pause, resume -----------------------------------------------------------------------
    row(
        "failure threshold: failed canary routes roll back, 100 % stable in that cycle",
        dep(1, step=0), ready("a", "r1", 1) + [route("b1", "r2", "failed_to_start", failed=True, created=41)], STEPS,
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold", weights={"r1": 100}),
    ),
    row(
        "abort: every canary route terminated, 100 % stable, rolled_back at once",
        dep(4, step=3, abort=True), STABLE + canaries(2), STEPS,
        Expect("rolled_back", terminate=["b1", "b2"], mode="rolling_back", rollback_reason="aborted",
               weights={"r1": 100}, reason_has=["rolling back (aborted): canary: rolled back to r1"]),
    ),
    row(
        "abort in the final step: the stable revision still has D routes",
        dep(4, step=4, abort=True), STABLE + canaries(3) + prov("b", "r2", 1, start=4), STEPS,
        Expect("rolled_back", terminate=["b4", "b1", "b2", "b3"], mode="rolling_back", rollback_reason="aborted",
               weights={"r1": 100}),
    ),
    row(
        "paused: no route changes, the weights kept as they stand",
        dep(4, step=2, paused=True), STABLE + canaries(1), STEPS,
        Expect("paused", weights=split(90),
               reason_has=["canary: paused by the operator, no route changes; traffic kept at r1 90%, r2 10%"]),
    ),
    row(
        "paused does not walk the steps (a ready set_weight step is not left)",
        dep(4, step=2, paused=True, promote=True), STABLE + canaries(2), STEPS,
        Expect("paused", weights=split(50)),
    ),
    row(
        "resumed: the rules again",
        dep(4, step=2), STABLE + canaries(1), STEPS,
        Expect("provisioning", create=1, weights=split(90)),
    ),
    row(
        "rollback mode: what is left of the canary is terminated, rolled_back",
        dep(4, mode="rolling_back"), STABLE + [route("b1", "r2", "provisioning", "not_checked", created=40)], STEPS,
        Expect("rolled_back", terminate=["b1"], mode="rolling_back", weights={"r1": 100},
               reason_has=["rolling back: canary: rolled back to r1"]),
    ),
    # -- progress deadline -------------------------------------------------------------------------------------
    row(
        "deadline: a set_weight step without progress rolls back",
        dep(4, step=2, step_started=0, progress=0), STABLE + canaries(1) + prov("b", "r2", 1, start=2),
        canary(10, 60.0, 50, progress_deadline_seconds=30),
        Expect("rolled_back", terminate=["b2", "b1"], mode="rolling_back", rollback_reason="progress_deadline",
               weights={"r1": 100}),
    ),
    row(
        "deadline: on_deadline pause keeps the weights",
        dep(4, step=2, step_started=0, progress=0), STABLE + canaries(1) + prov("b", "r2", 1, start=2),
        canary(10, 60.0, 50, progress_deadline_seconds=30, on_deadline="pause"),
        Expect("paused", set_paused=True, weights=split(90)),
    ),
    row(
        "deadline: pauses never time out",
        dep(4, step=1, step_started=0, progress=0), STABLE + canaries(1), canary(10, 120.0, 50, progress_deadline_seconds=30),
        Expect("awaiting_promotion", weights=split(90), requeue=60),
    ),
    row(
        "deadline: a step beginning is progress (measured from step_started_at when later)",
        dep(4, step=2, step_started=55, progress=0), STABLE + canaries(1) + prov("b", "r2", 1, start=2),
        canary(10, 60.0, 50, progress_deadline_seconds=30),
        Expect("provisioning", weights=split(90), requeue=25.001),
    ),
    row(
        "deadline: the cycle that moves to another step is never overdue",
        dep(4, step=1, step_started=0, progress=0), STABLE + canaries(1), canary(10, 60.0, 50, progress_deadline_seconds=30),
        Expect("provisioning", create=1, set_step=2, weights=split(90), requeue=30.001),
    ),
]


@pytest.mark.parametrize("r", CHECK_ROWS)
def test_checks(r: Row) -> None:
    check_row(r)


@pytest.mark.parametrize(("d", "weight", "c"), [
    (4, 10, 1), (4, 25, 1), (4, 26, 2), (4, 50, 2), (4, 99, 4), (10, 10, 1), (10, 15, 2), (1, 1, 1), (0, 50, 0),
    (3, 0, 0),
])
def test_routes_for_a_weight(d: int, weight: int, c: int) -> None:
    assert routes_for(weight, d) == c


def test_a_walk_through_the_spec_policy() -> None:
    """D=4 through set_weight 10, pause 60 s, set_weight 50, pause {}, promote, final step: the weights
    of every cycle, each decision applied as the controller would (routes ready the next cycle)."""
    from .helpers import at

    stable = ready("a", "r1", 4)
    canary_routes: list = []
    step, started, promote, t = 0, 0.0, False, 60.0
    seen: list[tuple[int, dict[str, int], str]] = []
    for _ in range(20):
        decision = run(dep(4, step=step, step_started=started, promote=promote, progress=t), stable + canary_routes,
                       STEPS, at(t))
        assert decision.weights is not None
        seen.append((step, dict(decision.weights), decision.sub_step.value))
        if decision.sub_step.value == "completed":
            break
        n = len(canary_routes)
        canary_routes += ready("b", "r2", len(decision.create), start=n + 1, created=t)
        if decision.set_canary_step is not None:
            step, started, promote = decision.set_canary_step, t, False
        if decision.sub_step.value == "awaiting_promotion" and decision.requeue_after is None:
            promote = True
        t += 30
    weights = [w["r2"] if "r1" in w else 100 for _, w, _ in seen]
    assert weights == sorted(weights), seen
    assert [w for _, w, _ in seen][-1] == {"r2": 100}
    assert {10, 50, 100} <= set(weights)
    assert seen[-1][2] == "completed"


def test_negative_canary_step_cannot_be_decided() -> None:
    with pytest.raises(ValidationFailed) as info:
        run(dep(4, step=-1), STABLE, STEPS)
    assert info.value.message == "deployment.canary_step: -1 is negative"


def test_other_strategies_set_no_weights_nor_step() -> None:
    from .helpers import policy, rolling

    for pol in (rolling(1, 0), policy("blue_green"), policy("recreate")):
        decision = run(dep(4, step=2, promote_full=True), STABLE + canaries(1), pol)
        assert decision.weights is None and decision.set_canary_step is None, pol.strategy
