"""The strategy engine's entry point: `decide(deployment, routes, policy, now) -> Decision`.

Called by the control layer's evaluation cycles (DEPLOYING, and READY replica reconciliation in
rollback mode), by `rollwise plan` (through `planio`) and by the API's dry run: all through the very
same function. It wraps the strategy rules (looked up in `registry`) with the checks every strategy
shares, docs/strategies.md "Checks before and after the strategy":

forward mode
    1. failed target routes (created at/after rollout_started_at) >= failure_threshold
       (default max(1, D))                                  -> start a rollback (failure_threshold)
    2. the strategy's own check (canary: failed analysis measurements >= failure_limit)
                                                            -> start a rollback (analysis)
    3. abort_requested                                      -> start a rollback (aborted)
    4. paused                                               -> sub-step paused, no route changes
                                                               (a canary keeps its weights)
    5. the strategy's rules
    6. the decision is provisioning/progressing and now - last_progress_at > progress_deadline_seconds
                                                            -> on_deadline: rollback | pause
       (canary: progress is measured from the later of last_progress_at and step_started_at, and a
       decision that moves to another step is not overdue: a step beginning is progress)
rollback mode
    the strategy's rules with T = current revision; no checks (a rollback restores the revision that
    was serving: it is not paused, aborted, failure-limited nor time-limited).

Every strategy: routes ready by their health for less than the policy's `min_ready_seconds` are not
ready yet (`cycle.build_view`); while some are, a decision that is not final says when the first of them
counts (`requeue_after`, and a clause of its reason).

"Start a rollback" evaluates the rollback rules on the same snapshot in the same cycle and returns
that decision (mode `rolling_back`, `rollback_reason` set), so no cycle is wasted. A limited capacity
(`deployment.capacity`) counts routes of the revision being deployed, so that rollback decision places
no route of the revision rolled back to (`CycleView.for_mode`); the next cycle has its own capacity.
A capacity wait is an ordinary `provisioning` / `progressing` decision: the progress deadline applies.

Must not: read the clock (`now` comes in), do I/O, or mutate its inputs. It raises only
`ValidationFailed`, for a state no rule can decide (see `check_decidable`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rollwise.model import (
    Decision,
    DeploymentView,
    Mode,
    OnDeadline,
    Policy,
    RollbackReason,
    RouteView,
    SubStep,
    ValidationFailed,
)
from rollwise.strategy import messages as msg
from rollwise.strategy.cycle import CycleView, build_view, in_termination_order, is_alive
from rollwise.strategy.registry import StrategyRules, rules_for


def check_decidable(deployment: DeploymentView) -> None:
    """Raise ValidationFailed (naming the field) for a deployment no rule can decide: a forward rollout
    without a revision to deploy, a negative D, or a negative number of placeable routes."""
    if deployment.desired_replicas < 0:
        raise ValidationFailed(f"deployment.desired_replicas: {deployment.desired_replicas} is negative")
    if deployment.canary_step < 0:
        raise ValidationFailed(f"deployment.canary_step: {deployment.canary_step} is negative")
    placeable = deployment.capacity.placeable
    if placeable is not None and placeable < 0:
        raise ValidationFailed(f"capacity.placeable: {placeable} is negative")
    if deployment.mode is Mode.FORWARD and deployment.deploying_revision is None:
        raise ValidationFailed(
            "deployment.deploying_revision: is null, but a forward rollout needs a revision to deploy"
        )


def failure_threshold(policy: Policy, desired: int) -> int:
    """The number of failed target routes that starts a rollback: the policy's, else max(1, D)."""
    return policy.failure_threshold if policy.failure_threshold is not None else max(1, desired)


def decide(deployment: DeploymentView, routes: Sequence[RouteView], policy: Policy, now: datetime) -> Decision:
    """The decision of one evaluation cycle for one deployment (pure; see the module docstring)."""
    check_decidable(deployment)
    rules = rules_for(policy.strategy)
    settings = rules.compute_settings(policy, deployment.desired_replicas)
    min_ready = policy.min_ready_seconds
    if deployment.mode is Mode.ROLLING_BACK:
        if deployment.current_revision is None:
            decision = _roll_back_to_nothing(rules, routes)
            return dataclasses.replace(decision, reason=msg.ROLLBACK_CONTINUE.format(line=decision.reason))
        view = build_view(deployment, routes, now=now, min_ready_seconds=min_ready)
        decision = rules.decide(view, settings)
        decision = dataclasses.replace(decision, reason=msg.ROLLBACK_CONTINUE.format(line=decision.reason))
        return _with_min_ready(decision, view)
    view = build_view(deployment, routes, now=now, min_ready_seconds=min_ready)

    threshold = failure_threshold(policy, view.desired)
    if view.t_failed >= threshold:
        why = msg.ROLLBACK_WHY[RollbackReason.FAILURE_THRESHOLD].format(
            failed=msg.count(view.t_failed, f"failed {view.target} route"), threshold=threshold
        )
        return _start_rollback(rules, settings, view, RollbackReason.FAILURE_THRESHOLD, why)
    own = None if rules.rollback_check is None else rules.rollback_check(view, settings)
    if own is not None:
        return _start_rollback(rules, settings, view, *own)
    if deployment.abort_requested:
        why = msg.ROLLBACK_WHY[RollbackReason.ABORTED]
        return _start_rollback(rules, settings, view, RollbackReason.ABORTED, why)
    if deployment.paused:
        return _hold(rules, settings, view, msg.PAUSED)

    decision = rules.decide(view, settings)
    moved_on = decision.set_canary_step is not None
    since = _progress_since(deployment, rules.has_steps)
    overdue = None if moved_on else _seconds_overdue(since, policy, now)
    if decision.sub_step in (SubStep.PROVISIONING, SubStep.PROGRESSING) and overdue is not None:
        elapsed, deadline = (msg.format_seconds(s) for s in overdue)
        if policy.on_deadline is OnDeadline.PAUSE:
            held = _hold(rules, settings, view, msg.DEADLINE_PAUSED.format(elapsed=elapsed, deadline=deadline))
            return dataclasses.replace(held, set_paused=True)
        why = msg.ROLLBACK_WHY[RollbackReason.PROGRESS_DEADLINE].format(elapsed=elapsed, deadline=deadline)
        return _start_rollback(rules, settings, view, RollbackReason.PROGRESS_DEADLINE, why)
    if decision.sub_step in (SubStep.PROVISIONING, SubStep.PROGRESSING):
        until = _seconds_to_deadline(now if moved_on else since, policy, now)
        decision = _requeue(decision, until)
    return _with_min_ready(decision, view)


def _hold(rules: StrategyRules[Any], settings: Any, view: CycleView, body: str) -> Decision:
    """A paused decision: no route changes; a strategy with weights keeps them as they stand."""
    weights: Mapping[str, int] | None = None if rules.weights is None else rules.weights(view, settings)
    if weights is not None:
        body += msg.TRAFFIC_KEPT.format(weights=msg.format_weights(weights))
    return Decision(
        sub_step=SubStep.PAUSED, mode=Mode.FORWARD, reason=msg.LINE.format(label=rules.label, body=body), weights=weights
    )


def _requeue(decision: Decision, seconds: float | None) -> Decision:
    """The decision asking to be evaluated again after `seconds` at the latest."""
    if seconds is None or (decision.requeue_after is not None and decision.requeue_after <= seconds):
        return decision
    return dataclasses.replace(decision, requeue_after=seconds)


def _with_min_ready(decision: Decision, view: CycleView) -> Decision:
    """While routes wait out min_ready_seconds, a decision that is not final says when the first of
    them counts as ready, and asks to be evaluated again then."""
    if decision.sub_step in (SubStep.COMPLETED, SubStep.ROLLED_BACK, SubStep.PAUSED):
        return decision
    waiting = view.ready_wait(excluding=decision.terminate)
    if waiting is None:
        return decision
    routes, remaining = waiting
    clause = msg.MIN_READY_WAIT.format(
        routes=msg.count(routes, "route"),
        seconds=msg.format_seconds(view.min_ready_seconds),
        remaining=msg.format_seconds(remaining),
    )
    return _requeue(dataclasses.replace(decision, reason=decision.reason + clause), remaining)


def _progress_since(deployment: DeploymentView, has_steps: bool) -> datetime | None:
    """Since when progress is measured: `last_progress_at`, or `rollout_started_at` when that is not
    known; for a strategy with steps, the later of that and `step_started_at` (a step beginning is
    progress)."""
    since = deployment.last_progress_at or deployment.rollout_started_at
    step = deployment.step_started_at if has_steps else None
    if since is None or step is None:
        return since or step
    return max(since, step)


def _seconds_to_deadline(since: datetime | None, policy: Policy, now: datetime) -> float | None:
    """Seconds until the progress deadline is passed (a hair past it: the rule is strict), or None."""
    deadline = policy.progress_deadline_seconds
    if deadline is None or since is None:
        return None
    return max(0.0, deadline - (now - since).total_seconds()) + 0.001


def _seconds_overdue(since: datetime | None, policy: Policy, now: datetime) -> tuple[float, float] | None:
    """(seconds without progress, deadline) when the progress deadline has passed (strictly), else
    None. Progress is measured from `since` (`_progress_since`); without it, or with no deadline in the
    policy, there is no deadline."""
    deadline = policy.progress_deadline_seconds
    if deadline is None or since is None:
        return None
    elapsed = (now - since).total_seconds()
    return (elapsed, float(deadline)) if elapsed > deadline else None


def _start_rollback(
    rules: StrategyRules[Any], settings: Any, view: CycleView, reason: RollbackReason, why: str
) -> Decision:
    """The rollback decision of this same cycle, with the reason recorded."""
    if view.deployment.current_revision is None:
        decision = _roll_back_to_nothing(rules, view.routes)
    else:
        decision = rules.decide(view.for_mode(Mode.ROLLING_BACK), settings)
    decision = dataclasses.replace(
        decision,
        mode=Mode.ROLLING_BACK,
        reason=msg.ROLLBACK_START.format(why=why, line=decision.reason),
        rollback_reason=reason,
    )
    return _with_min_ready(decision, view)


def _roll_back_to_nothing(rules: StrategyRules[Any], routes: Sequence[RouteView]) -> Decision:
    """A rollback of a rollout that had no serving revision before it (`current_revision` null): there
    is nothing to return to, so every alive route is terminated and the rollback ends at once."""
    alive = in_termination_order(r for r in routes if is_alive(r))
    return Decision(
        sub_step=SubStep.ROLLED_BACK,
        mode=Mode.ROLLING_BACK,
        reason=msg.LINE.format(
            label=rules.label, body=msg.ROLLED_BACK_TO_NOTHING.format(routes=msg.count(len(alive), "route"))
        ),
        terminate=tuple(r.id for r in alive),
    )
