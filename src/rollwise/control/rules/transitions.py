"""Every change of a deployment's lifecycle and rollout, in one place (pure).

Operator requests (control.operations) and the lifecycle cycles (control.rules.deploying, control.rules.lifecycle)
both call these functions. Each takes the records it needs and returns a `Transition`: the typed
`DeploymentChange` (store.records; every field visible to mypy), the history rows that record it, and
whether it swaps the revisions. A refusal raises a typed error of control.errors with a one-line message.

    operator requests                     cycles
    activate (start, supersede, abort)    begin_scaling          PENDING -> SCALING
    undo                                  finish_scaling         SCALING -> READY
    promote, pause, resume, abort         rollout_step           sub-step, mode, progress, deadline pause
    patch (replicas, policy)              complete_rollout       the swap, DEPLOYING -> READY
    destroy                               roll_back              DEPLOYING -> READY, rolled back
                                          count_evaluation_error / start_error_rollback / abandon_rollout
    applicable_verbs (which verbs apply)  note_route_failure     last_error of a failed route
                                          destroyed              DESTROYING -> DESTROYED

Lifecycle: `PENDING -> SCALING -> READY <-> DEPLOYING`, and `-> DESTROYING -> DESTROYED` from any of them.
Must not: do I/O, read the clock (`now` is passed in), or decide route changes (the strategies do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rollwise.control.errors import NotApplicable, RolloutInProgress
from rollwise.control.rules.views import revision_key, revision_number
from rollwise.model import Decision, Lifecycle, Mode, Policy, RollbackReason, RouteView, StrategyName, SubStep
from rollwise.store.commands import UNSET, DeploymentChange, NewHistory, NewRollout, RolloutUpdate
from rollwise.store.records import DeploymentRecord, HistoryRecord

MAX_EVALUATION_ERRORS = 3
"""Consecutive evaluation failures that start a rollback (and, while rolling back, abandon it)."""

_STRATEGY_WORDS = {
    StrategyName.ROLLING: "rolling",
    StrategyName.BLUE_GREEN: "blue-green",
    StrategyName.RECREATE: "recreate",
}


def strategy_words(policy: Policy | None) -> str:
    return _STRATEGY_WORDS.get(policy.strategy, str(policy.strategy)) if policy else "unknown strategy"


@dataclass(frozen=True, slots=True)
class Transition:
    """One deployment's change, the history rows that record it, whether it swaps the revisions, and the
    rollout row it starts or ends (the timeline: docs/storage.md, "rollouts")."""

    change: DeploymentChange = DeploymentChange()
    history: tuple[NewHistory, ...] = ()
    swap: bool = False
    rollout_updates: tuple[RolloutUpdate, ...] = ()
    new_rollouts: tuple[NewRollout, ...] = ()

    @property
    def is_empty(self) -> bool:
        return (self.change.is_empty and not self.history and not self.swap and not self.rollout_updates
                and not self.new_rollouts)

    def then(self, later: Transition) -> Transition:
        return Transition(self.change.then(later.change), self.history + later.history, self.swap or later.swap,
                          self.rollout_updates + later.rollout_updates, self.new_rollouts + later.new_rollouts)


NOTHING = Transition()


def _row(
    dep: DeploymentRecord,
    change: DeploymentChange,
    now: datetime,
    *,
    result: str,
    message: str,
    sub_step: SubStep | None = None,
    strategy: str | None = None,
    from_revision: int | None = None,
    to_revision: int | None = None,
    error: str | None = None,
) -> NewHistory:
    return NewHistory(
        deployment_id=dep.id,
        lifecycle_from=dep.lifecycle,
        lifecycle_to=dep.lifecycle if change.lifecycle is UNSET else change.lifecycle,
        sub_step=sub_step,
        result=result,
        message=message,
        strategy=strategy,
        from_revision=from_revision,
        to_revision=to_revision,
        error=error,
        at=now,
    )


def _by_operator(
    dep: DeploymentRecord, change: DeploymentChange, now: datetime, message: str, *, to_revision: int | None = None
) -> Transition:
    """An operator's request: the change and one `operator` history row."""
    sub_step = dep.sub_step if change.sub_step is UNSET else change.sub_step
    row = _row(
        dep, change, now, result="operator", message=message, sub_step=sub_step,
        strategy=str(dep.policy.strategy) if dep.policy else None, from_revision=dep.current_revision,
        to_revision=to_revision if to_revision is not None else dep.deploying_revision,
    )
    return Transition(change, (row,))


# ------------------------------------------------------------------------------ operator requests


def _refuse_gone(dep: DeploymentRecord) -> None:
    if dep.lifecycle in (Lifecycle.DESTROYING, Lifecycle.DESTROYED):
        raise NotApplicable(f"deployment {dep.name!r} is being destroyed")


def _refuse_not_deploying(dep: DeploymentRecord, verb: str) -> None:
    if dep.lifecycle is not Lifecycle.DEPLOYING:
        raise NotApplicable(f"deployment {dep.name!r}: no rollout in progress to {verb}")
    if dep.mode is Mode.ROLLING_BACK:
        raise NotApplicable(f"deployment {dep.name!r}: the rollout is already rolling back")


def start_rollout(number: int, now: datetime) -> DeploymentChange:
    """The columns of a new rollout to revision `number` (DEPLOYING, forward, every flag reset)."""
    return DeploymentChange(
        lifecycle=Lifecycle.DEPLOYING,
        deploying_revision=number,
        sub_step=SubStep.PROVISIONING,
        mode=Mode.FORWARD,
        paused=False,
        abort_requested=False,
        promote_requested=False,
        rollout_started_at=now,
        last_progress_at=now,
        rollback_reason=None,
        error_count=0,
        last_error=None,
        canary_step=0,
        step_started_at=now,
        traffic_weights=None,
        promote_full_requested=False,
    )


def activate(dep: DeploymentRecord, number: int, *, supersede: bool, now: datetime) -> Transition:
    """Start a rollout to revision `number`: a no-op for the revision serving (or already deploying);
    refused while the deployment is starting, or while another rollout runs unless `supersede`
    (superseding with the serving revision means "abort")."""
    _refuse_gone(dep)
    if dep.lifecycle in (Lifecycle.PENDING, Lifecycle.SCALING):
        raise NotApplicable(
            f"deployment {dep.name!r} is still {dep.lifecycle.value}: activate a revision once it is ready"
        )
    words = strategy_words(dep.policy)
    if dep.lifecycle is Lifecycle.DEPLOYING:
        if number == dep.deploying_revision and dep.mode is Mode.FORWARD:
            return NOTHING
        if not supersede:
            raise RolloutInProgress(
                f"deployment {dep.name!r}: rollout of revision {dep.deploying_revision} in progress "
                "(pass supersede to replace it)"
            )
        if number == dep.current_revision:
            if dep.mode is Mode.ROLLING_BACK:
                return NOTHING
            message = f"revision {number} activated while rolling out {dep.deploying_revision}: aborting"
            return _by_operator(dep, DeploymentChange(abort_requested=True), now, message, to_revision=number)
        message = f"{words}: rollout of revision {number} started, superseding revision {dep.deploying_revision}"
        started = _by_operator(dep, start_rollout(number, now), now, message, to_revision=number)
        return _started(dep, number, now, started)
    if number == dep.current_revision:
        return NOTHING
    message = f"{words}: rollout of revision {number} started (revision {dep.current_revision} serving)"
    started = _by_operator(dep, start_rollout(number, now), now, message, to_revision=number)
    return _started(dep, number, now, started)


def _started(dep: DeploymentRecord, number: int, now: datetime, transition: Transition) -> Transition:
    """`transition` with the rollout row it starts (the store ends a superseded one as "aborted")."""
    rollout = NewRollout(deployment_id=dep.id, from_revision=dep.current_revision, to_revision=number,
                         strategy=str(dep.policy.strategy) if dep.policy else "unknown", at=now)
    return replace(transition, new_rollouts=(rollout,))


def rollout_outcome(reason: RollbackReason | None) -> str:
    """How a rollout that rolled back ended: "aborted" when an operator aborted it, else "rolled_back"."""
    return "aborted" if reason is RollbackReason.ABORTED else "rolled_back"


def _ends(dep: DeploymentRecord, outcome: str, now: datetime) -> tuple[RolloutUpdate, ...]:
    return (RolloutUpdate(deployment_id=dep.id, at=now, outcome=outcome),)


def previous_revision(dep: DeploymentRecord, history: Sequence[HistoryRecord]) -> int | None:
    """The revision that served before the current one: the last completed rollout to the current
    revision names it (None when no earlier revision ever served)."""
    for h in reversed(history):
        if h.result == "success" and h.to_revision == dep.current_revision and h.from_revision is not None:
            if h.lifecycle_to is Lifecycle.READY and h.from_revision != dep.current_revision:
                return h.from_revision
    return None


def undo(dep: DeploymentRecord, history: Sequence[HistoryRecord], now: datetime) -> Transition:
    """Roll out the revision that served before the current one, as a new rollout."""
    if dep.lifecycle is Lifecycle.DEPLOYING:
        raise RolloutInProgress(f"deployment {dep.name!r}: a rollout is in progress; abort it instead")
    previous = previous_revision(dep, history)
    if previous is None:
        raise NotApplicable(f"deployment {dep.name!r}: no earlier revision has served, nothing to undo")
    return activate(dep, previous, supersede=False, now=now)


def promote(dep: DeploymentRecord, now: datetime, *, full: bool = False) -> Transition:
    """Blue-green: switch now (from awaiting promotion). Canary: complete the current step, or with
    `full` skip to the final step (docs/strategies.md, "Canary")."""
    _refuse_not_deploying(dep, "promote")
    if dep.policy is not None and dep.policy.strategy is StrategyName.CANARY:
        if dep.mode is not Mode.FORWARD:
            raise NotApplicable(f"deployment {dep.name!r}: the canary is rolling back; nothing to promote")
        if full:
            return _by_operator(dep, DeploymentChange(promote_full_requested=True), now,
                                "canary: full promotion requested by an operator")
        return _by_operator(dep, DeploymentChange(promote_requested=True), now,
                            f"canary: promotion of step {dep.canary_step + 1} requested by an operator")
    if dep.policy is None or dep.policy.strategy is not StrategyName.BLUE_GREEN:
        raise NotApplicable(f"deployment {dep.name!r}: promote applies to blue-green and canary rollouts only")
    if dep.sub_step is not SubStep.AWAITING_PROMOTION:
        state = dep.sub_step.value if dep.sub_step else "starting"
        raise NotApplicable(f"deployment {dep.name!r}: nothing awaits promotion (rollout is {state})")
    return _by_operator(dep, DeploymentChange(promote_requested=True), now, "blue-green: promotion requested by an operator")


def pause(dep: DeploymentRecord, now: datetime) -> Transition:
    _refuse_not_deploying(dep, "pause")
    if dep.paused:
        raise NotApplicable(f"deployment {dep.name!r}: the rollout is already paused")
    return _by_operator(dep, DeploymentChange(paused=True), now, f"{strategy_words(dep.policy)}: paused by an operator")


def resume(dep: DeploymentRecord, now: datetime) -> Transition:
    """Resume a paused rollout; the progress clock restarts so a long pause does not trip the deadline."""
    if dep.lifecycle is not Lifecycle.DEPLOYING or not dep.paused:
        raise NotApplicable(f"deployment {dep.name!r}: no paused rollout to resume")
    change = DeploymentChange(paused=False, last_progress_at=now)
    return _by_operator(dep, change, now, f"{strategy_words(dep.policy)}: resumed by an operator")


def abort(dep: DeploymentRecord, now: datetime) -> Transition:
    _refuse_not_deploying(dep, "abort")
    if dep.abort_requested:
        return NOTHING
    message = f"{strategy_words(dep.policy)}: abort requested by an operator"
    return _by_operator(dep, DeploymentChange(abort_requested=True), now, message)


VERBS = ("promote", "pause", "resume", "abort", "undo")
"""The operator verbs, in the order a client offers them."""


def applicable_verbs(dep: DeploymentRecord, history: Sequence[HistoryRecord], now: datetime) -> tuple[str, ...]:
    """The operator verbs that apply to `dep` now: those the functions above neither refuse nor answer
    with an empty transition (a no-op such as a second abort). The requests themselves are decided by the
    same functions, so a verb listed here is taken and one left out is refused with its 409, as long as
    nothing changes in between. `history` is only read by undo, which refuses while deploying first."""
    attempts = {
        "promote": lambda: promote(dep, now),
        "pause": lambda: pause(dep, now),
        "resume": lambda: resume(dep, now),
        "abort": lambda: abort(dep, now),
        "undo": lambda: undo(dep, history, now),
    }
    found = []
    for verb in VERBS:
        try:
            if not attempts[verb]().is_empty:
                found.append(verb)
        except (NotApplicable, RolloutInProgress):
            pass
    return tuple(found)


def destroy(dep: DeploymentRecord, now: datetime) -> Transition:
    if dep.lifecycle is Lifecycle.DESTROYING:
        return NOTHING
    change = DeploymentChange(lifecycle=Lifecycle.DESTROYING, deploying_revision=None, mode=Mode.FORWARD)
    transition = _by_operator(dep, change, now, "destroy requested: routes will drain and stop")
    if dep.lifecycle is Lifecycle.DEPLOYING:
        transition = replace(transition, rollout_updates=_ends(dep, "aborted", now))
    return transition


def patch(dep: DeploymentRecord, *, replicas: int | None, policy: Policy | None, now: datetime) -> Transition:
    """Change the replica count and/or the policy (the caller has merged and validated it)."""
    _refuse_gone(dep)
    change = DeploymentChange()
    words = []
    if replicas is not None and replicas != dep.replicas:
        change = replace(change, replicas=replicas)
        words.append(f"replicas {dep.replicas} -> {replicas}")
    if policy is not None and policy != dep.policy:
        change = replace(change, policy=policy)
        words.append(f"policy: {strategy_words(policy)}")
    if not words:
        return NOTHING
    return _by_operator(dep, change, now, "changed " + ", ".join(words))


# ------------------------------------------------------------------------------------ cycles


def ended_rollout() -> DeploymentChange:
    """The columns that end a rollout (completed, rolled back or abandoned): back to READY."""
    return DeploymentChange(
        lifecycle=Lifecycle.READY,
        deploying_revision=None,
        mode=Mode.FORWARD,
        paused=False,
        abort_requested=False,
        promote_requested=False,
        error_count=0,
        canary_step=0,
        step_started_at=None,
        traffic_weights=None,
        promote_full_requested=False,
    )


def begin_scaling(dep: DeploymentRecord, now: datetime) -> Transition:
    change = DeploymentChange(lifecycle=Lifecycle.SCALING)
    row = _row(dep, change, now, result="progress",
               message=f"scaling: bringing up {dep.replicas} routes of revision {dep.current_revision}",
               to_revision=dep.current_revision)
    return Transition(change, (row,))


def finish_scaling(dep: DeploymentRecord, now: datetime) -> Transition:
    change = DeploymentChange(lifecycle=Lifecycle.READY)
    row = _row(dep, change, now, result="success",
               message=f"scaling: {dep.replicas} routes of revision {dep.current_revision} ready",
               to_revision=dep.current_revision)
    return Transition(change, (row,))


def note_route_failure(dep: DeploymentRecord, detail: str | None) -> Transition:
    """The deployment's `last_error` follows its newest failed route (None: clear it)."""
    if detail == dep.last_error:
        return NOTHING
    return Transition(DeploymentChange(last_error=detail))


def record(
    dep: DeploymentRecord, now: datetime, *, result: str, message: str, to_revision: int | None = None,
    error: str | None = None,
) -> Transition:
    """A history row that changes nothing (replica reconciliation and destroying progress)."""
    return Transition(history=(_row(dep, DeploymentChange(), now, result=result, message=message,
                                    to_revision=to_revision, error=error),))


def destroyed(dep: DeploymentRecord, now: datetime) -> Transition:
    change = DeploymentChange(lifecycle=Lifecycle.DESTROYED)
    row = _row(dep, change, now, result="success", message="destroyed: every route stopped")
    return Transition(change, (row,))


def rollout_step(
    dep: DeploymentRecord, decision: Decision, views: Sequence[RouteView], policy: Policy, now: datetime
) -> Transition:
    """What one DEPLOYING cycle's decision does to the deployment: the end of the rollout (completed or
    rolled back) or its sub-step, mode, rollback reason, deadline pause and progress clock."""
    recovered = DeploymentChange(error_count=0, last_error=None) if dep.error_count else DeploymentChange()
    rolled_back = decision.sub_step is SubStep.ROLLED_BACK or (
        dep.mode is Mode.ROLLING_BACK and decision.sub_step is SubStep.COMPLETED
    )
    if rolled_back:
        return Transition(recovered).then(roll_back(dep, decision, policy, now))
    if decision.sub_step is SubStep.COMPLETED:
        return Transition(recovered).then(complete_rollout(dep, decision, policy, now))
    # The fields are gathered first and the change built once (a cycle runs this per deployment).
    fields: dict[str, Any] = {"error_count": 0, "last_error": None} if dep.error_count else {}
    if decision.sub_step is not dep.sub_step:
        fields["sub_step"] = decision.sub_step
    if decision.mode is not dep.mode:
        fields["mode"] = decision.mode
    if decision.rollback_reason is not None:
        fields["rollback_reason"] = decision.rollback_reason
    if decision.set_paused and not dep.paused:
        fields["paused"] = True
    progress = _progress_at(dep, decision, views, now)
    if progress is not None:
        fields["last_progress_at"] = progress
    fields.update(canary_step_fields(dep, decision, now))
    change = DeploymentChange(**fields)
    moved = (change.sub_step is not UNSET or change.mode is not UNSET or change.paused is not UNSET
             or change.canary_step is not UNSET)
    if not (decision.changes_routes or moved):
        return Transition(change)
    result = "waiting" if decision.sub_step in (SubStep.AWAITING_PROMOTION, SubStep.PAUSED) else "progress"
    if decision.rollback_reason is not None:
        result = "failure"
    row = _row(dep, change, now, result=result, message=decision.reason, sub_step=decision.sub_step,
               strategy=str(policy.strategy), from_revision=dep.current_revision, to_revision=dep.deploying_revision)
    return Transition(change, (row,))


def canary_step_fields(dep: DeploymentRecord, decision: Decision, now: datetime) -> dict[str, Any]:
    """A canary decision's step and weights (docs/strategies.md, "Canary"), as the DeploymentChange
    fields they set: a new step starts now and consumes the promotion that completed the old one; the
    weights are what the proxy applies."""
    fields: dict[str, Any] = {}
    if decision.set_canary_step is not None and decision.set_canary_step != dep.canary_step:
        fields.update(canary_step=decision.set_canary_step, step_started_at=now, promote_requested=False)
        if dep.promote_full_requested:
            fields["promote_full_requested"] = False
    weights = None if decision.weights is None else {revision_number(k): int(v) for k, v in decision.weights.items()}
    if weights != (dict(dep.traffic_weights) if dep.traffic_weights is not None else None):
        fields["traffic_weights"] = weights
    return fields


def complete_rollout(dep: DeploymentRecord, decision: Decision, policy: Policy, now: datetime) -> Transition:
    """The new revision serves: the swap, in the same write as the last route changes."""
    change = ended_rollout().then(DeploymentChange(sub_step=SubStep.COMPLETED, rollback_reason=None))
    row = _row(dep, change, now, result="success",
               message=f"{decision.reason}; revision {dep.deploying_revision} is serving",
               sub_step=SubStep.COMPLETED, strategy=str(policy.strategy), from_revision=dep.current_revision,
               to_revision=dep.deploying_revision)
    return Transition(change, (row,), swap=True, rollout_updates=_ends(dep, "completed", now))


def roll_back(dep: DeploymentRecord, decision: Decision, policy: Policy, now: datetime) -> Transition:
    """The rollout ended rolled back: the serving revision stays, history says why."""
    reason = decision.rollback_reason or dep.rollback_reason
    change = ended_rollout().then(DeploymentChange(sub_step=SubStep.ROLLED_BACK))
    if decision.rollback_reason is not None:
        change = replace(change, rollback_reason=decision.rollback_reason)
    row = _row(dep, change, now, result="failure",
               message=f"{decision.reason}; rolled back ({reason or 'unknown reason'}), "
               f"revision {dep.current_revision} is serving",
               sub_step=SubStep.ROLLED_BACK, strategy=str(policy.strategy), from_revision=dep.deploying_revision,
               to_revision=dep.current_revision)
    return Transition(change, (row,), rollout_updates=_ends(dep, rollout_outcome(reason), now))


def _progress_at(dep: DeploymentRecord, decision: Decision, views: Sequence[RouteView], now: datetime) -> datetime | None:
    """New `last_progress_at`, or None to keep it: routes created/terminated now, or a target route
    that turned ready since the last progress (its `status_updated_at` is when it did)."""
    if decision.create or decision.terminate:
        return now
    target = revision_key(dep.deploying_revision if dep.mode is Mode.FORWARD else dep.current_revision)
    latest = max((v.status_updated_at for v in views if v.revision == target and v.is_ready), default=None)
    if latest is not None and (dep.last_progress_at is None or latest > dep.last_progress_at):
        return min(latest, now)
    return None


def count_evaluation_error(dep: DeploymentRecord, error: str, exc: BaseException, now: datetime) -> Transition:
    """One more evaluation failure, below the limit: counted, with a merged history row."""
    change = DeploymentChange(error_count=dep.error_count + 1, last_error=error)
    then = "rolls back" if dep.mode is Mode.FORWARD else "abandons the rollout"
    # The same words every time, so repeated failures merge into one row (its `attempts` counts).
    row = _row(dep, change, now, result="error",
               message=f"{strategy_words(dep.policy)}: evaluation failed ({then} after {MAX_EVALUATION_ERRORS} "
               f"in a row): {exc}", sub_step=dep.sub_step, strategy=_strategy(dep), error=error)
    return Transition(change, (row,))


def start_error_rollback(dep: DeploymentRecord, error: str, exc: BaseException, now: datetime) -> Transition:
    """The evaluation failed MAX_EVALUATION_ERRORS times in a row: roll back (evaluated with the
    default rolling limits from the next cycle on)."""
    change = DeploymentChange(
        mode=Mode.ROLLING_BACK, sub_step=SubStep.ROLLING_BACK, rollback_reason=RollbackReason.EVALUATION_ERROR,
        error_count=1, last_error=error, last_progress_at=now,
    )
    row = _row(dep, change, now, result="failure",
               message=f"{strategy_words(dep.policy)}: evaluation failed {dep.error_count + 1} times in a row, "
               f"rolling back: {exc}", sub_step=SubStep.ROLLING_BACK, strategy=_strategy(dep),
               from_revision=dep.current_revision, to_revision=dep.deploying_revision, error=error)
    return Transition(change, (row,))


def abandon_rollout(dep: DeploymentRecord, error: str, exc: BaseException, now: datetime) -> Transition:
    """Even the rollback cannot be evaluated: back to READY, where the replica reconciler restores the
    serving revision (the caller terminates the new revision's routes)."""
    change = ended_rollout().then(DeploymentChange(sub_step=SubStep.ROLLED_BACK, last_error=error))
    row = _row(dep, change, now, result="failure",
               message=f"{strategy_words(dep.policy)}: rollback could not be evaluated {MAX_EVALUATION_ERRORS} "
               f"times in a row; rollout abandoned, revision {dep.current_revision} restored by the replica "
               f"reconciler: {exc}", sub_step=SubStep.ROLLED_BACK, strategy=_strategy(dep),
               from_revision=dep.deploying_revision, to_revision=dep.current_revision, error=error)
    return Transition(change, (row,), rollout_updates=_ends(dep, rollout_outcome(dep.rollback_reason), now))


def _strategy(dep: DeploymentRecord) -> str | None:
    return str(dep.policy.strategy) if dep.policy else None
