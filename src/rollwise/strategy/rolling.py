"""Rolling update (`strategy: rolling`): one cycle's rules, docs/strategies.md "Rolling update".

Called by the engine (through the registry) after the checks before the strategy, with a `CycleView`
for the cycle's mode: in forward mode T is the deploying revision; while rolling back T is the current
revision and the very same rules roll the deployment forward to it (sub-step `rolling_back`, then
`rolled_back`). Must not read the clock, do I/O, or know about the checks (they are the engine's).

The equations, with surge / unavailable resolved against D (`cycle.resolve_rolling_limits`):

    completed  when o_alive == 0 and t_prov == 0 and t_ready >= D
               -> terminate every unready target route, then ready ones beyond D, newest first
    otherwise  create    = max(0, min(D + surge - (o_alive + t_alive), D - t_alive))
               terminate = every other alive route that is not ready (it serves nothing)
                         + the first max(0, min(o_ready + t_ready - (D - unavailable), o_ready))
                           other ready routes in termination order
               sub-step  = provisioning if t_prov > 0 or create > 0, else progressing

Worked example, D=3, surge 1, unavailable 1 (3 old ready): create min(4-3, 3) = 1, terminate
min(3+0-2, 3) = 1. Both come from the same snapshot, so one cycle may create and terminate.
Target routes that stay but would get no traffic (inactive or ratio 0) are made active, ratio 1.0.

Capacity (docs/strategies.md, "Capacity"), with create_r / terminate_r the counts above and P the
routes of T that can be placed now (`view.capacity.placeable`, None = unlimited):

    create     = min(create_r, P)
    capacity-forced replacement, only with `capacity_fallback: replace`, when create_r > 0, P == 0,
               every alive target route is ready (none provisioning or unready), terminate_r == 0, no
               route of the deployment is still releasing its resources (terminating, or failed before
               its process exited), another route is alive, and at least D - max(1, unavailable) ready
               routes remain after it: terminate the first other route in termination order, create
               nothing; a later cycle has P >= 1 once its process exited.
    otherwise  nothing extra; when create < create_r the reason says what capacity is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollwise.model import CapacityFallback, Decision, Mode, Policy, RouteCreate, RouteView, SubStep, Traffic
from rollwise.strategy import messages as msg
from rollwise.strategy.cycle import (
    CycleView,
    RollingLimits,
    activations,
    ids,
    resolve_rolling_limits,
)

LABEL = "rolling"


@dataclass(frozen=True, slots=True)
class RollingSettings:
    limits: RollingLimits
    """`max_surge` / `max_unavailable` resolved against the latest D."""
    capacity_fallback: CapacityFallback


def compute_settings(policy: Policy, desired: int) -> RollingSettings:
    """The policy's surge / unavailable resolved against the latest D, and its capacity fallback."""
    return RollingSettings(
        limits=resolve_rolling_limits(policy.max_surge, policy.max_unavailable, desired),
        capacity_fallback=policy.capacity_fallback,
    )


def is_complete(view: CycleView) -> bool:
    return view.o_alive == 0 and view.t_prov == 0 and view.t_ready >= view.desired


def decide(view: CycleView, settings: RollingSettings) -> Decision:
    """One rolling-update cycle for `view` (forward or rollback mode, per `view.mode`)."""
    if is_complete(view):
        return _complete(view)
    limits = settings.limits
    d = view.desired
    wanted = max(0, min(d + limits.surge - (view.o_alive + view.t_alive), d - view.t_alive))
    drop_ready = max(0, min(view.o_ready + view.t_ready - (d - limits.unavailable), view.o_ready))
    terminate = view.other_not_ready + view.other_ready[:drop_ready]
    create = view.placeable(wanted)
    traffic = activations(view.target_alive)
    activating = msg.optional(msg.ACTIVATING, len(traffic))
    forced = _forced_replacement(
        view, settings.capacity_fallback, wanted=wanted, terminating=len(terminate), floor=serving_floor(settings, d)
    )
    if forced is not None:
        body = msg.CAPACITY_REPLACING.format(
            revision=forced.revision, room=msg.capacity_room(view.capacity, per_route=False)
        )
        return Decision(
            sub_step=SubStep.ROLLING_BACK if view.mode is Mode.ROLLING_BACK else SubStep.PROGRESSING,
            mode=view.mode,
            reason=msg.LINE.format(label=LABEL, body=body + activating),
            terminate=(forced.id,),
            traffic=traffic,
        )
    if view.mode is Mode.ROLLING_BACK:
        sub_step = SubStep.ROLLING_BACK
    elif view.t_prov > 0 or create > 0:
        sub_step = SubStep.PROVISIONING
    else:
        sub_step = SubStep.PROGRESSING
    fields = {
        "create": create,
        "terminate": len(terminate),
        "activating": activating,
        "surge": limits.surge,
        "unavailable": limits.unavailable,
    }
    if create or terminate:
        body = msg.ROLLING_STEP.format(**fields)
    else:
        body = msg.ROLLING_WAIT.format(
            **fields,
            revision=view.target,
            ready=view.t_ready,
            desired=d,
            provisioning=view.t_prov,
            unready=view.t_unready,
        )
    if create < wanted:
        body += msg.capacity_wait(
            view.capacity, known=view.capacity_known, revision=view.target, releasing=view.releasing,
                created=create,
        )
        if settings.capacity_fallback is CapacityFallback.REPLACE and create == 0 and view.o_alive == 0:
            body += msg.CAPACITY_NOTHING_TO_REPLACE
        elif _keeps_floor_only(view, settings, wanted=wanted, terminating=len(terminate)):
            body += msg.CAPACITY_KEEPING.format(
                ready=view.o_ready + view.t_ready, floor=serving_floor(settings, d)
            )
    return Decision(
        sub_step=sub_step,
        mode=view.mode,
        reason=msg.LINE.format(label=LABEL, body=body),
        create=tuple(
            RouteCreate(revision=view.target, traffic=Traffic.ACTIVE, traffic_ratio=1.0) for _ in range(create)
        ),
        terminate=ids(terminate),
        traffic=traffic,
    )


def serving_floor(settings: RollingSettings, desired: int) -> int:
    """The fewest ready routes a capacity-forced replacement may leave: D - max(1, unavailable)."""
    return max(0, desired - max(1, settings.limits.unavailable))


def _keeps_floor_only(view: CycleView, settings: RollingSettings, *, wanted: int, terminating: int) -> bool:
    """Whether the forced replacement was held back by the serving floor alone (the reason says so)."""
    unlimited = _forced_replacement(view, settings.capacity_fallback, wanted=wanted, terminating=terminating, floor=0)
    return unlimited is not None and view.o_ready + view.t_ready - 1 < serving_floor(settings, view.desired)


def _forced_replacement(
    view: CycleView, fallback: CapacityFallback, *, wanted: int, terminating: int, floor: int
) -> RouteView | None:
    """The route the capacity-forced replacement terminates, or None when it does not apply (see the
    module docstring). Every alive target route must be ready, not only none provisioning (Decision):
    a running target route that is not ready yet either becomes ready or fails and frees its resources,
    so waiting for it costs no deadlock; and when the node holds D routes (one slot each), P == 0 with
    nothing releasing then means at least D ready routes, so the forced replacement never leaves fewer
    than D - 1 serving.
    In a view for the other mode of a limited capacity (`capacity_known` false) P is not known: no.
    The serving floor (`floor` = D - max(1, unavailable) ready routes must remain) matters when the node
    is shared: the room a deployment frees may be placed by a deployment visited before it (id order),
    and without the floor it would then give up its next route, and the next, down to none serving."""
    if fallback is not CapacityFallback.REPLACE or not view.capacity_known:
        return None
    if wanted == 0 or view.capacity.placeable != 0 or terminating > 0 or view.releasing > 0:
        return None
    if view.t_prov > 0 or view.t_unready > 0 or not view.other_alive:
        return None
    if view.o_ready + view.t_ready - 1 < floor:
        return None
    return view.other_alive[0]


def _complete(view: CycleView) -> Decision:
    surplus = view.surplus(view.target_alive, view.t_alive - view.desired)
    traffic = activations(view.target_alive, dropping=surplus)
    template = msg.COMPLETED if view.mode is Mode.FORWARD else msg.ROLLED_BACK
    body = template.format(
        ready=min(view.t_ready, view.desired),
        desired=view.desired,
        revision=view.target,
        surplus=msg.optional(msg.SURPLUS, len(surplus)),
        activating=msg.optional(msg.ACTIVATING, len(traffic)),
    )
    return Decision(
        sub_step=SubStep.COMPLETED if view.mode is Mode.FORWARD else SubStep.ROLLED_BACK,
        mode=view.mode,
        reason=msg.LINE.format(label=LABEL, body=body),
        terminate=ids(surplus),
        traffic=traffic,
    )
