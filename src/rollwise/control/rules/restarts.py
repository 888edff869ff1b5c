"""Crash-loop back-off (pure): when the routes of a revision keep failing, replacements wait longer each
time, 1 s doubling to 5 minutes, like Kubernetes' CrashLoopBackOff, per deployment.

The back-off is derived from the failed routes themselves, so it needs no state of its own and survives
a server restart: take the revision's failed routes, newest failure first (`status_updated_at`: when the
route failed or, once stopped, ended); they form a streak as long as each is less than `BACKOFF_RESET`
after the previous one. With a streak of n failures whose newest ended at t, the next route may start at

    t + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (n - 1))            (1, 2, 4, ... 256, 300, 300 ... s)

and a revision that ran `BACKOFF_RESET` (10 minutes) without a failure starts from 1 s again. The
purge keeps the newest 10 failed routes per deployment (store), enough for the 300 s cap (2 ** 9 > 300).

Where it applies: replica reconciliation (SCALING and READY: a crashed route, a revision whose command
does not exist) and rollbacks (which have no failure budget). A forward rollout does not back off: its
failure budget ends it.

Called by the lifecycle rules (control.rules.lifecycle, control.rules.deploying) and the API's condition
(control.rules.condition). Must not do I/O or read the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from rollwise.model import Decision
from rollwise.store.records import RouteRecord

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0
_MAX_DOUBLINGS = 20  # 2 ** 20 s is far beyond the cap; keeps the arithmetic small for long streaks


@dataclass(frozen=True, slots=True)
class RestartBackoff:
    failures: int
    """Failures in the current streak (0: no recent failure)."""
    latest: RouteRecord | None = None
    """The newest failed route of the streak (its `detail` says what happened)."""
    not_before: datetime | None = None
    """When the next route of the revision may be started; None: at once."""

    def remaining(self, now: datetime) -> float:
        """Seconds to wait before starting another route (0 when none)."""
        if self.not_before is None:
            return 0.0
        return max(0.0, (self.not_before - now) / timedelta(seconds=1))


NO_BACKOFF = RestartBackoff(failures=0)

OUTPUT_MARK = "; last output: "
"""Separates what happened from the route's own last lines in a failed route's `detail`."""


def failure_cause(detail: str | None) -> str:
    """What happened to a failed route, without its output lines (stable enough to merge history)."""
    return (detail or "failed").split(OUTPUT_MARK, 1)[0]


def compute_restart_backoff(routes: Iterable[RouteRecord], revision: int | None, now: datetime) -> RestartBackoff:
    """The back-off of `revision` from its failed routes (see the module docstring)."""
    failed = sorted(
        (r for r in routes if r.failed and r.revision == revision),
        key=lambda r: r.status_updated_at,
        reverse=True,
    )
    if not failed or (now - failed[0].status_updated_at) / timedelta(seconds=1) >= BACKOFF_RESET:
        return NO_BACKOFF
    streak = 1
    for newer, older in zip(failed, failed[1:]):
        if (newer.status_updated_at - older.status_updated_at) / timedelta(seconds=1) >= BACKOFF_RESET:
            break
        streak += 1
    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(streak - 1, _MAX_DOUBLINGS))
    return RestartBackoff(
        failures=streak, latest=failed[0], not_before=failed[0].status_updated_at + timedelta(seconds=delay)
    )


def hold_creates(decision: Decision, backoff: RestartBackoff, now: datetime) -> Decision:
    """The decision without its route creations while the back-off lasts (terminations and traffic
    changes stay), asking to be looked at again when it ends."""
    wait = backoff.remaining(now)
    if not decision.create or wait <= 0:
        return decision
    requeue = wait if decision.requeue_after is None else min(wait, decision.requeue_after)
    return replace(decision, create=(), requeue_after=requeue)
