"""Message templates of the strategy engine: the one-line `Decision.reason` of every rule.

Every reason names the strategy (`rolling: …`, `blue-green: …`, `recreate: …`, `canary: …`); a cycle that starts
a rollback says why (`rolling back (aborted): rolling: …`), later rollback cycles start with
`rolling back: `. Templates are `str.format` strings with named fields; the strategy modules and the
engine fill them and never write reason text inline. The rollback reasons themselves are the
`RollbackReason` enum of `rollwise.model`; `ROLLBACK_WHY` gives each its template.

Capacity (docs/strategies.md, "Capacity"): when capacity keeps a strategy from creating the routes its
rule wants, the reason ends with `; waiting for capacity: needs gpu 1 per route, free gpu 0` (or, when
only the number of placeable routes is known, `; waiting for capacity: 0 more routes can be placed`);
the rolling update's capacity-forced replacement says `capacity: replacing one r1 route at a time
(needs gpu 1, free gpu 0)`. `capacity_wait` and `capacity_room` put those words together.

Must not: do anything but hold strings and format numbers and resource amounts.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rollwise.model import CapacityView, RollbackReason

# -- engine (all strategies) -----------------------------------------------------------------------

LINE = "{label}: {body}"
"""Every strategy reason: the strategy's label, then what the rule decided."""

PAUSED = "paused by the operator, no route changes"
DEADLINE_PAUSED = "paused: no progress for {elapsed} (progress deadline {deadline}), no route changes"

ROLLBACK_START = "rolling back ({why}): {line}"
"""The cycle that starts a rollback: why, then the rollback decision of the same cycle."""
ROLLBACK_CONTINUE = "rolling back: {line}"

ROLLED_BACK_TO_NOTHING = "rolled back to no revision (none was serving before this rollout): terminating {routes}"

ROLLBACK_WHY: Mapping[RollbackReason, str] = MappingProxyType(
    {
        RollbackReason.FAILURE_THRESHOLD: "failure_threshold: {failed}, threshold {threshold}",
        RollbackReason.ABORTED: "aborted",
        RollbackReason.PROGRESS_DEADLINE: "progress_deadline: no progress for {elapsed}, deadline {deadline}",
        RollbackReason.EVALUATION_ERROR: "evaluation_error: {error}",
        RollbackReason.ANALYSIS: "analysis: {failure}",
    }
)
ANALYSIS_COUNTED = "{failed}, limit {limit}"
"""The analysis rollback's words when the control layer gave no words of the newest failure."""

MIN_READY_WAIT = "; {routes} healthy for less than min_ready_seconds {seconds}, the first counts as ready in {remaining}"
"""Appended to any reason while routes wait out `min_ready_seconds` (docs/strategies.md, "min_ready_seconds")."""

# -- rolling ---------------------------------------------------------------------------------------

ROLLING_STEP = "created {create}, terminating {terminate}{activating} (surge {surge}, unavailable {unavailable})"
ROLLING_WAIT = (
    "waiting for {revision} routes: {ready}/{desired} ready, {provisioning} provisioning, {unready} unready"
    "{activating} (surge {surge}, unavailable {unavailable})"
)
COMPLETED = "completed: {ready}/{desired} {revision} routes ready{surplus}{activating}"
ROLLED_BACK = "rolled back to {revision}: {ready}/{desired} routes ready{surplus}{activating}"
SURPLUS = ", terminating {count} surplus"
ACTIVATING = ", activating {count}"

# -- blue-green ------------------------------------------------------------------------------------

BG_STEP = "created {create} green{surplus} (green {revision}: {ready}/{desired} ready)"
BG_SURPLUS = ", terminating {count} surplus green"
BG_WAIT = (
    "waiting for green {revision} routes: {ready}/{desired} ready, {provisioning} provisioning, "
    "{unready} unready{promote}"
)
BG_PROMOTE_WAITS = "; promotion requested, it waits until every green route is ready"
BG_AWAITING = "awaiting promotion: {ready}/{desired} green {revision} routes ready{auto}"
BG_AUTO_IN = ", auto-promotion in {remaining}"
BG_PROMOTED = "promoted {promoted}, terminating {blue}{surplus} ({why})"
BG_WHY_REQUESTED = "promotion requested"
BG_WHY_AUTO = "auto-promotion after {delay}"
BG_ROLLED_BACK = "rolled back to {revision}: terminating {green}, blue routes kept serving"

# -- recreate --------------------------------------------------------------------------------------

RECREATE_STEP = "created {create}, terminating {terminate}{activating} (downtime by design)"
RECREATE_WAIT = "waiting for {revision} routes: {ready}/{desired} ready, {provisioning} provisioning, {unready} unready"


# -- canary ----------------------------------------------------------------------------------------

CANARY_STEP_WEIGHT = "step {number}/{total} (set_weight {weight})"
CANARY_STEP_PAUSE = "step {number}/{total} (pause {seconds})"
CANARY_STEP_PAUSE_PROMOTE = "step {number}/{total} (pause until promote)"
CANARY_FINAL = "final step"
CANARY_DONE = "{step} done; "
CANARY_PROMOTED = "{step} completed by promote; "
CANARY_PROMOTED_FULL = "promote --full: skipping to the final step; "
CANARY_NO_STABLE = "no stable revision, steps skipped; "
CANARY_ACTION = "created {create}, terminating {terminate}{activating}; "
CANARY_ROUTES = "{revision} routes {ready}/{wanted} ready, {provisioning} provisioning, {unready} unready"
CANARY_SURGE = " (surge {surge})"
CANARY_PAUSE_LEFT = "; {remaining} left"
CANARY_PAUSE_PROMOTE = "; waiting for promote"
CANARY_ANALYSIS_WAIT = "; waiting for the current analysis interval to pass"
CANARY_BODY = "{advanced}{step}: {action}{routes}{wait}; traffic {weights}"
CANARY_COMPLETED = (
    "{advanced}completed: {ready}/{desired} {revision} routes ready, traffic 100% to {revision}, "
    "terminating {others}{surplus}{activating}"
)
CANARY_ROLLED_BACK = "rolled back to {revision}: traffic 100% to {revision}, terminating {canary}, {revision} kept serving"
TRAFFIC_KEPT = "; traffic kept at {weights}"
"""A paused decision of a strategy that sets weights (canary): the split stays as it is."""


def format_weights(weights: Mapping[str, int]) -> str:
    """`{"r1": 90, "r2": 10}` -> "r1 90%, r2 10%" (in the mapping's order)."""
    return ", ".join(f"{revision} {percent}%" for revision, percent in weights.items())


# -- capacity (all strategies) -----------------------------------------------------------------------

CAPACITY_SHORT = "; {wait}"
"""Appended to a strategy's reason when capacity keeps it from creating every route its rule wants."""
CAPACITY_WAIT = "waiting for capacity: {room}{releasing}"
CAPACITY_NEED_PER_ROUTE = "needs {need} per route, free {free}"
CAPACITY_NEED = "needs {need}, free {free}"
CAPACITY_PLACEABLE = "{placeable} can be placed"
CAPACITY_RELEASING = ", {routes} still stopping"
CAPACITY_NOT_KNOWN = "waiting for capacity: {revision} routes are placed from the next cycle"
"""The cycle that starts a rollback under a limited capacity: the capacity it was given counts routes
of the revision that was being deployed, so no route of the revision rolled back to is created yet."""
CAPACITY_REPLACING = "capacity: replacing one {revision} route at a time ({room})"
"""The rolling update's capacity-forced replacement (`capacity_fallback: replace`)."""
CAPACITY_NOTHING_TO_REPLACE = "; no other route to replace"
CAPACITY_KEEPING = "; not replacing: {ready} ready, at least {floor} must keep serving"
"""The forced replacement held back by the serving floor: the room this deployment freed was placed by
another deployment first (a shared node)."""
BG_DOES_NOT_FIT = "; green does not fit yet: {missing} wanted while blue keeps serving"


def format_resources(amounts: Mapping[str, int]) -> str:
    """`{"gpu": 1}` -> "gpu 1"; `{"mem_gb": 40, "gpu": 2}` -> "gpu 2 and mem_gb 40" (names sorted)."""
    return " and ".join(f"{name} {amounts[name]}" for name in sorted(amounts))


def after_creating(capacity: CapacityView, created: int) -> CapacityView:
    """The capacity left once `created` routes took what each needs."""
    if not created or capacity.placeable is None:
        return capacity
    free = {name: max(0, amount - created * capacity.need.get(name, 0)) for name, amount in capacity.free.items()}
    return CapacityView(placeable=max(0, capacity.placeable - created), need=capacity.need, free=free)


def capacity_room(capacity: CapacityView, *, per_route: bool) -> str:
    """What one route needs and what is free ("needs gpu 1 per route, free gpu 0"), or, when the needs
    are not known (the plan input gives only `placeable`), "0 more routes can be placed". Resources a
    route needs none of are left out; a needed resource missing from `free` is shown as 0."""
    need = {name: amount for name, amount in capacity.need.items() if amount > 0}
    if not need:
        return CAPACITY_PLACEABLE.format(placeable=count(capacity.placeable or 0, "more route"))
    free = {name: capacity.free.get(name, 0) for name in need}
    template = CAPACITY_NEED_PER_ROUTE if per_route else CAPACITY_NEED
    return template.format(need=format_resources(need), free=format_resources(free))


def capacity_wait(
    capacity: CapacityView, *, known: bool, revision: str, releasing: int, created: int = 0
) -> str:
    """`; waiting for capacity: …`, for a cycle that creates fewer routes than its rule wants. What is
    free is said after this cycle's `created` routes took theirs (what the next route would find)."""
    if not known:
        return CAPACITY_SHORT.format(wait=CAPACITY_NOT_KNOWN.format(revision=revision))
    wait = CAPACITY_WAIT.format(
        room=capacity_room(after_creating(capacity, created), per_route=True),
        releasing=CAPACITY_RELEASING.format(routes=count(releasing, "route")) if releasing else "",
    )
    return CAPACITY_SHORT.format(wait=wait)


def format_seconds(seconds: float) -> str:
    """`700` -> "700s", `0.25` -> "0.25s", `12.3456` -> "12.3s"."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds, 2 if abs(seconds) < 1 else 1)}s"


def count(n: int, noun: str) -> str:
    """`count(1, "green route")` -> "1 green route"; `count(3, "green route")` -> "3 green routes"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def optional(template: str, count: int) -> str:
    """`template` filled with `count`, or "" when there is nothing to say."""
    return template.format(count=count) if count else ""
