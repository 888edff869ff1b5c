"""The checks every strategy shares (spec/strategies.md "Checks before and after the strategy"):
failure threshold, abort, paused, progress deadline (rollback | pause), "start a rollback" in the
same cycle, rollback mode ignoring the checks, and states no rule can decide."""

from __future__ import annotations

import pytest

from rollwise.model import DeploymentView, ValidationFailed

from .helpers import Expect, Row, check_row, dep, policy, prov, ready, rolling, route, row, run

S1U0 = rolling(1, 0)
OLD3 = ready("a", "r1", 3)


def failed(n: int, revision: str = "r2", *, created: float = 40, status: str = "failed_to_start") -> list:
    return [route(f"f{i}", revision, status, "not_checked", failed=True, created=created + i) for i in range(1, n + 1)]


ROWS = [
    # -- 1. failure threshold ----------------------------------------------------------------------
    row(
        "failure threshold default max(1, D) = 3 reached: rollback starts and ends in this cycle",
        dep(3), OLD3 + failed(3), S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold",
               reason_has=["rolling back (failure_threshold: 3 failed r2 routes, threshold 3): "
                           "rolling: rolled back to r1: 3/3 routes ready"]),
    ),
    row(
        "2 failures under the default threshold 3: the rollout goes on",
        dep(3), OLD3 + failed(2), S1U0,
        Expect("provisioning", create=1),
    ),
    row(
        "failures created before rollout_started_at do not count",
        dep(3, started=0), OLD3 + failed(3, created=-100), S1U0,
        Expect("provisioning", create=1),
    ),
    row(
        "a failure created exactly at rollout_started_at counts",
        dep(1, started=41), ready("a", "r1", 1) + failed(1), S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold"),
    ),
    row(
        "rollout_started_at null: every failed target route counts",
        dep(3, started=None), OLD3 + failed(3, created=-100), S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold"),
    ),
    row(
        "failure_threshold 1 in the policy",
        dep(3), OLD3 + failed(1), rolling(1, 0, failure_threshold=1),
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold"),
    ),
    row(
        "failed routes of the other revision do not count",
        dep(3), OLD3 + failed(3, "r1"), S1U0,
        Expect("provisioning", create=1),
    ),
    row(
        "failed routes already terminated still count",
        dep(3), OLD3 + failed(3, status="terminated"), S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold"),
    ),
    row(
        "D=0: threshold max(1, 0) = 1",
        dep(0), ready("a", "r1", 1) + failed(1), S1U0,
        Expect("rolled_back", terminate=["a1"], mode="rolling_back", rollback_reason="failure_threshold"),
    ),
    # -- 2. abort ----------------------------------------------------------------------------------
    row(
        "abort: the rolling rollback decision of the same cycle",
        dep(3, abort=True), ready("a", "r1", 2) + ready("b", "r2", 2, created=40), S1U0,
        Expect("rolling_back", terminate=["b1"], mode="rolling_back", rollback_reason="aborted",
               reason_has=["rolling back (aborted): rolling: created 0, terminating 1 (surge 1, unavailable 0)"]),
    ),
    row(
        "failure threshold is checked before abort",
        dep(3, abort=True), OLD3 + failed(3), S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold"),
    ),
    row(
        "abort is checked before paused",
        dep(3, abort=True, paused=True), OLD3, S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="aborted"),
    ),
    # -- 3. paused ---------------------------------------------------------------------------------
    row(
        "paused: sub-step paused, no route changes",
        dep(3, paused=True), OLD3, S1U0,
        Expect("paused", reason_has=["rolling: paused by the operator, no route changes"]),
    ),
    row(
        "paused does not stop the failure threshold",
        dep(3, paused=True), OLD3 + failed(3), S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="failure_threshold"),
    ),
    row(
        "paused never times out",
        dep(3, paused=True, progress=-100000), OLD3, S1U0,
        Expect("paused"),
    ),
    row(
        "paused blue-green awaiting promotion with promote_requested: still paused",
        dep(2, paused=True, promote=True), ready("a", "r1", 2) + ready("g", "r2", 2, created=40), policy("blue_green"),
        Expect("paused", reason_has=["blue-green: paused"]),
    ),
    # -- after the rules: progress deadline --------------------------------------------------------
    row(
        "no progress for 601s > 600s while provisioning: rollback (default on_deadline)",
        dep(3, progress=-541), OLD3, S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="progress_deadline",
               reason_has=["rolling back (progress_deadline: no progress for 601s, deadline 600s)"]),
    ),
    row(
        "exactly 600s is not past the deadline (strict >)",
        dep(3, progress=-540), OLD3, S1U0,
        Expect("provisioning", create=1),
    ),
    row(
        "progressing times out too",
        dep(2, progress=-1000), ready("a", "r1", 2) + [route("b1", "r2", "running", "not_checked", created=40),
                                                        route("b2", "r2", "running", "not_checked", created=41)], S1U0,
        Expect("rolling_back", terminate=["b1", "b2"], mode="rolling_back", rollback_reason="progress_deadline"),
    ),
    row(
        "progress_deadline_seconds null: no deadline",
        dep(3, progress=-100000), OLD3, rolling(1, 0, progress_deadline_seconds=None),
        Expect("provisioning", create=1),
    ),
    row(
        "custom deadline 30s",
        dep(3, progress=29), OLD3, rolling(1, 0, progress_deadline_seconds=30),
        Expect("rolled_back", mode="rolling_back", rollback_reason="progress_deadline"),
    ),
    row(
        "on_deadline pause: paused, set_paused, no route changes",
        dep(3, progress=-541), OLD3, rolling(1, 0, on_deadline="pause"),
        Expect("paused", set_paused=True,
               reason_has=["rolling: paused: no progress for 601s (progress deadline 600s), no route changes"]),
    ),
    row(
        "a completed decision is never overdue",
        dep(3, progress=-100000), ready("b", "r2", 3), S1U0,
        Expect("completed"),
    ),
    row(
        "last_progress_at null: measured from rollout_started_at",
        dep(3, progress=None, started=-1000), OLD3, S1U0,
        Expect("rolled_back", mode="rolling_back", rollback_reason="progress_deadline"),
    ),
    row(
        "last_progress_at and rollout_started_at null: no deadline",
        dep(3, progress=None, started=None), OLD3, S1U0,
        Expect("provisioning", create=1),
    ),
    row(
        "recreate progressing past the deadline: the recreate rollback",
        dep(2, progress=-541), [route("b1", "r2", "running", "not_checked", created=40),
                                route("b2", "r2", "running", "not_checked", created=41)], policy("recreate"),
        Expect("rolling_back", create=2, terminate=["b1", "b2"], mode="rolling_back",
               rollback_reason="progress_deadline"),
    ),
    # -- rollback mode: no checks ------------------------------------------------------------------
    row(
        "rollback mode ignores paused and abort_requested",
        dep(3, mode="rolling_back", paused=True, abort=True), ready("a", "r1", 2) + ready("b", "r2", 1, created=40),
        S1U0,
        Expect("rolling_back", create=1, mode="rolling_back"),
    ),
    row(
        "rollback mode ignores failures and the deadline",
        dep(3, mode="rolling_back", progress=-100000), ready("a", "r1", 1) + failed(5, "r1"), S1U0,
        Expect("rolling_back", create=2, mode="rolling_back"),
    ),
    row(
        "rollback mode with current_revision null: nothing to return to, every alive route goes",
        dep(2, None, "r2", mode="rolling_back"), ready("b", "r2", 1) + prov("b", "r2", 1, start=2), S1U0,
        Expect("rolled_back", terminate=["b2", "b1"], mode="rolling_back",
               reason_has=["rolling back: rolling: rolled back to no revision"]),
    ),
    row(
        "abort of a rollout with no current revision: every alive route goes",
        dep(2, None, "r2", abort=True), ready("b", "r2", 1) + prov("b", "r2", 1, start=2), policy("blue_green"),
        Expect("rolled_back", terminate=["b2", "b1"], mode="rolling_back", rollback_reason="aborted"),
    ),
    row(
        "forward rollout with no current revision: other routes are none",
        dep(2, None, "r2"), [], S1U0,
        Expect("provisioning", create=2),
    ),
]


@pytest.mark.parametrize("r", ROWS)
def test_checks(r: Row) -> None:
    check_row(r)


def test_forward_without_deploying_revision_cannot_be_decided() -> None:
    with pytest.raises(ValidationFailed, match=r"^deployment\.deploying_revision: is null, but a forward rollout"):
        run(dep(3, "r1", None), ready("a", "r1", 3), S1U0)


def test_negative_desired_replicas_cannot_be_decided() -> None:
    d = DeploymentView(desired_replicas=-1, current_revision="r1", deploying_revision="r2")
    with pytest.raises(ValidationFailed, match=r"^deployment\.desired_replicas: -1 is negative$"):
        run(d, [], S1U0)


def test_rollback_reason_only_in_the_cycle_that_starts_it() -> None:
    start = run(dep(3, abort=True), ready("a", "r1", 2) + ready("b", "r2", 2, created=40), S1U0)
    assert start.rollback_reason is not None
    later = run(dep(3, mode="rolling_back", abort=True), ready("a", "r1", 2) + ready("b", "r2", 1, created=41), S1U0)
    assert later.rollback_reason is None and later.reason.startswith("rolling back: rolling: ")
