"""Capacity (docs/strategies.md "Capacity"): table tests of every rule with a limited number P of
placeable routes — rolling `create = min(create_r, P)`, the capacity-forced replacement under
`capacity_fallback: replace` and each of its conditions failing on its own, `wait`, the sub-step rule,
rollback mode, the cycle that starts a rollback, the progress deadline over a capacity wait, blue-green
(never terminates blue) and recreate — and the reason words."""

from __future__ import annotations

import pytest

from rollwise.model import UNLIMITED, CapacityView, DeploymentView, Mode, ValidationFailed
from rollwise.strategy import messages as msg
from rollwise.strategy.cycle import build_view

from .helpers import NOW, Expect, Row, check_row, dep, gpus, policy, prov, ready, rolling, route, row, run, slots

S1U0 = rolling(1, 0)
S1U1 = rolling(1, 1)
S2U0 = rolling(2, 0)
WAIT = rolling(1, 0, capacity_fallback="wait")
OLD3 = ready("a", "r1", 3)
BG = policy("blue_green")
BG_WAIT = policy("blue_green", capacity_fallback="wait")
RC = policy("recreate")

REPLACING = "rolling: capacity: replacing one r1 route at a time (needs gpu 1, free gpu 0)"
NO_GPU = "; waiting for capacity: needs gpu 1 per route, free gpu 0"

ROLLING = [
    # -- create = min(create_r, P) -------------------------------------------------------------------
    row(
        "unlimited (the default): create_r",
        dep(4), ready("a", "r1", 4), rolling("100%", 0),
        Expect("provisioning", create=4, reason_has=["rolling: created 4, terminating 0 (surge 4, unavailable 0)"]),
    ),
    row(
        "P partial: create P of create_r, the reason says what is missing",
        dep(4, capacity=gpus(2)), ready("a", "r1", 4), rolling("100%", 0),
        Expect("provisioning", create=2,
               reason_has=["rolling: created 2, terminating 0 (surge 4, unavailable 0)"
                           "; waiting for capacity: needs gpu 1 per route, free gpu 0"]),
    ),
    row(
        "P counted in routes of a revision needing 2 GPUs: 5 free -> P 2",
        dep(4, capacity=gpus(5, per_route=2)), ready("a", "r1", 4), rolling("100%", 0),
        Expect("provisioning", create=2, reason_has=["needs gpu 2 per route, free gpu 1"]),
    ),
    row(
        "P partial, only P known (plan input): the reason counts placeable routes",
        dep(4, capacity=slots(1)), ready("a", "r1", 4), rolling("100%", 0),
        Expect("provisioning", create=1, reason_has=["; waiting for capacity: 0 more routes can be placed"]),
    ),
    row(
        "P at least create_r: nothing changes, no capacity words",
        dep(3, capacity=gpus(1)), OLD3, S1U0,
        Expect("provisioning", create=1, reason_has=["rolling: created 1, terminating 0 (surge 1, unavailable 0)"]),
    ),
    row(
        "P at least create_r with the terminations of the plain rule",
        dep(3, capacity=gpus(7)), OLD3, S1U1,
        Expect("provisioning", create=1, terminate=["a1"]),
    ),
    # -- the capacity-forced replacement (replace, the default) --------------------------------------
    row(
        "P 0, every condition holds: terminate ONE old route, first in termination order, create none",
        dep(3, capacity=gpus(0)), OLD3, S1U0,
        Expect("progressing", terminate=["a1"], reason_has=[REPLACING]),
    ),
    row(
        "P 0 forced replacement takes the first in termination order: degraded before healthy",
        dep(3, capacity=gpus(0)),
        [route("a1", "r1", created=1), route("a2", "r1", created=2), route("a3", "r1", "running", "degraded", created=3)],
        S1U0,
        Expect("progressing", terminate=["a3"]),
    ),
    row(
        "P 0 with D - 1 new routes ready: the last old route is replaced",
        dep(3, capacity=gpus(0)), ready("a", "r1", 1) + ready("b", "r2", 2, created=40), S1U0,
        Expect("progressing", terminate=["a1"], reason_has=[REPLACING]),
    ),
    row(
        "P 0 forced replacement, only P known: the reason counts placeable routes",
        dep(3, capacity=slots(0)), OLD3, S1U0,
        Expect("progressing", terminate=["a1"],
               reason_has=["rolling: capacity: replacing one r1 route at a time (0 more routes can be placed)"]),
    ),
    row(
        "P 0 forced replacement keeps putting inactive target routes back into traffic",
        dep(3, capacity=gpus(0)), ready("a", "r1", 2) + [route("b1", "r2", traffic="inactive", created=40)], S1U0,
        Expect("progressing", terminate=["a1"], traffic=["b1"], reason_has=[REPLACING + ", activating 1"]),
    ),
    # -- wait: nothing extra ---------------------------------------------------------------------------
    row(
        "wait, P 0: nothing happens, progressing, the reason names what is missing",
        dep(3, capacity=gpus(0)), OLD3, WAIT,
        Expect("progressing",
               reason_has=["rolling: waiting for r2 routes: 0/3 ready, 0 provisioning, 0 unready "
                           "(surge 1, unavailable 0)" + NO_GPU]),
    ),
    row(
        "wait, P 0, only P known",
        dep(3, capacity=slots(0)), OLD3, WAIT,
        Expect("progressing", reason_has=["; waiting for capacity: 0 more routes can be placed"]),
    ),
    row(
        "wait, P partial: create P",
        dep(4, capacity=gpus(3)), ready("a", "r1", 4), rolling("100%", 0, capacity_fallback="wait"),
        Expect("provisioning", create=3, reason_has=["free gpu 0"]),
    ),
    # -- each condition of the forced replacement failing on its own (P 0, replace) -------------------
    # create_r > 0 cannot fail alone: with the other conditions holding, every alive route is ready and
    # o_ready + t_ready <= D - unavailable, so create_r >= min(surge + unavailable, unavailable + o_ready)
    # >= 1. The row below shows P 0 with create_r 0 leaving the plain rule alone.
    row(
        "not forced: create_r is 0 (surge used up); the plain rule terminates, nothing more",
        dep(2, capacity=gpus(0)), ready("a", "r1", 2) + ready("b", "r2", 1, created=40), S1U0,
        Expect("progressing", terminate=["a1"], reason_has=["created 0, terminating 1 (surge 1, unavailable 0)"]),
    ),
    row(
        "not forced: a target route is provisioning",
        dep(3, capacity=gpus(0)), OLD3 + prov("b", "r2", 1), S2U0,
        Expect("provisioning",
               reason_has=["waiting for r2 routes: 0/3 ready, 1 provisioning, 0 unready (surge 2, unavailable 0)"
                           + NO_GPU]),
    ),
    row(
        "not forced (Decision): a target route is running but not ready yet",
        dep(3, capacity=gpus(0)), OLD3 + [route("b1", "r2", "running", "not_checked", created=40)], S2U0,
        Expect("progressing", reason_has=["0 provisioning, 1 unready (surge 2, unavailable 0)" + NO_GPU]),
    ),
    row(
        "not forced: terminate_r > 0 (the unavailability budget lets one go): only that one goes",
        dep(3, capacity=gpus(0)), OLD3, S1U1,
        Expect("progressing", terminate=["a1"], reason_has=["created 0, terminating 1 (surge 1, unavailable 1)" + NO_GPU]),
    ),
    row(
        "not forced: terminate_r > 0 (an old route is not ready): only that one goes",
        dep(3, capacity=gpus(0)), ready("a", "r1", 2) + [route("a3", "r1", "running", "unhealthy", created=3)], S1U0,
        Expect("progressing", terminate=["a3"], reason_has=["created 0, terminating 1"]),
    ),
    row(
        "not forced: a route of the deployment is still terminating",
        dep(3, capacity=gpus(0)), OLD3 + [route("a0", "r1", "terminating", created=0)], S1U0,
        Expect("progressing", reason_has=[NO_GPU + ", 1 route still stopping"]),
    ),
    row(
        "not forced: a terminating route of the new revision counts too",
        dep(3, capacity=gpus(0)), OLD3 + [route("b0", "r2", "terminating", created=40)], S1U0,
        Expect("progressing", reason_has=[", 1 route still stopping"]),
    ),
    row(
        "not forced (Decision): a failed route whose process has not exited yet (still running)",
        dep(3, capacity=gpus(0)), OLD3 + [route("b1", "r2", failed=True, created=40)], S1U0,
        Expect("progressing", reason_has=[NO_GPU + ", 1 route still stopping"]),
    ),
    row(
        "forced: a failed route that is terminated or failed_to_start holds nothing",
        dep(3, capacity=gpus(0)),
        OLD3 + [route("b1", "r2", "terminated", failed=True, created=40), route("b2", "r2", "failed_to_start", created=41)],
        S1U0,
        Expect("progressing", terminate=["a1"], reason_has=[REPLACING]),
    ),
    row(
        "not forced: no other route is alive (nothing to replace)",
        dep(3, capacity=gpus(0)), ready("b", "r2", 2, created=40), S1U0,
        Expect("progressing", reason_has=[NO_GPU + "; no other route to replace"]),
    ),
    row(
        "not forced: the replacement would leave fewer than D - max(1, U) ready (a shared node gave the "
        "room this deployment freed to another one)",
        dep(2, capacity=gpus(0)), ready("a", "r1", 1), S1U0,
        Expect("progressing", reason_has=[NO_GPU + "; not replacing: 1 ready, at least 1 must keep serving"]),
    ),
    row(
        "forced again once D ready: the serving floor counts new ready routes too",
        dep(2, capacity=gpus(0)), ready("a", "r1", 1) + ready("b", "r2", 1, created=40), S1U0,
        Expect("progressing", terminate=["a1"], reason_has=[REPLACING]),
    ),
    row(
        "with unavailable 2 of 4 the floor is 2: the plain rule already let 2 go, nothing is forced",
        dep(4, capacity=gpus(0)), ready("a", "r1", 2), rolling(1, 2),
        Expect("progressing", reason_has=[NO_GPU + "; not replacing: 2 ready, at least 2 must keep serving"]),
    ),
    row(
        "not forced: P is 1, not 0 (create instead)",
        dep(3, capacity=gpus(1)), OLD3 + [route("a0", "r1", "terminating", created=0)], S2U0,
        Expect("provisioning", create=1, reason_has=["created 1, terminating 0 (surge 2, unavailable 0)" + NO_GPU]),
    ),
    # -- sub-step: provisioning when t_prov > 0 or create > 0 ----------------------------------------
    row(
        "sub-step provisioning while a target route provisions, even when nothing can be created",
        dep(3, capacity=gpus(0)), ready("a", "r1", 3) + prov("b", "r2", 1), rolling(2, 0, capacity_fallback="wait"),
        Expect("provisioning"),
    ),
    # -- completion is untouched ------------------------------------------------------------------------
    row(
        "completed with P 0",
        dep(3, capacity=gpus(0)), ready("b", "r2", 3, created=40), S1U0,
        Expect("completed"),
    ),
    # -- rollback mode: the same rules toward the current revision ---------------------------------------
    row(
        "rollback mode, P 0, replace: one abandoned route at a time",
        dep(3, mode="rolling_back", capacity=gpus(0)), ready("b", "r2", 3, created=40), S1U0,
        Expect("rolling_back", terminate=["b1"], mode="rolling_back",
               reason_has=["rolling back: rolling: capacity: replacing one r2 route at a time (needs gpu 1, free gpu 0)"]),
    ),
    row(
        "rollback mode, P 0, wait: nothing",
        dep(3, mode="rolling_back", capacity=gpus(0)), ready("b", "r2", 3, created=40), WAIT,
        Expect("rolling_back", mode="rolling_back", reason_has=["waiting for r1 routes: 0/3 ready"]),
    ),
    row(
        "rollback mode, P partial: create P current routes",
        dep(3, mode="rolling_back", capacity=gpus(1)), ready("b", "r2", 3, created=40), rolling(3, 0),
        Expect("rolling_back", create=1, mode="rolling_back", reason_has=[NO_GPU]),
    ),
    row(
        "rollback mode, P 0 but a route still terminating: wait for it",
        dep(3, mode="rolling_back", capacity=gpus(0)),
        ready("a", "r1", 2) + ready("b", "r2", 1, created=40) + [route("b0", "r2", "terminating", created=39)],
        S1U0,
        Expect("rolling_back", mode="rolling_back", reason_has=[", 1 route still stopping"]),
    ),
    # -- the cycle that starts a rollback (Decision) ---------------------------------------------------
    row(
        "abort with P unlimited: the rollback creates a current route at once",
        dep(3, abort=True), ready("a", "r1", 2) + ready("b", "r2", 1, created=40), S1U0,
        Expect("rolling_back", create=1, mode="rolling_back", rollback_reason="aborted"),
    ),
    row(
        "abort with P limited: P counted r2 routes, so no r1 route is created in this cycle",
        dep(3, abort=True, capacity=gpus(5)), ready("a", "r1", 2) + ready("b", "r2", 1, created=40), S1U0,
        Expect("rolling_back", create=0, mode="rolling_back", rollback_reason="aborted",
               reason_has=["; waiting for capacity: r1 routes are placed from the next cycle"]),
    ),
    row(
        "abort with P limited: no forced replacement either (P is not known for r1)",
        dep(3, abort=True, capacity=gpus(0)), ready("b", "r2", 3, created=40), S1U0,
        Expect("rolling_back", mode="rolling_back", rollback_reason="aborted"),
    ),
    row(
        "abort with P limited: the rollback's plain terminations still happen",
        dep(3, abort=True, capacity=gpus(0)), ready("a", "r1", 3) + prov("b", "r2", 1), S1U0,
        Expect("rolling_back", terminate=["b1"], mode="rolling_back", rollback_reason="aborted"),
    ),
    # -- the progress deadline applies to a capacity wait -----------------------------------------------
    row(
        "a capacity wait past the progress deadline: rollback (progress_deadline)",
        dep(3, progress=-541, capacity=gpus(0)), OLD3, WAIT,
        Expect("rolled_back", mode="rolling_back", rollback_reason="progress_deadline",
               reason_has=["rolling back (progress_deadline: no progress for 601s, deadline 600s)"]),
    ),
    row(
        "a capacity wait past the progress deadline with on_deadline pause: paused",
        dep(3, progress=-541, capacity=gpus(0)), OLD3, rolling(1, 0, capacity_fallback="wait", on_deadline="pause"),
        Expect("paused", set_paused=True),
    ),
    row(
        "a capacity wait within the deadline: still waiting",
        dep(3, progress=-540, capacity=gpus(0)), OLD3, WAIT,
        Expect("progressing", reason_has=[NO_GPU]),
    ),
]

BLUE_GREEN = [
    row(
        "P unlimited: D green routes",
        dep(3), OLD3, BG,
        Expect("provisioning", create=3),
    ),
    row(
        "P partial: create P green, blue untouched, the reason says green does not fit yet",
        dep(3, capacity=gpus(2)), OLD3, BG,
        Expect("provisioning", create=2,
               reason_has=["blue-green: created 2 green (green r2: 0/3 ready)"
                           "; waiting for capacity: needs gpu 1 per route, free gpu 0"
                           "; green does not fit yet: 1 more route wanted while blue keeps serving"]),
    ),
    row(
        "P 0, replace: blue is never terminated to make room",
        dep(3, capacity=gpus(0)), OLD3, BG,
        Expect("progressing",
               reason_has=["blue-green: waiting for green r2 routes: 0/3 ready, 0 provisioning, 0 unready"
                           + NO_GPU + "; green does not fit yet: 3 more routes wanted while blue keeps serving"]),
    ),
    row(
        "P 0, wait: the same",
        dep(3, capacity=gpus(0)), OLD3, BG_WAIT,
        Expect("progressing"),
    ),
    row(
        "P 0 with green provisioning: provisioning, blue untouched",
        dep(3, capacity=slots(0)), OLD3 + prov("g", "r2", 2, traffic="inactive"), BG,
        Expect("provisioning", reason_has=["; waiting for capacity: 0 more routes can be placed",
                                           "1 more route wanted"]),
    ),
    row(
        "P 0 with every green route ready: promotion is not held up",
        dep(3, promote=True, capacity=gpus(0)), OLD3 + ready("g", "r2", 3, created=40, traffic="inactive"), BG,
        Expect("completed", terminate=["a1", "a2", "a3"], traffic=["g1", "g2", "g3"]),
    ),
    row(
        "P 0 past the deadline: the blue-green rollback (green goes, blue kept)",
        dep(3, progress=-541, capacity=gpus(0)), OLD3 + ready("g", "r2", 1, created=40, traffic="inactive"), BG,
        Expect("rolled_back", terminate=["g1"], mode="rolling_back", rollback_reason="progress_deadline"),
    ),
    row(
        "rollback mode with P 0: green terminated as usual",
        dep(3, mode="rolling_back", capacity=gpus(0)), OLD3 + ready("g", "r2", 2, created=40), BG,
        Expect("rolled_back", terminate=["g1", "g2"], mode="rolling_back"),
    ),
]

RECREATE = [
    row(
        "P unlimited: every old route goes, D new ones created",
        dep(3), OLD3, RC,
        Expect("provisioning", create=3, terminate=["a1", "a2", "a3"]),
    ),
    row(
        "P 0: old routes go (they free the room), none created yet",
        dep(3, capacity=gpus(0)), OLD3, RC,
        Expect("progressing", terminate=["a1", "a2", "a3"],
               reason_has=["recreate: created 0, terminating 3 (downtime by design)" + NO_GPU]),
    ),
    row(
        "P partial while old routes drain: create P",
        dep(3, capacity=gpus(1)), [route(f"a{i}", "r1", "terminating", created=i) for i in (1, 2)], RC,
        Expect("provisioning", create=1, reason_has=["free gpu 0, 2 routes still stopping"]),
    ),
    row(
        "P 0 with new routes provisioning: provisioning",
        dep(3, capacity=slots(0)), prov("b", "r2", 2), RC,
        Expect("provisioning", reason_has=["; waiting for capacity: 0 more routes can be placed"]),
    ),
    row(
        "rollback mode, P partial",
        dep(3, mode="rolling_back", capacity=gpus(2)), ready("b", "r2", 3, created=40), RC,
        Expect("rolling_back", create=2, terminate=["b1", "b2", "b3"], mode="rolling_back"),
    ),
    row(
        "the cycle that starts a rollback with P limited creates nothing of the current revision",
        dep(2, abort=True, capacity=gpus(4)), prov("b", "r2", 2), RC,
        Expect("rolling_back", terminate=["b1", "b2"], mode="rolling_back", rollback_reason="aborted",
               reason_has=["r1 routes are placed from the next cycle"]),
    ),
]


@pytest.mark.parametrize("r", ROLLING)
def test_rolling_with_capacity(r: Row) -> None:
    check_row(r)


@pytest.mark.parametrize("r", BLUE_GREEN)
def test_blue_green_with_capacity(r: Row) -> None:
    decision = check_row(r)
    if r.deployment.mode is Mode.FORWARD and decision.sub_step.value != "completed":
        blue = {x.id for x in r.routes if x.revision == "r1"}
        assert not blue & set(decision.terminate), "blue-green terminated blue before promotion"


@pytest.mark.parametrize("r", RECREATE)
def test_recreate_with_capacity(r: Row) -> None:
    check_row(r)


# -- the interface ------------------------------------------------------------------------------------


def test_capacity_is_unlimited_unless_given() -> None:
    view = DeploymentView(desired_replicas=3, current_revision="r1", deploying_revision="r2")
    assert view.capacity == UNLIMITED and view.capacity.placeable is None and not view.capacity.is_limited
    assert dict(UNLIMITED.need) == {} and dict(UNLIMITED.free) == {}


def test_capacity_view_is_frozen_and_copies_its_mappings() -> None:
    need = {"gpu": 1}
    capacity = CapacityView(placeable=0, need=need, free={"gpu": 0})
    need["gpu"] = 9
    assert capacity.need["gpu"] == 1
    with pytest.raises(TypeError):
        capacity.need["gpu"] = 2  # type: ignore[index]
    assert capacity == CapacityView(placeable=0, need={"gpu": 1}, free={"gpu": 0})
    assert hash(capacity) == hash(CapacityView(placeable=0, need={"gpu": 1}, free={"gpu": 0}))
    assert len({dep(3, capacity=capacity), dep(3, capacity=gpus(0))}) == 1


def test_negative_placeable_cannot_be_decided() -> None:
    with pytest.raises(ValidationFailed, match=r"^capacity\.placeable: -1 is negative$"):
        run(dep(3, capacity=CapacityView(placeable=-1)), OLD3, S1U0)


def test_a_capacity_wait_asks_to_be_looked_at_again_by_the_deadline() -> None:
    """A wait is not silent: the engine's requeue points at the progress deadline (600s from 50s)."""
    decision = run(dep(3, capacity=gpus(0)), OLD3, WAIT)
    assert decision.requeue_after is not None and 589 < decision.requeue_after < 591


def test_releasing_routes_are_counted_before_terminating_ones_are_dropped() -> None:
    routes = [
        *OLD3,
        route("t1", "r1", "terminating"),
        route("t2", "r2", "terminating", failed=True, created=40),
        route("f1", "r2", failed=True, created=41),
        route("f2", "r2", "provisioning", "not_checked", failed=True, created=42),
        route("g1", "r2", "terminated", created=43),
        route("g2", "r2", "failed_to_start", created=44),
    ]
    view = build_view(dep(3), routes, now=NOW)
    assert view.releasing == 4
    assert "t1" not in {r.id for r in view.routes}
    assert view.for_mode(Mode.ROLLING_BACK).releasing == 4


def test_a_view_for_the_other_mode_knows_the_capacity_only_when_unlimited() -> None:
    limited = build_view(dep(3, capacity=gpus(2)), OLD3, now=NOW)
    assert limited.capacity_known and limited.capacity.placeable == 2
    other = limited.for_mode(Mode.ROLLING_BACK)
    assert not other.capacity_known and other.capacity.placeable == 0
    assert other.for_mode(Mode.FORWARD).capacity == gpus(2)
    unlimited = build_view(dep(3), OLD3, now=NOW).for_mode(Mode.ROLLING_BACK)
    assert unlimited.capacity_known and unlimited.capacity.placeable is None


@pytest.mark.parametrize(("capacity", "per_route", "words"), [
    (CapacityView(placeable=0, need={"gpu": 1}, free={"gpu": 0}), True, "needs gpu 1 per route, free gpu 0"),
    (CapacityView(placeable=0, need={"gpu": 1}, free={"gpu": 0}), False, "needs gpu 1, free gpu 0"),
    (CapacityView(placeable=0, need={"mem_gb": 40, "gpu": 2}, free={"gpu": 1, "mem_gb": 100, "cpu": 8}), True,
     "needs gpu 2 and mem_gb 40 per route, free gpu 1 and mem_gb 100"),
    (CapacityView(placeable=0, need={"gpu": 1}), True, "needs gpu 1 per route, free gpu 0"),
    (CapacityView(placeable=1, need={"gpu": 1, "tpu": 0}, free={"gpu": 1}), True, "needs gpu 1 per route, free gpu 1"),
    (CapacityView(placeable=0, need={"gpu": 0}), True, "0 more routes can be placed"),
    (CapacityView(placeable=1), True, "1 more route can be placed"),
    (CapacityView(placeable=2), False, "2 more routes can be placed"),
])
def test_capacity_words(capacity: CapacityView, per_route: bool, words: str) -> None:
    assert msg.capacity_room(capacity, per_route=per_route) == words
