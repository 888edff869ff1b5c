"""Message templates of the strategy engine: the one-line `Decision.reason` of every rule.

Every reason names the strategy (`rolling: …`, `blue-green: …`, `recreate: …`); a cycle that starts
a rollback says why (`rolling back (aborted): rolling: …`), later rollback cycles start with
`rolling back: `. Templates are `str.format` strings with named fields; the strategy modules and the
engine fill them and never write reason text inline. The rollback reasons themselves are the
`RollbackReason` enum of `rollwise.model`; `ROLLBACK_WHY` gives each its template.

Must not: do anything but hold strings and format numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rollwise.model import RollbackReason

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
    }
)

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
