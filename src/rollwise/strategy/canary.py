"""Canary (`strategy: canary`): one cycle's rules, docs/strategies.md "Canary".

Called by the engine (through the registry) after the checks before the strategy (the engine also
calls `analysis_check`, between the failure threshold and abort, and `current_weights` for the
decisions it makes itself, paused ones). Canary = target routes (the deploying revision), stable = the
current revision's routes. Must not read the clock (`view.now` is the cycle's time), do I/O, or know
about the checks.

The policy's `steps` run in order; `deployment.canary_step` is the index of the current one and
len(steps) is the implicit final step. One cycle:

1. Walk the steps. `promote --full` jumps to the final step; `promote` completes the current step; then
   every step that is complete is left behind, in order:
       set_weight w       complete when c(w) canary routes are ready, c(w) = max(1, ceil(D * w / 100))
                          (at most D; 0 when D is 0)
       pause {seconds: s} complete s seconds after it began (`step_started_at`; a step reached in this
                          cycle began now, so only `pause: {seconds: 0}` is passed at once)
       pause {}           complete only on promote
   The index reached is `set_canary_step` when it changed.
2. Before the final step, with w the weight of the last set_weight step reached (0 before the first):
   canary routes wanted c(w); create the missing ones (at most P, the capacity), terminate canary
   routes beyond c(w) (not ready first, then newest) and stable routes beyond D; the stable revision
   keeps D routes, so an abort is instant. Routes of any third revision go at once.
   Sub-step: a pause is `awaiting_promotion` (never times out; a timed one asks to be looked at again
   when it ends, `requeue_after`); a set_weight step is `provisioning` while a canary route is
   provisioning or one is created, else `progressing`.
3. The final step: canary routes up to D, at most `surge` of them not ready at any time (max_surge
   resolved against D, at least 1), each batch within P. When D canary routes are ready, and the
   analysis' current interval passed (when the policy has an analysis): 100 % to the canary, every
   stable (and other) route terminated, sub-step `completed`.
4. Traffic (`weights`, revision -> percent): the stable revision gets 100 - w and the canary w, where w
   is the largest weight of a set_weight step reached whose c(w) routes are ready (0 while no canary
   route is ready). So a new weight is sent only once the routes it was sized for are ready: the
   weight of a set_weight step changes in the cycle that completes it (as Argo Rollouts keeps the
   previous step's weight until the canary ReplicaSet is at its count). Completed: {canary: 100}.
   With no stable revision (current revision null, or the same as the deploying one) the steps are
   skipped: the final step at once, {canary: 100} throughout.

Rollback (T = the current revision): traffic 100 % to it in that same cycle, every other alive route
terminated, sub-step `rolled_back` at once (the stable revision never lost capacity).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from rollwise.model import (
    AnalysisSpec,
    CanaryStep,
    Decision,
    Mode,
    Policy,
    RollbackReason,
    RouteCreate,
    RouteStatus,
    SubStep,
    Traffic,
)
from rollwise.strategy import messages as msg
from rollwise.strategy.cycle import CycleView, activations, ids, resolve_int_or_percent

LABEL = "canary"


@dataclass(frozen=True, slots=True)
class CanarySettings:
    steps: tuple[CanaryStep, ...]
    surge: int
    """The final step: canary routes that may be not ready at once (max_surge against D, at least 1)."""
    analysis: AnalysisSpec | None


def compute_settings(policy: Policy, desired: int) -> CanarySettings:
    surge = resolve_int_or_percent(policy.max_surge, desired, round_up=True)
    return CanarySettings(steps=tuple(policy.steps), surge=max(1, surge), analysis=policy.analysis)


def routes_for(weight: int, desired: int) -> int:
    """c(w): the canary routes a weight needs, max(1, ceil(D * w / 100)), at most D; 0 for w 0 or D 0.
    D=4: 10 -> 1, 25 -> 1, 50 -> 2, 99 -> 4; D=10: 10 -> 1, 15 -> 2."""
    if weight <= 0 or desired <= 0:
        return 0
    return min(desired, max(1, -(-desired * weight // 100)))


# -- the steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Walk:
    """Where this cycle stands in the steps after `walk`."""

    step: int
    """The current step's index; len(steps) is the final step."""
    started_at: datetime
    """When the current step began (now, when this cycle reached it)."""
    words: str
    """What happened to the steps in this cycle, for the reason ("" when nothing)."""


def has_stable(view: CycleView) -> bool:
    """Whether there is a stable revision to split traffic with (current revision set, not the target)."""
    current = view.deployment.current_revision
    return current is not None and current != view.target


def describe_step(steps: tuple[CanaryStep, ...], index: int) -> str:
    total = len(steps)
    if index >= total:
        return msg.CANARY_FINAL
    step = steps[index]
    if step.set_weight is not None:
        return msg.CANARY_STEP_WEIGHT.format(number=index + 1, total=total, weight=step.set_weight)
    if step.pause is None or step.pause.seconds is None:
        return msg.CANARY_STEP_PAUSE_PROMOTE.format(number=index + 1, total=total)
    return msg.CANARY_STEP_PAUSE.format(number=index + 1, total=total, seconds=msg.format_seconds(step.pause.seconds))


def walk(view: CycleView, settings: CanarySettings) -> Walk:
    """Step 1 of the module docstring: the current step after promote and the completed steps."""
    deployment = view.deployment
    steps = settings.steps
    total = len(steps)
    start = min(max(0, deployment.canary_step), total)
    started = deployment.step_started_at or deployment.rollout_started_at or view.now
    if start == total:
        return Walk(total, started, "")
    if not has_stable(view):
        return Walk(total, view.now, msg.CANARY_NO_STABLE)
    if deployment.promote_full_requested:
        return Walk(total, view.now, msg.CANARY_PROMOTED_FULL)
    index = start
    words = ""
    if deployment.promote_requested:
        words += msg.CANARY_PROMOTED.format(step=describe_step(steps, index))
        index, started = index + 1, view.now
    while index < total and _is_complete(view, steps[index], started):
        words += msg.CANARY_DONE.format(step=describe_step(steps, index))
        index, started = index + 1, view.now
    return Walk(index, started, words)


def _is_complete(view: CycleView, step: CanaryStep, started: datetime) -> bool:
    if step.set_weight is not None:
        return view.t_ready >= routes_for(step.set_weight, view.desired)
    seconds = None if step.pause is None else step.pause.seconds
    return seconds is not None and (view.now - started).total_seconds() >= seconds


def weight_reached(steps: tuple[CanaryStep, ...], index: int) -> int:
    """The weight of the last set_weight step at or before `index` (0 before the first)."""
    return max((s.set_weight for s in steps[: index + 1] if s.set_weight is not None), default=0)


def traffic_weight(steps: tuple[CanaryStep, ...], index: int, ready: int, desired: int) -> int:
    """The canary's share of requests: the largest weight of a set_weight step at or before `index`
    whose c(w) routes are ready; 0 while no canary route is ready."""
    if ready <= 0:
        return 0
    return max(
        (s.set_weight for s in steps[: index + 1] if s.set_weight is not None and routes_for(s.set_weight, desired) <= ready),
        default=0,
    )


def split(view: CycleView, canary_weight: int) -> dict[str, int]:
    """The weights: {stable: 100 - w, canary: w}, or {canary: 100} without a stable revision."""
    current = view.deployment.current_revision
    if current is None or not has_stable(view):
        return {view.target: 100}
    return {current: 100 - canary_weight, view.target: canary_weight}


def current_weights(view: CycleView, settings: CanarySettings) -> Mapping[str, int]:
    """The split as it stands, for a decision that changes nothing (paused): no step is walked."""
    if view.mode is Mode.ROLLING_BACK:
        return {view.target: 100}
    index = min(max(0, view.deployment.canary_step), len(settings.steps))
    ready = sum(1 for r in view.target_ready)
    return split(view, traffic_weight(settings.steps, index, ready, view.desired))


def analysis_check(view: CycleView, settings: CanarySettings) -> tuple[RollbackReason, str] | None:
    """(analysis, the words) when the failed measurements reached the policy's failure_limit."""
    spec = settings.analysis
    counts = view.deployment.analysis
    if spec is None or counts.failed < spec.failure_limit:
        return None
    failure = counts.last_failure or msg.ANALYSIS_COUNTED.format(
        failed=msg.count(counts.failed, "failed measurement"), limit=spec.failure_limit
    )
    return RollbackReason.ANALYSIS, msg.ROLLBACK_WHY[RollbackReason.ANALYSIS].format(failure=failure)


# -- one cycle ----------------------------------------------------------------------------------------


def decide(view: CycleView, settings: CanarySettings) -> Decision:
    """One canary cycle for `view` (forward or rollback mode, per `view.mode`)."""
    if view.mode is Mode.ROLLING_BACK:
        return _roll_back(view)
    steps = settings.steps
    total = len(steps)
    at = walk(view, settings)
    set_step = at.step if at.step != view.deployment.canary_step else None
    final = at.step >= total
    d = view.desired
    passed = settings.analysis is None or view.deployment.analysis.interval_passed
    if final and view.t_ready >= d and passed:
        return _complete(view, at, set_step)

    current = view.deployment.current_revision
    stable = has_stable(view)
    stable_alive = tuple(r for r in view.other_alive if stable and r.revision == current)
    leftovers = tuple(r for r in view.other_alive if not (stable and r.revision == current))
    wanted = d if final else routes_for(weight_reached(steps, at.step), d)
    canary_surplus = view.surplus(view.target_alive, view.t_alive - wanted)
    going = set(ids(canary_surplus))
    staying = tuple(r for r in view.target_alive if r.id not in going)
    provisioning = sum(1 for r in staying if r.status is RouteStatus.PROVISIONING)
    ready = sum(1 for r in staying if view.is_ready(r))
    if final:
        missing = max(0, min(d - len(staying), settings.surge - (len(staying) - ready)))
    else:
        missing = max(0, wanted - len(staying))
    create = view.placeable(missing)
    terminate = leftovers + view.surplus(stable_alive, len(stable_alive) - d) + canary_surplus
    traffic = activations(staying)
    weights = split(view, traffic_weight(steps, at.step, ready, d))

    pause = None if final else steps[at.step].pause
    requeue: float | None = None
    if pause is not None:
        sub_step = SubStep.AWAITING_PROMOTION
        if pause.seconds is None:
            wait = msg.CANARY_PAUSE_PROMOTE
        else:
            requeue = max(0.0, pause.seconds - (view.now - at.started_at).total_seconds())
            wait = msg.CANARY_PAUSE_LEFT.format(remaining=msg.format_seconds(requeue))
    else:
        sub_step = SubStep.PROVISIONING if provisioning > 0 or create > 0 else SubStep.PROGRESSING
        wait = msg.CANARY_ANALYSIS_WAIT if final and view.t_ready >= d else ""
    if final:
        wait = msg.CANARY_SURGE.format(surge=settings.surge) + wait
    if create < missing:
        wait += msg.capacity_wait(
            view.capacity, known=view.capacity_known, revision=view.target, releasing=view.releasing, created=create
        )
    action = ""
    if create or terminate or traffic:
        action = msg.CANARY_ACTION.format(
            create=create, terminate=len(terminate), activating=msg.optional(msg.ACTIVATING, len(traffic))
        )
    body = msg.CANARY_BODY.format(
        advanced=at.words,
        step=describe_step(steps, at.step),
        action=action,
        routes=msg.CANARY_ROUTES.format(
            revision=view.target,
            ready=ready,
            wanted=wanted,
            provisioning=provisioning,
            unready=len(staying) - ready - provisioning,
        ),
        wait=wait,
        weights=msg.format_weights(weights),
    )
    return Decision(
        sub_step=sub_step,
        mode=Mode.FORWARD,
        reason=msg.LINE.format(label=LABEL, body=body),
        create=tuple(
            RouteCreate(revision=view.target, traffic=Traffic.ACTIVE, traffic_ratio=1.0) for _ in range(create)
        ),
        terminate=ids(terminate),
        traffic=traffic,
        requeue_after=requeue,
        set_canary_step=set_step,
        weights=weights,
    )


def _complete(view: CycleView, at: Walk, set_step: int | None) -> Decision:
    surplus = view.surplus(view.target_alive, view.t_alive - view.desired)
    others = view.other_alive
    traffic = activations(view.target_alive, dropping=surplus)
    body = msg.CANARY_COMPLETED.format(
        advanced=at.words,
        ready=min(view.t_ready, view.desired),
        desired=view.desired,
        revision=view.target,
        others=msg.count(len(others), "other route"),
        surplus=msg.optional(msg.SURPLUS, len(surplus)),
        activating=msg.optional(msg.ACTIVATING, len(traffic)),
    )
    return Decision(
        sub_step=SubStep.COMPLETED,
        mode=Mode.FORWARD,
        reason=msg.LINE.format(label=LABEL, body=body),
        terminate=ids(others + surplus),
        traffic=traffic,
        set_canary_step=set_step,
        weights={view.target: 100},
    )


def _roll_back(view: CycleView) -> Decision:
    canary = view.other_alive
    body = msg.CANARY_ROLLED_BACK.format(revision=view.target, canary=msg.count(len(canary), "other route"))
    return Decision(
        sub_step=SubStep.ROLLED_BACK,
        mode=Mode.ROLLING_BACK,
        reason=msg.LINE.format(label=LABEL, body=body),
        terminate=ids(canary),
        weights={view.target: 100},
    )
