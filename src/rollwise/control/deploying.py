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
from typing import Any

from rollwise.control.outcome import Outcome, terminate_update
from rollwise.control.restarts import compute_restart_backoff, hold_creates
from rollwise.control.views import HealthChecks, compute_deployment_view, compute_route_views, revision_key
from rollwise.model import Decision, Lifecycle, Mode, Policy, RollbackReason, RouteView, StrategyName, SubStep
from rollwise.store.records import DeploymentRecord, RouteRecord
from rollwise.strategy import decide

MAX_EVALUATION_ERRORS = 3
"""Consecutive evaluation failures that start a rollback (and, while rolling back, abandon it)."""

ROLLBACK_POLICY = Policy(strategy=StrategyName.ROLLING, max_surge="25%", max_unavailable=0)
"""Used to roll back a deployment whose own policy cannot be evaluated."""

_STRATEGY_WORDS = {
    StrategyName.ROLLING: "rolling",
    StrategyName.BLUE_GREEN: "blue-green",
    StrategyName.RECREATE: "recreate",
}


def strategy_words(policy: Policy | None) -> str:
    return _STRATEGY_WORDS.get(policy.strategy, str(policy.strategy)) if policy else "unknown strategy"


def reset_rollout_fields() -> dict[str, Any]:
    """Deployment columns that end a rollout (completed, rolled back or abandoned)."""
    return {
        "lifecycle": Lifecycle.READY,
        "deploying_revision": None,
        "mode": Mode.FORWARD,
        "paused": False,
        "abort_requested": False,
        "promote_requested": False,
        "error_count": 0,
    }


def compute_deploying_outcome(
    dep: DeploymentRecord,
    routes: Sequence[RouteRecord],
    health_checks: HealthChecks,
    now: datetime,
) -> Outcome:
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
    decision = decide(compute_deployment_view(dep), views, policy, now)
    if decision.mode is Mode.ROLLING_BACK:
        # A rollback has no failure budget: a serving revision that keeps failing backs off instead.
        decision = hold_creates(decision, compute_restart_backoff(routes, dep.current_revision, now), now)
    _apply_decision(out, decision, views, policy, now)
    return out


def _apply_decision(
    out: Outcome,
    decision: Decision,
    views: Sequence[RouteView],
    policy: Policy,
    now: datetime,
) -> None:
    dep = out.deployment
    out.apply_route_decision(decision, now)
    out.requeue_after = decision.requeue_after
    ch = out.changes
    if dep.error_count:
        ch["error_count"] = 0
        ch["last_error"] = None

    rolled_back = decision.sub_step is SubStep.ROLLED_BACK or (
        dep.mode is Mode.ROLLING_BACK and decision.sub_step is SubStep.COMPLETED
    )
    if rolled_back:
        reason = decision.rollback_reason or dep.rollback_reason
        ch.update(reset_rollout_fields())
        ch["sub_step"] = SubStep.ROLLED_BACK
        if decision.rollback_reason is not None:
            ch["rollback_reason"] = decision.rollback_reason
        out.add_history(
            now=now,
            result="failure",
            message=f"{decision.reason}; rolled back ({reason or 'unknown reason'}), "
            f"revision {dep.current_revision} is serving",
            lifecycle_to=Lifecycle.READY,
            sub_step=SubStep.ROLLED_BACK,
            strategy=str(policy.strategy),
            from_revision=dep.deploying_revision,
            to_revision=dep.current_revision,
        )
        return
    if decision.sub_step is SubStep.COMPLETED:
        ch.update(reset_rollout_fields())
        ch["sub_step"] = SubStep.COMPLETED
        ch["rollback_reason"] = None
        out.swap = True
        out.add_history(
            now=now,
            result="success",
            message=f"{decision.reason}; revision {dep.deploying_revision} is serving",
            lifecycle_to=Lifecycle.READY,
            sub_step=SubStep.COMPLETED,
            strategy=str(policy.strategy),
            from_revision=dep.current_revision,
            to_revision=dep.deploying_revision,
        )
        return

    if decision.sub_step is not dep.sub_step:
        ch["sub_step"] = decision.sub_step
    if decision.mode is not dep.mode:
        ch["mode"] = decision.mode
    if decision.rollback_reason is not None:
        ch["rollback_reason"] = decision.rollback_reason
    if decision.set_paused and not dep.paused:
        ch["paused"] = True
    progress = _progress_at(dep, decision, views, now)
    if progress is not None:
        ch["last_progress_at"] = progress

    if decision.changes_routes or "sub_step" in ch or "mode" in ch or "paused" in ch:
        result = "waiting" if decision.sub_step in (SubStep.AWAITING_PROMOTION, SubStep.PAUSED) else "progress"
        if decision.rollback_reason is not None:
            result = "failure"
        out.add_history(
            now=now,
            result=result,
            message=decision.reason,
            sub_step=decision.sub_step,
            strategy=str(policy.strategy),
            from_revision=dep.current_revision,
            to_revision=dep.deploying_revision,
        )


def _progress_at(
    dep: DeploymentRecord,
    decision: Decision,
    views: Sequence[RouteView],
    now: datetime,
) -> datetime | None:
    """New `last_progress_at`, or None to keep it: routes created/terminated now, or a target route
    that turned ready since the last progress (its `status_updated_at` is when it did)."""
    if decision.create or decision.terminate:
        return now
    target = revision_key(dep.deploying_revision if dep.mode is Mode.FORWARD else dep.current_revision)
    ready_at = [v.status_updated_at for v in views if v.revision == target and v.is_ready]
    latest = max(ready_at, default=None)
    if latest is not None and (dep.last_progress_at is None or latest > dep.last_progress_at):
        return min(latest, now)
    return None


def compute_error_outcome(
    dep: DeploymentRecord, routes: Sequence[RouteRecord], exc: BaseException, now: datetime
) -> Outcome:
    """A failed evaluation: count it; the third in a row starts a rollback (or abandons one)."""
    out = Outcome(dep)
    words = strategy_words(dep.policy)
    error = f"{type(exc).__name__}: {exc}"
    count = dep.error_count + 1
    strategy = str(dep.policy.strategy) if dep.policy else None
    if count < MAX_EVALUATION_ERRORS:
        out.changes.update(error_count=count, last_error=error)
        # The same words every time, so repeated failures merge into one row (its `attempts` counts).
        then = "rolls back" if dep.mode is Mode.FORWARD else "abandons the rollout"
        out.add_history(
            now=now,
            result="error",
            message=f"{words}: evaluation failed ({then} after {MAX_EVALUATION_ERRORS} in a row): {exc}",
            sub_step=dep.sub_step,
            strategy=strategy,
            error=error,
        )
        return out
    if dep.mode is Mode.FORWARD:
        # Start a rollback; it is evaluated with ROLLBACK_POLICY from the next cycle on.
        out.changes.update(
            mode=Mode.ROLLING_BACK,
            sub_step=SubStep.ROLLING_BACK,
            rollback_reason=RollbackReason.EVALUATION_ERROR,
            error_count=1,
            last_error=error,
            last_progress_at=now,
        )
        out.add_history(
            now=now,
            result="failure",
            message=f"{words}: evaluation failed {count} times in a row, rolling back: {exc}",
            sub_step=SubStep.ROLLING_BACK,
            strategy=strategy,
            from_revision=dep.current_revision,
            to_revision=dep.deploying_revision,
            error=error,
        )
        return out
    # The rollback cannot be evaluated either: abandon the rollout. READY's reconciler restores the
    # serving revision's replicas with the default rolling rules.
    for r in routes:
        if r.revision != dep.current_revision and r.status.is_alive:
            out.route_updates.append(terminate_update(dep.id, r.id, now))
    out.changes.update(reset_rollout_fields())
    out.changes.update(sub_step=SubStep.ROLLED_BACK, last_error=error)
    out.add_history(
        now=now,
        result="failure",
        message=f"{words}: rollback could not be evaluated {MAX_EVALUATION_ERRORS} times in a row; "
        f"rollout abandoned, revision {dep.current_revision} restored by the replica reconciler: {exc}",
        lifecycle_to=Lifecycle.READY,
        sub_step=SubStep.ROLLED_BACK,
        strategy=strategy,
        from_revision=dep.deploying_revision,
        to_revision=dep.current_revision,
        error=error,
    )
    return out
