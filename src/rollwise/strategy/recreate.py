"""Recreate (`strategy: recreate`): one cycle's rules, docs/strategies.md "Recreate".

For deployments that cannot afford two revisions at once. It has downtime by design: every route of
the old revision is terminated in the first cycle, and the deployment serves nothing until the new
routes are ready.

Called by the engine (through the registry) after the checks before the strategy. Must not read the
clock, do I/O, or know about the checks.

    terminate  every other alive route (ready or not)
               + target routes beyond D (not ready first, then ready newest first), so that at most
                 D routes are ever alive
    create     max(0, D - t_alive) target routes, traffic `active`, ratio 1.0
    completed  when o_alive == 0 and t_ready >= D (`rolled_back` in rollback mode)
    sub-step   provisioning while a staying target route is provisioning or create > 0, else
               progressing (`rolling_back` in rollback mode)

New routes are created in the same cycle that terminates the old ones (the spec's rule); the old
routes drain while the new ones provision, and neither counts the other as alive. Rollback recreates
the current revision with the same rules.

Capacity (docs/strategies.md, "Capacity"): create = min(D - t_alive, P), P the target routes that can
be placed now (None = unlimited). The old routes still hold their resources while they drain, so the
routes that do not fit are created in later cycles; the reason says what is missing meanwhile.
"""

from __future__ import annotations

from rollwise.model import Decision, Mode, Policy, RouteCreate, RouteStatus, SubStep, Traffic
from rollwise.strategy import messages as msg
from rollwise.strategy.cycle import CycleView, activations, ids

LABEL = "recreate"


def compute_settings(policy: Policy, desired: int) -> None:
    """Recreate has no settings of its own."""
    return None


def decide(view: CycleView, settings: None) -> Decision:
    """One recreate cycle for `view` (forward or rollback mode, per `view.mode`)."""
    d = view.desired
    forward = view.mode is Mode.FORWARD
    surplus = view.surplus(view.target_alive, view.t_alive - d)
    traffic = activations(view.target_alive, dropping=surplus)
    activating = msg.optional(msg.ACTIVATING, len(traffic))

    if view.o_alive == 0 and view.t_ready >= d:
        template = msg.COMPLETED if forward else msg.ROLLED_BACK
        body = template.format(
            ready=min(view.t_ready, d),
            desired=d,
            revision=view.target,
            surplus=msg.optional(msg.SURPLUS, len(surplus)),
            activating=activating,
        )
        return Decision(
            sub_step=SubStep.COMPLETED if forward else SubStep.ROLLED_BACK,
            mode=view.mode,
            reason=msg.LINE.format(label=LABEL, body=body),
            terminate=ids(surplus),
            traffic=traffic,
        )

    wanted = max(0, d - view.t_alive)
    create = view.placeable(wanted)
    terminate = view.other_alive + surplus
    gone = {r.id for r in surplus}
    staying = [r for r in view.target_alive if r.id not in gone]
    provisioning = sum(1 for r in staying if r.status is RouteStatus.PROVISIONING)
    if not forward:
        sub_step = SubStep.ROLLING_BACK
    elif provisioning > 0 or create > 0:
        sub_step = SubStep.PROVISIONING
    else:
        sub_step = SubStep.PROGRESSING
    if create or terminate:
        body = msg.RECREATE_STEP.format(create=create, terminate=len(terminate), activating=activating)
    else:
        body = msg.RECREATE_WAIT.format(
            revision=view.target,
            ready=sum(1 for r in staying if view.is_ready(r)),
            desired=d,
            provisioning=provisioning,
            unready=sum(1 for r in staying if r.status is RouteStatus.RUNNING and not view.is_ready(r)),
        )
    if create < wanted:
        body += msg.capacity_wait(
            view.capacity, known=view.capacity_known, revision=view.target, releasing=view.releasing,
                created=create,
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
