"""The DEPLOYING cycle's per-deployment rules (pure): strategy decision -> Outcome.

`compute_deploying_outcome` is called by `cycles.run_cycle` once per DEPLOYING deployment with the
records of one snapshot; it calls the strategy engine (the same `decide` as `rollwise plan`) and turns
the decision into database changes: route creations/terminations/traffic, sub-step and mode, the
revision swap on completion, and one history row that names the strategy. It must not do I/O.

Errors are bounded: an evaluation that raises is recorded by the cycle for that deployment only (the
cycle catches it and writes `compute_error_outcome` instead); the third failure
in a row starts a rollback (reason `evaluation_error`); if the rollback itself cannot be evaluated three
times in a row, the rollout is abandoned (target routes terminated, deployment back to READY, where the
replica reconciler restores the serving revision). So no deployment stays DEPLOYING forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rollwise.control.rules import transitions
from rollwise.control.rules.capacity import NO_ROOM, Room, compute_target_view, is_capacity_wait
from rollwise.control.rules.lost import note_lost_routes
from rollwise.control.rules.outcome import Outcome, terminate_update
from rollwise.control.rules.restarts import compute_restart_backoff, hold_creates
from rollwise.control.rules.views import HealthChecks, compute_deployment_view, compute_route_views
from rollwise.model import Mode, Policy, StrategyName
from rollwise.model.views import NO_ANALYSIS, AnalysisCounts
from rollwise.store.records import AnalysisTally
from rollwise.store.records import DeploymentRecord, RouteRecord
from rollwise.strategy import decide

ROLLBACK_POLICY = Policy(strategy=StrategyName.ROLLING, max_surge="25%", max_unavailable=0)
"""Used to roll back a deployment whose own policy cannot be evaluated."""


def compute_deploying_outcome(
    dep: DeploymentRecord,
    routes: Sequence[RouteRecord],
    health_checks: HealthChecks,
    now: datetime,
    room: Room = NO_ROOM,
    analysis: AnalysisCounts = NO_ANALYSIS,
) -> Outcome:
    """`room`: what is free on the nodes now; the decision's creations are taken from it. `analysis`:
    what a canary's analysis measured in this rollout (`compute_analysis_counts`)."""
    out = Outcome(dep)
    policy = dep.policy
    if dep.mode is Mode.ROLLING_BACK and (policy is None or dep.error_count > 0):
        policy = ROLLBACK_POLICY  # a rollback must not depend on a policy that failed to evaluate
    # Raising is how an evaluation fails: `run_cycle` records it for this deployment only (its
    # CycleReport.errors, which metrics count) and writes `compute_error_outcome` instead.
    if policy is None:
        raise ValueError(dep.policy_error or "the deployment has no usable policy")
    if dep.deploying_revision is None or dep.current_revision is None:
        raise ValueError("DEPLOYING without a current and a deploying revision")
    # The route views are computed once: the decision and the progress check both read them.
    views = compute_route_views(routes, health_checks)
    view = compute_deployment_view(dep, analysis, compute_target_view(room, dep))
    decision = decide(view, views, policy, now)
    if decision.mode is Mode.ROLLING_BACK:
        # A rollback has no failure budget: a serving revision that keeps failing backs off instead.
        decision = hold_creates(decision, compute_restart_backoff(routes, dep.current_revision, now), now)
    out.apply_route_decision(decision, now, holds=lambda rev: room.need_of(dep.id, rev))
    for new in out.new_routes:
        room.take(new.holds or {})
    out.requeue_after = decision.requeue_after
    out.settled = not is_capacity_wait(decision)
    if (lost := note_lost_routes(dep, routes, now)) is not None:
        out.apply(lost[0])
        out.route_updates.extend(lost[1])
    out.apply(transitions.rollout_step(dep, decision, views, policy, now))
    return out


def compute_error_outcome(
    dep: DeploymentRecord, routes: Sequence[RouteRecord], exc: BaseException, now: datetime
) -> Outcome:
    """A failed evaluation: count it; the third in a row starts a rollback (or abandons one)."""
    out = Outcome(dep)
    error = f"{type(exc).__name__}: {exc}"
    if dep.error_count + 1 < transitions.MAX_EVALUATION_ERRORS:
        out.apply(transitions.count_evaluation_error(dep, error, exc, now))
    elif dep.mode is Mode.FORWARD:
        out.apply(transitions.start_error_rollback(dep, error, exc, now))
    else:
        # The rollback cannot be evaluated either: abandon the rollout. READY's reconciler restores the
        # serving revision's replicas with the default rolling rules.
        for r in routes:
            if r.revision != dep.current_revision and r.status.is_alive:
                out.route_updates.append(terminate_update(dep.id, r.id, now))
        out.apply(transitions.abandon_rollout(dep, error, exc, now))
    return out


def is_analysed(dep: DeploymentRecord) -> bool:
    """A canary rollout with an analysis: its cycle reads the measurements."""
    return dep.policy is not None and dep.policy.strategy is StrategyName.CANARY and dep.policy.analysis is not None


def compute_analysis_counts(dep: DeploymentRecord, tally: AnalysisTally) -> AnalysisCounts:
    """The engine's view of the measurements of the current rollout. `interval_passed` (what the final
    step waits for) needs the newest window to have passed, and at the final step that window must have
    ended after the step began: the rollout never completes on a window measured before it got there,
    nor with nothing measured at all."""
    final = dep.policy is not None and dep.canary_step >= len(dep.policy.steps)
    fresh = tally.last_window_end is not None and (
        dep.step_started_at is None or tally.last_window_end >= dep.step_started_at
    )
    return AnalysisCounts(
        failed=tally.failed, passed=tally.passed, inconclusive=tally.inconclusive,
        last_failure=tally.last_failure, interval_passed=tally.last_window_passed and (fresh or not final),
    )
