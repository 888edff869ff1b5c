"""Recreate: table tests of spec/strategies.md "Recreate" and of its rollback."""

from __future__ import annotations

import pytest

from rollwise.model import Traffic

from .helpers import Expect, Row, check_row, dep, policy, prov, ready, route, row, run

RC = policy("recreate")

ROWS = [
    row(
        "start: every old route terminated and D new ones created in the same cycle",
        dep(3), ready("a", "r1", 3), RC,
        Expect("provisioning", create=3, terminate=["a1", "a2", "a3"],
               reason_has=["recreate: created 3, terminating 3 (downtime by design)"]),
    ),
    row(
        "old routes of any state go, in termination order",
        dep(2), [route("a1", "r1"), route("a2", "r1", "provisioning", "not_checked", created=5),
                 route("a3", "r1", "running", "degraded", created=6)], RC,
        Expect("provisioning", create=2, terminate=["a2", "a3", "a1"]),  # a3 degraded: ready, before a1
    ),
    row(
        "new routes provisioning: wait",
        dep(3), prov("b", "r2", 3), RC,
        Expect("provisioning", reason_has=["waiting for r2 routes: 0/3 ready, 3 provisioning"]),
    ),
    row(
        "new routes running, not all ready: progressing",
        dep(2), ready("b", "r2", 1) + [route("b2", "r2", "running", "not_checked")], RC,
        Expect("progressing", reason_has=["1/2 ready, 0 provisioning, 1 unready"]),
    ),
    row(
        "completed when no other route is alive and D are ready",
        dep(2), ready("b", "r2", 2) + [route("a1", "r1", "terminating")], RC,
        Expect("completed", reason_has=["recreate: completed: 2/2 r2 routes ready"]),
    ),
    row(
        "completed with surplus: not-ready first, then ready newest first",
        dep(2), ready("b", "r2", 3) + prov("b", "r2", 1, start=4), RC,
        Expect("completed", terminate=["b4", "b3"]),
    ),
    row(
        "surplus before completion (D lowered): at most D alive",
        dep(1), prov("b", "r2", 2), RC,
        Expect("provisioning", terminate=["b1"]),
    ),
    row(
        "failed new route replaced",
        dep(2), ready("b", "r2", 1) + [route("b2", "r2", "failed_to_start", failed=True, created=40)], RC,
        Expect("provisioning", create=1),
    ),
    row(
        "D=0: old routes go, then completed",
        dep(0), ready("a", "r1", 2), RC,
        Expect("progressing", terminate=["a1", "a2"]),
    ),
    row(
        "rollback mode: the current revision is recreated",
        dep(2, mode="rolling_back"), ready("b", "r2", 2, created=40), RC,
        Expect("rolling_back", create=2, terminate=["b1", "b2"], mode="rolling_back",
               reason_has=["rolling back: recreate: created 2, terminating 2"]),
    ),
    row(
        "rollback mode completes: rolled_back",
        dep(2, mode="rolling_back"), ready("a", "r1", 2), RC,
        Expect("rolled_back", mode="rolling_back", reason_has=["rolled back to r1: 2/2 routes ready"]),
    ),
    row(
        "abort: the rollback decision in the same cycle",
        dep(2, abort=True), prov("b", "r2", 2), RC,
        Expect("rolling_back", create=2, terminate=["b1", "b2"], mode="rolling_back", rollback_reason="aborted",
               reason_has=["rolling back (aborted): recreate: created 2, terminating 2"]),
    ),
    row(
        "an inactive target route is put back into traffic",
        dep(1), [route("b1", "r2", traffic="inactive")], RC,
        Expect("completed", traffic=["b1"], reason_has=["activating 1"]),
    ),
]


@pytest.mark.parametrize("r", ROWS)
def test_recreate_rules(r: Row) -> None:
    check_row(r)


def test_created_routes_are_active() -> None:
    d = run(dep(1), ready("a", "r1", 1), RC)
    assert [(c.revision, c.traffic, c.traffic_ratio) for c in d.create] == [("r2", Traffic.ACTIVE, 1.0)]
