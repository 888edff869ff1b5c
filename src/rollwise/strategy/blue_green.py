"""Blue-green (`strategy: blue_green`): one cycle's rules, docs/strategies.md "Blue-green".

Called by the engine (through the registry) after the checks before the strategy. Green = target
routes, blue = every other route. Must not read the clock (`view.now` is the cycle's time), do I/O,
or know about the checks.

Forward mode:
1. Green routes are created `inactive`, ratio 0.0: create = max(0, D - t_alive) (failed green routes
   are not alive, so they are replaced while the failure budget lasts). Alive green beyond D is
   surplus and terminated in termination order; the steps below look at the green routes that stay.
2. provisioning  if a staying green route is provisioning, or create > 0;
3. progressing   else if fewer than D staying green routes are ready;
4. all D green ready: promotion is due when `promote_requested`, or when `auto_promote` and
   now - ready_since >= promote_delay_seconds (ready_since: the latest `status_updated_at` among the
   ready green routes); otherwise `awaiting_promotion` (never times out). A promotion request made
   before every green route is ready is kept by the controller and acted on once they are.
5. promotion: every ready green route gets traffic `active`, ratio 1.0; every alive blue route is
   terminated; sub-step `completed`.
Capacity (docs/strategies.md, "Capacity"): create = min(D - t_alive, P), P the green routes that can be
placed now (None = unlimited). Blue is never terminated to make room and `capacity_fallback` does not
apply: when fewer green routes can be placed than wanted, the reason says what is missing and that
green does not fit yet, and the rollout waits (the progress deadline applies).

Rollback mode (T = current revision, so "green" is now every other route): terminate every alive
route that is not of the current revision; the current (blue) routes are untouched, they served all
along. Sub-step `rolled_back` in that same cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rollwise.model import Decision, Mode, Policy, RouteCreate, RouteStatus, RouteView, SubStep, Traffic, TrafficChange
from rollwise.strategy import messages as msg
from rollwise.strategy.cycle import CycleView, ids, in_termination_order

LABEL = "blue-green"


@dataclass(frozen=True, slots=True)
class BlueGreenSettings:
    auto_promote: bool
    promote_delay_seconds: float


def compute_settings(policy: Policy, desired: int) -> BlueGreenSettings:
    return BlueGreenSettings(auto_promote=policy.auto_promote, promote_delay_seconds=policy.promote_delay_seconds)


def decide(view: CycleView, settings: BlueGreenSettings) -> Decision:
    """One blue-green cycle for `view` (forward or rollback mode, per `view.mode`)."""
    if view.mode is Mode.ROLLING_BACK:
        return _roll_back(view)
    d = view.desired
    green = view.target_alive  # termination order: surplus is its head
    surplus = green[: max(0, len(green) - d)]
    staying = green[len(surplus) :]
    wanted = max(0, d - len(green))
    create = view.placeable(wanted)
    provisioning = sum(1 for r in staying if r.status is RouteStatus.PROVISIONING)
    ready = tuple(r for r in staying if view.is_ready(r))
    unready = len(staying) - len(ready) - provisioning
    counts = {"revision": view.target, "ready": len(ready), "desired": d}

    if provisioning > 0 or create > 0 or len(ready) < d:
        sub_step = SubStep.PROVISIONING if provisioning > 0 or create > 0 else SubStep.PROGRESSING
        if create or surplus:
            body = msg.BG_STEP.format(create=create, surplus=msg.optional(msg.BG_SURPLUS, len(surplus)), **counts)
        else:
            promote = msg.BG_PROMOTE_WAITS if view.deployment.promote_requested else ""
            body = msg.BG_WAIT.format(provisioning=provisioning, unready=unready, promote=promote, **counts)
        if create < wanted:
            body += msg.capacity_wait(
                view.capacity, known=view.capacity_known, revision=view.target, releasing=view.releasing,
                created=create,
            )
            body += msg.BG_DOES_NOT_FIT.format(missing=msg.count(wanted - create, "more route"))
        return Decision(
            sub_step=sub_step,
            mode=Mode.FORWARD,
            reason=msg.LINE.format(label=LABEL, body=body),
            create=tuple(
                RouteCreate(revision=view.target, traffic=Traffic.INACTIVE, traffic_ratio=0.0) for _ in range(create)
            ),
            terminate=ids(surplus),
        )

    why = _promotion_due(view, settings, ready)
    if why is None:
        auto = ""
        remaining: float | None = None
        if settings.auto_promote:
            remaining = max(0.0, settings.promote_delay_seconds - _seconds_since(view.now, _ready_since(ready)))
            auto = msg.BG_AUTO_IN.format(remaining=msg.format_seconds(remaining))
        return Decision(
            sub_step=SubStep.AWAITING_PROMOTION,
            mode=Mode.FORWARD,
            reason=msg.LINE.format(label=LABEL, body=msg.BG_AWAITING.format(auto=auto, **counts)),
            terminate=ids(surplus),
            requeue_after=remaining,
        )

    blue = view.other_alive
    body = msg.BG_PROMOTED.format(
        promoted=msg.count(len(ready), "green route"),
        blue=msg.count(len(blue), "blue route"),
        surplus=msg.optional(msg.SURPLUS, len(surplus)),
        why=why,
    )
    return Decision(
        sub_step=SubStep.COMPLETED,
        mode=Mode.FORWARD,
        reason=msg.LINE.format(label=LABEL, body=body),
        terminate=ids(in_termination_order(surplus + blue)),
        traffic=tuple(TrafficChange(id=r.id, traffic=Traffic.ACTIVE, traffic_ratio=1.0) for r in ready),
    )


def _promotion_due(view: CycleView, settings: BlueGreenSettings, ready: tuple[RouteView, ...]) -> str | None:
    """Why promotion is due now (for the reason line), or None when it is not."""
    if view.deployment.promote_requested:
        return msg.BG_WHY_REQUESTED
    if settings.auto_promote:
        since = _ready_since(ready)
        if since is None or _seconds_since(view.now, since) >= settings.promote_delay_seconds:
            return msg.BG_WHY_AUTO.format(delay=msg.format_seconds(settings.promote_delay_seconds))
    return None


def _ready_since(ready: tuple[RouteView, ...]) -> datetime | None:
    """The latest `status_updated_at` among the ready green routes; None when there are none (D = 0:
    nothing to soak, auto-promotion is due at once)."""
    return max((r.status_updated_at for r in ready), default=None)


def _seconds_since(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else (now - since).total_seconds()


def _roll_back(view: CycleView) -> Decision:
    green = view.other_alive
    body = msg.BG_ROLLED_BACK.format(revision=view.target, green=msg.count(len(green), "green route"))
    return Decision(
        sub_step=SubStep.ROLLED_BACK,
        mode=Mode.ROLLING_BACK,
        reason=msg.LINE.format(label=LABEL, body=body),
        terminate=ids(green),
    )
