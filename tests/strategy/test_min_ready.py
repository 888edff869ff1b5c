"""`min_ready_seconds` (docs/strategies.md, "min_ready_seconds"), every strategy: a route healthy for less
than min_ready_seconds (now - status_updated_at) is not ready yet; the decision says when the first
such route will count (`requeue_after` and a clause of the reason). Tables for rolling, blue-green,
recreate and canary, rollback mode, the termination order and the default 0."""

from __future__ import annotations

import pytest

from .helpers import Expect, Row, canary, check_row, dep, policy, prov, ready, rolling, route, row

OLD3 = ready("a", "r1", 3)
WAIT_5 = "1 route healthy for less than min_ready_seconds 10s, the first counts as ready in 5s"


def fresh(id: str, revision: str = "r2", *, healthy_at: float, created: float = 40, **kw: object) -> object:
    """A route of `revision`, healthy since `healthy_at` (seconds after T0; NOW is 60)."""
    return route(id, revision, created=created, updated=healthy_at, **kw)  # type: ignore[arg-type]


ROWS = [
    # -- rolling -------------------------------------------------------------------------------------------
    row(
        "rolling: a new route healthy for 5 s of 10 is not ready: no old route goes, requeue in 5 s",
        dep(3), OLD3 + [fresh("b1", healthy_at=55)], rolling(1, 0, min_ready_seconds=10),
        Expect("progressing", requeue=5,
               reason_has=["waiting for r2 routes: 0/3 ready, 0 provisioning, 1 unready", WAIT_5]),
    ),
    row(
        "rolling: healthy for exactly 10 s (>=): ready, the oldest old route goes",
        dep(3), OLD3 + [fresh("b1", healthy_at=50)], rolling(1, 0, min_ready_seconds=10),
        Expect("progressing", terminate=["a1"]),
    ),
    row(
        "rolling: min_ready_seconds 0 (the default): ready at once",
        dep(3), OLD3 + [fresh("b1", healthy_at=59.9)], rolling(1, 0),
        Expect("progressing", terminate=["a1"]),
    ),
    row(
        "rolling: the earliest of several waits is the requeue",
        dep(3), OLD3 + [fresh("b1", healthy_at=58), fresh("b2", healthy_at=53, created=41)],
        rolling(2, 0, min_ready_seconds=10),
        Expect("progressing", requeue=3,
               reason_has=["2 routes healthy for less than min_ready_seconds 10s, the first counts as ready in 3s"]),
    ),
    row(
        "rolling: old routes are never warming: a just-healthy old route serves and counts (not terminated)",
        dep(2), [fresh("a1", "r1", healthy_at=58, created=1), *ready("a", "r1", 1, start=2, created=0)],
        rolling(1, 0, min_ready_seconds=10),
        Expect("provisioning", create=1),
    ),
    row(
        "termination order: a warming route goes after unhealthy and not-checked ones, older or not",
        dep(3),
        [fresh("a1", "r1", healthy_at=58, created=1), route("a2", "r1", "running", "unhealthy", created=5),
         route("a3", "r1", "running", "not_checked", created=6), *ready("a", "r1", 3, start=4, created=0)],
        rolling(1, 0, min_ready_seconds=10),
        Expect("progressing", terminate=["a2", "a3", "a1"]),
    ),
    row(
        "rolling rollback mode: the current revision's new routes must be ready long enough too",
        dep(2, mode="rolling_back"), [fresh("a1", "r1", healthy_at=55, created=50), *ready("a", "r1", 1, start=2)]
        + ready("b", "r2", 1, created=40), rolling(1, 0, min_ready_seconds=10),
        Expect("rolling_back", mode="rolling_back", requeue=5, reason_has=[WAIT_5]),
    ),
    row(
        "a completed decision has no wait (the routes that count are ready)",
        dep(2), ready("b", "r2", 2) + [fresh("b9", healthy_at=59, created=50)], rolling(1, 0, min_ready_seconds=10),
        Expect("completed", terminate=["b9"]),
    ),
    # -- blue-green ----------------------------------------------------------------------------------------
    row(
        "blue-green: a green route healthy for 5 s of 10: progressing, not awaiting promotion",
        dep(2), ready("a", "r1", 2) + [fresh("g1", healthy_at=40, traffic="inactive"),
                                      fresh("g2", healthy_at=55, created=41, traffic="inactive")],
        policy("blue_green", auto_promote=True, min_ready_seconds=10),
        Expect("progressing", requeue=5, reason_has=["1/2 ready, 0 provisioning, 1 unready", WAIT_5]),
    ),
    row(
        "blue-green: both long enough: promoted (auto)",
        dep(2), ready("a", "r1", 2) + [fresh("g1", healthy_at=40, traffic="inactive"),
                                      fresh("g2", healthy_at=50, created=41, traffic="inactive")],
        policy("blue_green", auto_promote=True, min_ready_seconds=10),
        Expect("completed", terminate=["a1", "a2"], traffic=["g1", "g2"]),
    ),
    # -- recreate ------------------------------------------------------------------------------------------
    row(
        "recreate: new routes healthy for 5 s of 10: not completed, requeue 5",
        dep(2), [fresh("b1", healthy_at=55), fresh("b2", healthy_at=40, created=41)],
        policy("recreate", min_ready_seconds=10),
        Expect("progressing", requeue=5, reason_has=["waiting for r2 routes: 1/2 ready, 0 provisioning, 1 unready"]),
    ),
    row(
        "recreate: long enough: completed",
        dep(2), [fresh("b1", healthy_at=50), fresh("b2", healthy_at=40, created=41)],
        policy("recreate", min_ready_seconds=10),
        Expect("completed"),
    ),
    # -- canary --------------------------------------------------------------------------------------------
    row(
        "canary: the set_weight route healthy for 5 s of 10: the step waits, 100 % stable, requeue 5",
        dep(4), ready("a", "r1", 4) + [fresh("b1", healthy_at=55)], canary(10, 60.0, min_ready_seconds=10),
        Expect("progressing", weights={"r1": 100, "r2": 0}, requeue=5, reason_has=[WAIT_5]),
    ),
    row(
        "canary: long enough: the step completes, 90/10",
        dep(4), ready("a", "r1", 4) + [fresh("b1", healthy_at=50)], canary(10, 60.0, min_ready_seconds=10),
        Expect("awaiting_promotion", set_step=1, weights={"r1": 90, "r2": 10}, requeue=60),
    ),
    row(
        "canary: a timed pause with 3 s left and a route warming for 9 s more: requeue at the pause's end",
        dep(4, step=1, step_started=58), ready("a", "r1", 4) + ready("b", "r2", 1, created=40)
        + [fresh("b2", healthy_at=59, created=45)], canary(50, 5.0, min_ready_seconds=10),
        Expect("awaiting_promotion", weights={"r1": 100, "r2": 0}, requeue=3, reason_has=["counts as ready in 9s"]),
    ),
    row(
        "canary: the same with the route counting in 2 s: requeue then (its weight 50 needs it)",
        dep(4, step=1, step_started=58), ready("a", "r1", 4) + ready("b", "r2", 1, created=40)
        + [fresh("b2", healthy_at=52, created=45)], canary(50, 5.0, min_ready_seconds=10),
        Expect("awaiting_promotion", weights={"r1": 100, "r2": 0}, requeue=2),
    ),
]


@pytest.mark.parametrize("r", ROWS)
def test_min_ready(r: Row) -> None:
    check_row(r)


def test_a_provisioning_route_is_not_warming() -> None:
    """Only routes that are ready by their health wait out min_ready_seconds; nothing to requeue for a
    route still provisioning (its readiness is an event)."""
    from .helpers import run

    decision = run(dep(3), OLD3 + prov("b", "r2", 1), rolling(1, 0, min_ready_seconds=10, progress_deadline_seconds=None))
    assert decision.requeue_after is None and "min_ready" not in decision.reason
