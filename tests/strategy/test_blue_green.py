"""Blue-green: table tests of every rule of spec/strategies.md "Blue-green" (green creation, failed
green replaced, surplus green, provisioning / progressing / awaiting_promotion, manual and automatic
promotion, the promotion itself) and of its rollback."""

from __future__ import annotations

import pytest

from rollwise.model import Traffic

from .helpers import Expect, Row, at, check_row, dep, policy, prov, ready, route, row, run

BG = policy("blue_green")


def auto(delay: float) -> object:
    return policy("blue_green", auto_promote=True, promote_delay_seconds=delay)


BLUE3 = ready("a", "r1", 3)


def green(n: int, *, start: int = 1, updated: float = 45, **kw: object) -> list:
    return ready("g", "r2", n, start=start, created=40, traffic="inactive", updated=updated, **kw)


ROWS = [
    row(
        "start: D green routes created inactive, provisioning",
        dep(3), BLUE3, BG,
        Expect("provisioning", create=3, reason_has=["blue-green: created 3 green"]),
    ),
    row(
        "green provisioning: wait",
        dep(3), BLUE3 + prov("g", "r2", 3, traffic="inactive"), BG,
        Expect("provisioning", reason_has=["waiting for green r2 routes: 0/3 ready, 3 provisioning"]),
    ),
    row(
        "green running but not all ready: progressing",
        dep(3), BLUE3 + green(2) + [route("g3", "r2", "running", "not_checked", traffic="inactive", created=43)], BG,
        Expect("progressing", reason_has=["2/3 ready, 0 provisioning, 1 unready"]),
    ),
    row(
        "all green ready, no promotion asked: awaiting_promotion",
        dep(3), BLUE3 + green(3), BG,
        Expect("awaiting_promotion", reason_has=["awaiting promotion: 3/3 green r2 routes ready"]),
    ),
    row(
        "promote_requested with all green ready: promotion (traffic to green, blue terminated)",
        dep(3, promote=True), BLUE3 + green(3), BG,
        Expect("completed", terminate=["a1", "a2", "a3"], traffic=["g1", "g2", "g3"],
               reason_has=["blue-green: promoted 3 green routes, terminating 3 blue routes (promotion requested)"]),
    ),
    row(
        "promote_requested before all green are ready: not a promotion, wait",
        dep(3, promote=True), BLUE3 + green(2) + prov("g", "r2", 1, start=3, traffic="inactive"), BG,
        Expect("provisioning", reason_has=["promotion requested, it waits until every green route is ready"]),
    ),
    row(
        "auto_promote, delay 0: promotion as soon as all green are ready",
        dep(3), BLUE3 + green(3), auto(0),
        Expect("completed", terminate=["a1", "a2", "a3"], traffic=["g1", "g2", "g3"],
               reason_has=["(auto-promotion after 0s)"]),
    ),
    row(
        "auto_promote, delay 30, latest green ready 15s ago: awaiting, 15s to go",
        dep(3), BLUE3 + green(3), auto(30),
        Expect("awaiting_promotion", reason_has=["auto-promotion in 15s"]),
    ),
    row(
        "auto_promote, delay 15, latest green ready exactly 15s ago: promotion (>=)",
        dep(3), BLUE3 + green(3), auto(15),
        Expect("completed", terminate=["a1", "a2", "a3"], traffic=["g1", "g2", "g3"]),
    ),
    row(
        "auto_promote measures from the LATEST status_updated_at among ready green",
        dep(2), ready("a", "r1", 2) + green(1, updated=0) + green(1, start=2, updated=59), auto(10),
        Expect("awaiting_promotion", reason_has=["auto-promotion in 9s"]),
    ),
    row(
        "failed green route replaced while the failure budget lasts",
        dep(3), BLUE3 + green(2) + [route("g3", "r2", "failed_to_start", failed=True, created=43)], BG,
        Expect("provisioning", create=1),
    ),
    row(
        "surplus green (D lowered): the oldest ready green goes, the rest is awaiting promotion",
        dep(2), ready("a", "r1", 2) + green(3), BG,
        Expect("awaiting_promotion", terminate=["g1"]),
    ),
    row(
        "surplus green: a provisioning green goes first, the ready ones stay",
        dep(2), ready("a", "r1", 2) + green(2) + prov("g", "r2", 1, start=3, traffic="inactive"), BG,
        Expect("awaiting_promotion", terminate=["g3"]),
    ),
    row(
        "surplus green and promotion in one cycle: terminate list in termination order",
        dep(2, promote=True), ready("a", "r1", 2) + green(3), BG,
        Expect("completed", terminate=["a1", "a2", "g1"], traffic=["g2", "g3"], reason_has=["terminating 1 surplus"]),
    ),
    row(
        "blue routes are left alone before promotion, even unready ones",
        dep(2), [route("a1", "r1", "running", "unhealthy"), route("a2", "r1", "provisioning", "not_checked")], BG,
        Expect("provisioning", create=2),
    ),
    row(
        "promotion terminates every alive blue route, not-ready ones first",
        dep(2, promote=True),
        [route("a1", "r1"), route("a2", "r1", "running", "unhealthy", created=5), route("a3", "r1", "terminating")]
        + green(2),
        BG,
        Expect("completed", terminate=["a2", "a1"], traffic=["g1", "g2"]),
    ),
    row(
        "D=0: nothing to create, all (zero) green ready: awaiting promotion",
        dep(0), ready("a", "r1", 2), BG,
        Expect("awaiting_promotion"),
    ),
    row(
        "D=0 with auto-promotion: promoted at once, blue terminated",
        dep(0), ready("a", "r1", 2), auto(60),
        Expect("completed", terminate=["a1", "a2"], traffic=[]),
    ),
    row(
        "deploying == current: the serving routes are green; promotion keeps them active",
        dep(2, "r1", "r1", promote=True), ready("a", "r1", 2), BG,
        Expect("completed", traffic=["a1", "a2"], terminate=[]),
    ),
    # -- rollback ---------------------------------------------------------------------------------
    row(
        "rollback mode: every alive green goes, blue untouched, rolled_back in the same cycle",
        dep(3, mode="rolling_back"),
        BLUE3 + green(2) + prov("g", "r2", 1, start=3) + [route("g9", "r2", "terminating"),
                                                         route("g8", "r2", "failed_to_start", failed=True)],
        BG,
        Expect("rolled_back", terminate=["g3", "g1", "g2"], mode="rolling_back",
               reason_has=["rolling back: blue-green: rolled back to r1: terminating 3 green routes, blue routes"]),
    ),
    row(
        "abort: rolled back in the same cycle",
        dep(3, abort=True), BLUE3 + green(3), BG,
        Expect("rolled_back", terminate=["g1", "g2", "g3"], mode="rolling_back", rollback_reason="aborted",
               reason_has=["rolling back (aborted): blue-green: rolled back to r1"]),
    ),
    row(
        "abort while awaiting promotion with promote_requested: abort wins (checked before the rules)",
        dep(3, abort=True, promote=True), BLUE3 + green(3), BG,
        Expect("rolled_back", terminate=["g1", "g2", "g3"], mode="rolling_back", rollback_reason="aborted"),
    ),
    row(
        "failure threshold (default D=2) reached: rolled back",
        dep(2), ready("a", "r1", 2) + green(1)
        + [route("g7", "r2", "failed_to_start", failed=True, created=41),
           route("g8", "r2", "terminated", failed=True, created=42)],
        BG,
        Expect("rolled_back", terminate=["g1"], mode="rolling_back", rollback_reason="failure_threshold",
               reason_has=["rolling back (failure_threshold: 2 failed r2 routes, threshold 2)"]),
    ),
    row(
        "progress deadline while provisioning: rolled back",
        dep(2, progress=-600), ready("a", "r1", 2) + prov("g", "r2", 2, traffic="inactive"), BG,
        Expect("rolled_back", terminate=["g1", "g2"], mode="rolling_back", rollback_reason="progress_deadline",
               reason_has=["no progress for 660s, deadline 600s"]),
    ),
    row(
        "awaiting_promotion never times out",
        dep(2, progress=-100000), ready("a", "r1", 2) + green(2), BG,
        Expect("awaiting_promotion"),
    ),
]


@pytest.mark.parametrize("r", ROWS)
def test_blue_green_rules(r: Row) -> None:
    check_row(r)


def test_green_routes_are_created_inactive_with_ratio_0() -> None:
    d = run(dep(2), ready("a", "r1", 2), BG)
    assert [(c.revision, c.traffic, c.traffic_ratio) for c in d.create] == [("r2", Traffic.INACTIVE, 0.0)] * 2


def test_promotion_sets_green_active_ratio_1() -> None:
    d = run(dep(2, promote=True), ready("a", "r1", 2) + green(2), BG)
    assert [(t.id, t.traffic, t.traffic_ratio) for t in d.traffic] == [
        ("g1", Traffic.ACTIVE, 1.0),
        ("g2", Traffic.ACTIVE, 1.0),
    ]


def test_auto_promotion_waits_then_promotes_as_time_passes() -> None:
    routes = ready("a", "r1", 2) + green(2, updated=0)
    assert run(dep(2), routes, auto(120), now=at(119)).sub_step.value == "awaiting_promotion"
    assert run(dep(2), routes, auto(120), now=at(120)).sub_step.value == "completed"
