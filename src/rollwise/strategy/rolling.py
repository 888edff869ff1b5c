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
"""

from __future__ import annotations

from rollwise.model import Decision, Mode, Policy, RouteCreate, SubStep, Traffic
from rollwise.strategy import messages as msg
from rollwise.strategy.cycle import (
    CycleView,
    RollingLimits,
    activations,
    ids,
    pick_surplus,
    resolve_rolling_limits,
)

LABEL = "rolling"


def compute_settings(policy: Policy, desired: int) -> RollingLimits:
    """The policy's surge / unavailable resolved against the latest D."""
    return resolve_rolling_limits(policy.max_surge, policy.max_unavailable, desired)


def is_complete(view: CycleView) -> bool:
    return view.o_alive == 0 and view.t_prov == 0 and view.t_ready >= view.desired


def decide(view: CycleView, limits: RollingLimits) -> Decision:
    """One rolling-update cycle for `view` (forward or rollback mode, per `view.mode`)."""
    if is_complete(view):
        return _complete(view)
    d = view.desired
    create = max(0, min(d + limits.surge - (view.o_alive + view.t_alive), d - view.t_alive))
    drop_ready = max(0, min(view.o_ready + view.t_ready - (d - limits.unavailable), view.o_ready))
    terminate = view.other_not_ready + view.other_ready[:drop_ready]
    traffic = activations(view.target_alive)
    if view.mode is Mode.ROLLING_BACK:
        sub_step = SubStep.ROLLING_BACK
    elif view.t_prov > 0 or create > 0:
        sub_step = SubStep.PROVISIONING
    else:
        sub_step = SubStep.PROGRESSING
    fields = {
        "create": create,
        "terminate": len(terminate),
        "activating": msg.optional(msg.ACTIVATING, len(traffic)),
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


def _complete(view: CycleView) -> Decision:
    surplus = pick_surplus(view.target_alive, view.t_alive - view.desired)
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
