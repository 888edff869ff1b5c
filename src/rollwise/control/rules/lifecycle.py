"""Per-deployment rules of the non-rollout lifecycle cycles (pure): check pending, scaling, READY
replica reconciliation and destroying. Each returns an Outcome for `cycles.run_cycle`.

Replica reconciliation (SCALING and READY) reuses the strategy engine: it is a rolling update towards the
serving revision, in rollback mode (no failure budget, no deadline), with the default limits (surge 25%,
unavailable 0). That gives scale-up, scale-down (surplus terminated, unready first, then newest) and the
replacement of crashed or failed routes from one set of tested rules. Replacements of failed routes
wait for the crash-loop back-off (control.rules.restarts); the newest failure is the deployment's
`last_error` (exit code and last output lines), cleared once the revision ran 10 minutes without one.
Must not do I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from rollwise.control.rules import transitions
from rollwise.control.rules.lost import note_lost_routes
from rollwise.control.rules.capacity import NO_ROOM, Room, compute_target_view, is_capacity_wait
from rollwise.control.rules.deploying import ROLLBACK_POLICY
from rollwise.control.rules.outcome import Outcome, terminate_update
from rollwise.control.rules.restarts import compute_restart_backoff, failure_cause, hold_creates
from rollwise.control.rules.views import HealthChecks, compute_route_views, revision_key
from rollwise.model import Decision, DeploymentView, Lifecycle, Mode, RouteStatus, SubStep
from rollwise.store.records import DeploymentRecord, RouteRecord
from rollwise.strategy import decide
from rollwise.strategy.messages import CAPACITY_WAIT, capacity_room
from rollwise.strategy.cycle import in_termination_order, is_alive, pick_surplus


def compute_pending_outcome(dep: DeploymentRecord, now: datetime) -> Outcome:
    out = Outcome(dep)
    out.apply(transitions.begin_scaling(dep, now))
    return out


def compute_replicas_decision(
    dep: DeploymentRecord,
    routes: Sequence[RouteRecord],
    health_checks: HealthChecks,
    now: datetime,
    room: Room = NO_ROOM,
) -> Decision:
    """The replica reconciler's decision: a rolling update towards the serving revision in rollback mode
    (its completion is reported as sub-step rolled_back), plus the surplus.

    The rolling rules drop surplus target routes only once none is provisioning (their completion rule);
    a reconciler must also scale down routes that are still starting (`replicas: 0` while a thousand
    routes start, or a revision whose routes never listen): alive routes beyond D go at once, not-ready
    ones first (pick_surplus: provisioning, unhealthy, not checked, then ready newest first)."""
    serving = revision_key(dep.current_revision)
    view = DeploymentView(
        desired_replicas=dep.replicas,
        current_revision=serving,
        deploying_revision=serving,
        mode=Mode.ROLLING_BACK,
        last_progress_at=now,
        capacity=compute_target_view(room, dep),
    )
    views = compute_route_views(routes, health_checks)
    decision = decide(view, views, ROLLBACK_POLICY, now)
    alive = in_termination_order(v for v in views if v.revision == serving and is_alive(v))
    going = set(decision.terminate)
    staying = [v for v in alive if v.id not in going]
    surplus = [v.id for v in pick_surplus(staying, len(staying) - dep.replicas)]
    if not surplus:
        return decision
    return replace(decision, terminate=decision.terminate + tuple(surplus))


def describe_replicas_decision(dep: DeploymentRecord, decision: Decision) -> Decision:
    """The replica reconciler's decision as `rollwise plan` / GET /plan show it: in the words of its
    history rows and in mode forward, not in those of the rolling-back rule it reuses underneath (which
    would read "rolled back to r1" for a deployment that is simply READY)."""
    created, terminated = len(decision.create), len(decision.terminate)
    words = [f"creating {created}"] if created else []
    if terminated:
        words.append(f"terminating {terminated}")
    wanted = f"desired {dep.replicas} of revision {dep.current_revision}"
    reason = f"replicas: {', '.join(words)} ({wanted})" if words else f"replicas: nothing to change ({wanted})"
    waiting = CAPACITY_WAIT.partition(":")[0]
    if waiting in decision.reason:
        reason += "; " + decision.reason[decision.reason.index(waiting):]
    sub_step = SubStep.COMPLETED if decision.sub_step is SubStep.ROLLED_BACK else decision.sub_step
    return replace(decision, mode=Mode.FORWARD, reason=reason, sub_step=sub_step)


def compute_replicas_outcome(
    dep: DeploymentRecord,
    routes: Sequence[RouteRecord],
    health_checks: HealthChecks,
    now: datetime,
    room: Room = NO_ROOM,
) -> Outcome:
    """SCALING and READY: keep `replicas` ready routes of the serving revision, as capacity allows."""
    out = Outcome(dep)
    backoff = compute_restart_backoff(routes, dep.current_revision, now)
    decision = hold_creates(compute_replicas_decision(dep, routes, health_checks, now, room), backoff, now)
    out.apply_route_decision(decision, now, holds=lambda rev: room.need_of(dep.id, rev))
    for new in out.new_routes:
        room.take(new.holds or {})
    out.requeue_after = decision.requeue_after
    if (lost := note_lost_routes(dep, routes, now)) is not None:
        out.apply(lost[0])
        out.route_updates.extend(lost[1])
    done = decision.sub_step is SubStep.ROLLED_BACK
    out.settled = not is_capacity_wait(decision)
    created, terminated = len(decision.create), len(decision.terminate)
    latest = backoff.latest
    if latest is not None and latest.detail:
        out.apply(transitions.note_route_failure(dep, latest.detail))
    elif backoff.failures == 0 and done:
        out.apply(transitions.note_route_failure(dep, None))
    if dep.lifecycle is Lifecycle.SCALING and done:
        out.apply(transitions.finish_scaling(dep, now))
    elif created and latest is not None:
        # The same words for every replacement of one cause: repeated ones merge into one row.
        out.apply(transitions.record(
            dep, now, result="failure",
            message=f"replicas: replacing failed routes of revision {dep.current_revision} "
            f"(back-off up to 300 s): {failure_cause(latest.detail)}",
            to_revision=dep.current_revision, error=latest.detail,
        ))
    elif not created and (waiting := _capacity_wait(dep, decision, room)):
        out.apply(transitions.record(
            dep, now, result="progress",
            message=f"replicas: {waiting} (desired {dep.replicas} of revision {dep.current_revision})",
            to_revision=dep.current_revision,
        ))
    elif created or terminated:
        words = []
        if created:
            words.append(f"creating {created}")
        if terminated:
            words.append(f"terminating {terminated}")
        out.apply(transitions.record(
            dep, now, result="progress",
            message=f"replicas: {', '.join(words)} (desired {dep.replicas} of revision {dep.current_revision})",
            to_revision=dep.current_revision,
        ))
    return out


def compute_destroying_outcome(dep: DeploymentRecord, routes: Sequence[RouteRecord], now: datetime) -> Outcome:
    out = Outcome(dep)
    for r in routes:
        if r.status.is_alive:
            out.route_updates.append(terminate_update(dep.id, r.id, now))
    if out.route_updates:
        out.apply(transitions.record(dep, now, result="progress",
                                     message=f"destroying: terminating {len(out.route_updates)} routes"))
    elif not any(r.status is RouteStatus.TERMINATING for r in routes):
        out.apply(transitions.destroyed(dep, now))
    return out


def _capacity_wait(dep: DeploymentRecord, decision: Decision, room: Room) -> str | None:
    """"waiting for capacity: needs gpu 1 per route, free gpu 0" when the reconciler wants routes the
    node cannot hold now (the same words every cycle: repeated rows merge), else None."""
    capacity = compute_target_view(room, dep)
    if capacity.placeable != 0 or not is_capacity_wait(decision):
        return None
    return CAPACITY_WAIT.format(room=capacity_room(capacity, per_route=True), releasing="")
