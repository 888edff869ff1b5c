"""Rolling update: table tests of every rule of spec/strategies.md "Rolling update", the spec's
D=3 surge 1 unavailable 1 walk-through cycle by cycle, and rollback mode."""

from __future__ import annotations

import pytest

from rollwise.model import Traffic

from .helpers import Expect, Row, check_row, dep, prov, ready, rolling, route, row, run

S1U1 = rolling(1, 1)
S1U0 = rolling(1, 0)

ROWS = [
    # -- surge / unavailable arithmetic, seen through one cycle from D old ready routes ------------
    row(
        "D=10 surge 25% unavailable 25% -> (3, 2): create 3, terminate 2 oldest",
        dep(10), ready("a", "r1", 10), rolling("25%", "25%"),
        Expect("provisioning", create=3, terminate=["a1", "a2"], reason_has=["(surge 3, unavailable 2)"]),
    ),
    row(
        "D=1 surge 25% unavailable 25% -> (1, 0): create 1, terminate 0",
        dep(1), ready("a", "r1", 1), rolling("25%", "25%"),
        Expect("provisioning", create=1, reason_has=["(surge 1, unavailable 0)"]),
    ),
    row(
        "D=3 surge 0% unavailable 10% resolve to 0 -> unavailable 1: terminate 1, create 0",
        dep(3), ready("a", "r1", 3), rolling("0%", "10%"),
        Expect("progressing", terminate=["a1"], reason_has=["(surge 0, unavailable 1)"]),
    ),
    row(
        "D=3 surge 1 unavailable 5 -> unavailable clamped to 3: every old route goes",
        dep(3), ready("a", "r1", 3), rolling(1, 5),
        Expect("provisioning", create=1, terminate=["a1", "a2", "a3"], reason_has=["(surge 1, unavailable 3)"]),
    ),
    row(
        "D=4 surge 100% unavailable 0: create 4 at once",
        dep(4), ready("a", "r1", 4), rolling("100%", 0),
        Expect("provisioning", create=4, reason_has=["(surge 4, unavailable 0)"]),
    ),
    row(
        "D=3 surge 25% unavailable 0 (defaults) -> surge ceil(0.75) = 1",
        dep(3), ready("a", "r1", 3), rolling(),
        Expect("provisioning", create=1, reason_has=["(surge 1, unavailable 0)"]),
    ),
    row(
        "D=0 with 2 old ready: terminate both, create none (surge 0, unavailable 0)",
        dep(0), ready("a", "r1", 2), rolling(),
        Expect("progressing", terminate=["a1", "a2"], reason_has=["(surge 0, unavailable 0)"]),
    ),
    row(
        "D=0 with no routes: completed",
        dep(0), [], rolling(),
        Expect("completed", reason_has=["completed: 0/0 r2 routes ready"]),
    ),
    row(
        "D=0 with a ready target route: completed, it is surplus",
        dep(0), ready("b", "r2", 1), rolling(),
        Expect("completed", terminate=["b1"]),
    ),
    # -- create and terminate from one snapshot ------------------------------------------------------
    row(
        "create and terminate in the same cycle",
        dep(3), ready("a", "r1", 3), S1U1,
        Expect("provisioning", create=1, terminate=["a1"],
               reason_has=["rolling: created 1, terminating 1 (surge 1, unavailable 1)"]),
    ),
    row(
        "surge budget used up by provisioning routes: create 0, provisioning",
        dep(3), ready("a", "r1", 3) + prov("b", "r2", 1), S1U0,
        Expect("provisioning", reason_has=["waiting for r2 routes: 0/3 ready, 1 provisioning"]),
    ),
    row(
        "D increased mid-rollout: create up to D + surge",
        dep(5), ready("a", "r1", 3) + ready("b", "r2", 2, created=40), S1U0,
        Expect("provisioning", create=1),
    ),
    row(
        "D decreased mid-rollout: old ready routes go down to D - unavailable, no create",
        dep(2), ready("a", "r1", 2) + ready("b", "r2", 3, created=40), S1U0,
        Expect("progressing", terminate=["a1", "a2"]),
    ),
    row(
        "create is capped by D - t_alive (target routes already alive)",
        dep(3), ready("a", "r1", 1) + ready("b", "r2", 2, created=40), rolling(3, 0),
        Expect("provisioning", create=1, terminate=[]),
    ),
    # -- other routes that are alive but not ready go at once, in termination order -----------------
    row(
        "other not-ready routes go at once: provisioning, unhealthy, not_checked",
        dep(3),
        [
            route("a1", "r1", "running", "not_checked", created=1),
            route("a3", "r1", "running", "unhealthy", created=3),
            route("a4", "r1", "provisioning", "not_checked", created=4),
            *ready("a", "r1", 2, start=5, created=0),
        ],
        S1U0,
        Expect("progressing", create=0, terminate=["a4", "a3", "a1"]),
    ),
    row(
        "degraded old routes are ready: they serve and count, max_unavailable 0 keeps all of them",
        dep(3),
        [route(f"a{i}", "r1", "running", "degraded", created=i) for i in range(1, 4)],
        S1U0,
        Expect("provisioning", create=1, terminate=[]),
    ),
    row(
        "a degraded old route goes before a healthy older one",
        dep(2),
        [route("a1", "r1", created=1), route("a2", "r1", "running", "degraded", created=2),
         *ready("b", "r2", 1, created=40)],
        S1U0,
        Expect("progressing", create=0, terminate=["a2"]),
    ),
    row(
        "ready routes: older first, ties broken by id",
        dep(2),
        [route("a2", "r1", created=5), route("a1", "r1", created=5), route("a0", "r1", created=9)],
        rolling(1, 1),
        Expect("progressing", create=0, terminate=["a1", "a2"]),
    ),
    row(
        "old unready routes are not counted as available: old ready kept for availability",
        dep(3), ready("a", "r1", 2) + [route("a3", "r1", "running", "unhealthy", created=3)], S1U0,
        Expect("provisioning", create=1, terminate=["a3"]),
    ),
    # -- what counts --------------------------------------------------------------------------------
    row(
        "terminating and terminated routes are ignored: not alive, not terminated again",
        dep(3),
        [
            route("a0", "r1", "terminating", created=0),
            route("a9", "r1", "terminated", created=0),
            *ready("a", "r1", 2),
            *ready("b", "r2", 1, created=40),
        ],
        S1U0,
        Expect("provisioning", create=1, terminate=[]),
    ),
    row(
        "a failed target route is not alive: it is replaced (failure budget 3 not used up)",
        dep(3), ready("a", "r1", 3) + [route("b1", "r2", "failed_to_start", failed=True, created=40)], S1U0,
        Expect("provisioning", create=1),
    ),
    row(
        "status failed_to_start counts as failed even without the flag",
        dep(1), ready("a", "r1", 1) + [route("b1", "r2", "failed_to_start", created=40)], S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold", terminate=[]),
    ),
    row(
        "a running route flagged failed is not alive and not terminated by the strategy",
        dep(2), ready("a", "r1", 2) + [route("b1", "r2", failed=True, created=40)], rolling(1, 0, failure_threshold=5),
        Expect("provisioning", create=1),
    ),
    row(
        "a route without a health check is ready once running",
        dep(1), [route("a1", "r1"), route("b1", "r2", "running", "not_checked", check=False, created=40)], S1U0,
        Expect("progressing", terminate=["a1"]),
    ),
    row(
        "a target route with health not_checked is unready: no old route goes",
        dep(1), [route("a1", "r1"), route("b1", "r2", "running", "not_checked", created=40)], S1U0,
        Expect("progressing", reason_has=["0/1 ready, 0 provisioning, 1 unready"]),
    ),
    row(
        "a degraded target route is ready: the old route goes",
        dep(1), [route("a1", "r1"), route("b1", "r2", "running", "degraded", created=40)], S1U0,
        Expect("progressing", terminate=["a1"]),
    ),
    # -- completion ---------------------------------------------------------------------------------
    row(
        "completed: no other alive, no target provisioning, D ready",
        dep(3), ready("b", "r2", 3), S1U0,
        Expect("completed", reason_has=["rolling: completed: 3/3 r2 routes ready"]),
    ),
    row(
        "completed with surplus: unready target first, then ready newest first",
        dep(2),
        [*ready("b", "r2", 4), route("b9", "r2", "running", "not_checked", created=50)],
        S1U0,
        Expect("completed", terminate=["b9", "b4", "b3"], reason_has=["terminating 3 surplus"]),
    ),
    row(
        "not completed while a target route is provisioning (even with D ready)",
        dep(2), ready("b", "r2", 2) + prov("b", "r2", 1, start=3), S1U0,
        Expect("provisioning"),
    ),
    row(
        "not completed while another route is alive",
        dep(2), ready("b", "r2", 2, created=40) + [route("a1", "r1", "provisioning", "not_checked")], S1U0,
        Expect("progressing", terminate=["a1"]),
    ),
    row(
        "completed ignores other routes that are terminating",
        dep(2), ready("b", "r2", 2, created=40) + [route("a1", "r1", "terminating")], S1U0,
        Expect("completed"),
    ),
    # -- traffic ------------------------------------------------------------------------------------
    row(
        "a target route left inactive is put back into traffic",
        dep(2), ready("a", "r1", 2) + [route("b1", "r2", traffic="inactive", created=40)], S1U0,
        Expect("progressing", create=0, terminate=["a1"], traffic=["b1"],
               reason_has=["created 0, terminating 1, activating 1 (surge 1, unavailable 0)"]),
    ),
    row(
        "completed activates inactive target routes that stay, not the surplus",
        dep(1), [route("b1", "r2", traffic="inactive", created=40), route("b2", "r2", traffic="inactive", created=41)],
        S1U0,
        Expect("completed", terminate=["b2"], traffic=["b1"]),
    ),
    # -- rollback mode: the same rules towards the current revision ---------------------------------
    row(
        "rollback: abandoned unready routes go at once",
        dep(3, mode="rolling_back"),
        ready("a", "r1", 2) + prov("b", "r2", 1) + [route("b2", "r2", "running", "not_checked", created=40)],
        S1U0,
        Expect("rolling_back", create=0, terminate=["b1", "b2"], mode="rolling_back",
               reason_has=["rolling back: rolling: created 0, terminating 2"]),
    ),
    row(
        "rollback: abandoned ready routes go within the unavailability limit",
        dep(3, mode="rolling_back"), ready("a", "r1", 2) + ready("b", "r2", 2, created=40), S1U1,
        Expect("rolling_back", create=0, terminate=["b1", "b2"], mode="rolling_back"),
    ),
    row(
        "rollback completes: rolled_back",
        dep(3, mode="rolling_back"), ready("a", "r1", 3) + [route("b1", "r2", "terminating")], S1U0,
        Expect("rolled_back", mode="rolling_back", reason_has=["rolled back to r1: 3/3 routes ready"]),
    ),
    row(
        "rollback with surplus current routes: newest go",
        dep(2, mode="rolling_back"), ready("a", "r1", 3), S1U0,
        Expect("rolled_back", terminate=["a3"], mode="rolling_back"),
    ),
    row(
        "rollback of a third revision's leftovers too",
        dep(1, mode="rolling_back"), ready("a", "r1", 1) + ready("c", "r0", 1, created=40), S1U0,
        Expect("rolling_back", terminate=["c1"], mode="rolling_back"),
    ),
    row(
        "deploying == current: a reconciling rollout (replaces a missing route, completes)",
        dep(3, "r1", "r1"), ready("a", "r1", 2), S1U0,
        Expect("provisioning", create=1),
    ),
]


@pytest.mark.parametrize("r", ROWS)
def test_rolling_rules(r: Row) -> None:
    check_row(r)


def test_created_routes_are_active_with_ratio_1() -> None:
    d = run(dep(3), ready("a", "r1", 3), S1U1)
    assert [(c.revision, c.traffic, c.traffic_ratio) for c in d.create] == [("r2", Traffic.ACTIVE, 1.0)]


# -- the spec's walk-through: D=3, surge 1, unavailable 1 -------------------------------------------

WALK = [
    # (state, create, terminate, sub_step)
    ("cycle 1: 3 old ready", ready("a", "r1", 3), 1, ["a1"], "provisioning"),
    ("cycle 2: 2 old ready + 1 new provisioning", ready("a", "r1", 2, start=2) + prov("b", "r2", 1), 1, [],
     "provisioning"),
    # The spec's prose says "terminate 1 old" here; its own rule gives
    # min(o_ready + t_ready - (D - unavailable), o_ready) = min(2 + 2 - 2, 2) = 2, which keeps
    # D - unavailable = 2 ready routes (as Kubernetes would). The rule wins; see docs/strategies.md.
    ("cycle 3: 2 old + 2 new ready", ready("a", "r1", 2, start=2) + ready("b", "r2", 2, created=40), 0,
     ["a2", "a3"], "progressing"),
    ("cycle 4: 2 new ready", ready("b", "r2", 2, created=40), 1, [], "provisioning"),
    ("cycle 5: 2 new ready + 1 provisioning", ready("b", "r2", 2, created=40) + prov("b", "r2", 1, start=3), 0, [],
     "provisioning"),
    ("cycle 6: 3 new ready", ready("b", "r2", 3, created=40), 0, [], "completed"),
]


@pytest.mark.parametrize(("routes", "create", "terminate", "sub_step"), [w[1:] for w in WALK], ids=[w[0] for w in WALK])
def test_spec_walk_through(routes: list, create: int, terminate: list[str], sub_step: str) -> None:
    d = run(dep(3), routes, S1U1)
    assert (len(d.create), list(d.terminate), d.sub_step.value) == (create, terminate, sub_step), d.reason


def test_walk_through_with_every_route_ready_between_cycles() -> None:
    """The walk-through driven by applying each decision, every created route ready by the next cycle:
    at most D + surge = 4 alive and at least D - unavailable = 2 ready in every cycle."""
    routes = ready("a", "r1", 3)
    seen = []
    for cycle in range(1, 10):
        d = run(dep(3), routes, S1U1)
        seen.append((len(d.create), len(d.terminate), d.sub_step.value))
        routes = [r for r in routes if r.id not in d.terminate]
        routes += [route(f"n{cycle}{i}", "r2", created=40 + cycle) for i in range(len(d.create))]
        assert len(routes) <= 4 and len(routes) >= 2
        if d.sub_step.value == "completed":
            break
    assert seen == [(1, 1, "provisioning"), (1, 1, "provisioning"), (1, 1, "provisioning"), (0, 0, "completed")]
