"""A rollout's timeline (pure): the samples a DEPLOYING cycle records, and its events in words.

**Samples.** A sample is what one cycle saw of its deployment: ready routes per revision
(`model.is_ready_state`, served or not: blue-green's green routes count before they get traffic) and
the traffic share per revision in percent, as the proxy splits it (`rules.routing`: the served routes,
by their traffic ratio or by the deployment's revision weights; integers summing to 100 by largest
remainder; empty when nothing serves). The revisions the rollout moves between are always present
(at 0), so a line that falls to 0 shows it.

`compute_timeline` adds to a DEPLOYING outcome what the cycle records, in the cycle's one write:

- the sample it saw (before its decision) when it differs from the newest stored one (`RolloutMark.
  last_key`; none stored yet: the first cycle of a rollout records the start). Changes made by a
  decision (routes terminated, traffic moved) are seen by the next cycle, which runs again in the
  same round when the decision made progress (docs/control.md, "Scheduling");
- when the decision ends the rollout, also the sample it leaves (the decision's route changes and
  weights applied), so the chart ends with the rollout. Never two equal samples at once.

A cycle whose only change is a sample writes a pure guard and the sample (`Outcome.timeline_only`): it
is not counted as progress. A deployment DEPLOYING without an open rollout row (started before the
table existed) gets one, from its `rollout_started_at`.

**Events** are the history rows of the rollout's time span (no copy), each mapped to one kind by
`event_kind` (docs/api.md, "Rollout timeline", has the table).

Called by control.cycles (samples) and control.operations (events). Must not: do I/O or read the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rollwise.control.rules.outcome import Outcome
from rollwise.control.rules.routing import compute_backends, compute_served, is_route_ready
from rollwise.control.rules.views import HealthChecks
from rollwise.model import StrategyName
from rollwise.store.commands import UNSET, NewRollout, RolloutUpdate
from rollwise.store.records import (
    DeploymentRecord,
    HistoryRecord,
    RolloutMark,
    RolloutRecord,
    RouteRecord,
    TimelineSample,
)

EVENT_KINDS = ("started", "wave", "step", "paused", "promoted", "rollback", "completed", "aborted", "error")
"""The kinds of a timeline's events (docs/api.md)."""


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    at: datetime
    kind: str
    """One of EVENT_KINDS."""
    message: str


@dataclass(frozen=True, slots=True)
class Timeline:
    """One rollout with its samples (oldest first) and its events (oldest first)."""

    rollout: RolloutRecord
    samples: Sequence[TimelineSample]
    events: Sequence[TimelineEvent]


# ------------------------------------------------------------------------------------------ samples


def compute_percentages(shares: Mapping[int, float]) -> dict[int, int]:
    """Non-negative shares as integer percents summing to 100 (largest remainder; ties to the lower
    revision); {} when they sum to 0."""
    total = sum(shares.values())
    if total <= 0:
        return {}
    exact = {rev: 100 * share / total for rev, share in shares.items()}
    out = {rev: int(value) for rev, value in exact.items()}
    by_remainder = sorted(exact, key=lambda rev: (-(exact[rev] - out[rev]), rev))
    for rev in by_remainder[: 100 - sum(out.values())]:
        out[rev] += 1
    return out


def compute_sample(
    dep: DeploymentRecord,
    routes: Iterable[RouteRecord],
    checks: HealthChecks,
    weights: Mapping[int, int] | None,
    now: datetime,
) -> TimelineSample:
    """What the deployment's routes show (module docstring); `weights`: its revision weights (a canary's)."""
    routes = list(routes)
    rollout = {rev: 0 for rev in (dep.current_revision, dep.deploying_revision) if rev is not None}
    ready = dict(rollout)
    for r in routes:
        if is_route_ready(r, checks):
            ready[r.revision] = ready.get(r.revision, 0) + 1
    served, _ = compute_served(routes, checks)
    shares: dict[int, float] = {}
    for backend in compute_backends(served, [], weights):
        if backend.revision is not None:
            shares[backend.revision] = shares.get(backend.revision, 0.0) + backend.weight
    percent = compute_percentages(shares)
    return TimelineSample(at=now, ready=ready, weights={**rollout, **percent} if percent else {})


def compute_left(out: Outcome, routes: Sequence[RouteRecord]) -> list[RouteRecord]:
    """The routes as the outcome leaves them: its route updates applied (new routes are not ready)."""
    updates: dict[str, dict[str, Any]] = {}
    for u in out.route_updates:
        updates.setdefault(u.id, {}).update(u.changes())
    return [replace(r, **updates[r.id]) if r.id in updates else r for r in routes]


def compute_timeline(
    out: Outcome, routes: Sequence[RouteRecord], checks: HealthChecks, mark: RolloutMark | None, now: datetime
) -> None:
    """Add to a DEPLOYING outcome the samples its cycle records (module docstring)."""
    dep = out.deployment
    ending = next((u.outcome for u in out.rollout_updates if u.outcome is not None), None)
    samples: list[TimelineSample] = []
    last = mark.last_key if mark is not None else None
    seen = compute_sample(dep, routes, checks, dep.traffic_weights, now)
    seen_key = seen.key
    if seen_key != last:
        samples.append(seen)
        last = seen_key
    if ending is not None:
        weights = dep.traffic_weights
        if out.change.traffic_weights is not UNSET:
            weights = out.change.traffic_weights
        left = compute_sample(dep, compute_left(out, routes), checks, weights, now)
        if left.key != last or not samples:
            samples.append(left)
    if mark is None:
        if ending is None and dep.deploying_revision is not None:
            out.new_rollouts.append(NewRollout(
                deployment_id=dep.id, from_revision=dep.current_revision, to_revision=dep.deploying_revision,
                strategy=rollout_strategy(dep), at=dep.rollout_started_at or now, samples=tuple(samples),
                adopted=True,
            ))
        return
    if samples or ending is not None:
        out.rollout_updates = [RolloutUpdate(deployment_id=dep.id, at=now, samples=tuple(samples), outcome=ending,
                                             known_count=mark.sample_count)]


def rollout_strategy(dep: DeploymentRecord) -> str:
    """The strategy a rollout row names: the policy's, "unknown" without a usable one."""
    return str(dep.policy.strategy) if dep.policy is not None else "unknown"


# ------------------------------------------------------------------------------------------- events


def event_kind(rollout: RolloutRecord, h: HistoryRecord) -> str:
    """The timeline kind of one history row of the rollout's span (docs/api.md, "Rollout timeline")."""
    message = h.message
    if h.result == "operator":
        if "rollout of revision" in message and "started" in message:
            starts_this = h.to_revision == rollout.to_revision and h.created_at == rollout.started_at
            return "started" if starts_this else "aborted"  # another rollout superseded this one
        if "abort" in message or "destroy" in message:
            return "aborted"
        if "paused" in message:
            return "paused"
        if "promotion" in message:
            return "promoted"
        return "step"
    if h.result == "success":
        return "completed" if h.lifecycle_to != h.lifecycle_from else "step"
    if h.result == "failure":
        return "rollback"
    if h.result == "error":
        return "error"
    if h.result == "waiting":
        return "paused"
    if h.result == "progress":
        return "step" if rollout.strategy == StrategyName.CANARY.value else "wave"
    return "step"


def compute_events(rollout: RolloutRecord, rows: Iterable[HistoryRecord]) -> list[TimelineEvent]:
    """The rollout's events, oldest first: one per history row of its span (merged rows say how often)."""
    events = []
    for h in rows:
        message = h.message if h.attempts == 1 else f"{h.message} ({h.attempts} times)"
        events.append(TimelineEvent(at=h.created_at, kind=event_kind(rollout, h), message=" ".join(message.split())))
    return events
