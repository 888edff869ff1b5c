"""Lifecycle cycles: load one snapshot, compute an Outcome per deployment, apply them in ONE write.

A cycle reads with a fixed number of queries whatever the number of deployments (deployments with their
policies, their routes, and whether the revisions those routes run have a health check), calls the pure
per-deployment rules (`deploying`, `lifecycle`), gathers every outcome into one ChangeSet and hands it to `Store.apply`, which
writes it in one transaction (guarded: a deployment changed by an operator since it was read is skipped
whole and left for the next cycle). A cycle that finds nothing to do writes nothing. A DEPLOYING cycle
also records its rollouts' timeline samples in that write (control.rules.timeline), having read each
deployment's open rollout in the same query as the deployment.

Called by the coordinator; does not touch processes or the proxy (the route controller does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from rollwise.control.rules import transitions
from rollwise.control.rules.capacity import NO_ROOM, Room, Totals, target_revision
from rollwise.control.rules.deploying import (
    compute_analysis_counts,
    compute_deploying_outcome,
    compute_error_outcome,
    is_analysed,
)
from rollwise.model.views import NO_ANALYSIS, AnalysisCounts
from rollwise.store.records import NO_TALLY
from rollwise.control.rules.lifecycle import (
    compute_destroying_outcome,
    compute_pending_outcome,
    compute_replicas_outcome,
)
from rollwise.control.rules.outcome import Outcome, gather
from rollwise.control.rules.timeline import compute_timeline
from rollwise.control.rules.views import HealthChecks, group_by_deployment
from rollwise.model import Lifecycle, RouteStatus
from rollwise.store import Store
from rollwise.store.bulk import gc_paused
from rollwise.store.commands import UNSET
from rollwise.store.records import DeploymentRecord, RolloutMark, RouteRecord

log = logging.getLogger(__name__)


class CycleKind(str, Enum):
    CHECK_PENDING = "check_pending"
    SCALING = "scaling"
    CHECK_REPLICAS = "check_replicas"
    DEPLOYING = "deploying"
    DESTROYING = "destroying"


LIFECYCLE_OF: dict[CycleKind, Lifecycle] = {
    CycleKind.CHECK_PENDING: Lifecycle.PENDING,
    CycleKind.SCALING: Lifecycle.SCALING,
    CycleKind.CHECK_REPLICAS: Lifecycle.READY,
    CycleKind.DEPLOYING: Lifecycle.DEPLOYING,
    CycleKind.DESTROYING: Lifecycle.DESTROYING,
}


@dataclass
class CycleReport:
    kind: CycleKind
    deployments: int = 0
    applied: int = 0
    skipped: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)
    created_routes: int = 0
    terminated_routes: int = 0
    lifecycle_changes: dict[int, Lifecycle] = field(default_factory=dict)
    rollouts_ended: list[tuple[str, str]] = field(default_factory=list)
    """(strategy, "completed" | "rolled_back") for each rollout this cycle ended; strategy "unknown" when
    the stored policy no longer validates."""

    requeue_after: float | None = None
    """Seconds until time alone changes some deployment's decision (auto-promotion, a deadline)."""
    requeue: dict[int, float] = field(default_factory=dict)
    """The same, per deployment (those with a wait)."""
    evaluated: set[int] = field(default_factory=set)
    """The deployments this cycle read and decided."""
    unsettled: set[int] = field(default_factory=set)
    """Of those, the ones whose outcome is not `settled` (control.rules.outcome)."""

    @property
    def changed(self) -> bool:
        return self.applied > 0

    def merge(self, other: CycleReport) -> CycleReport:
        """This report and `other` (the next page of the same cycle) as one."""
        waits = [w for w in (self.requeue_after, other.requeue_after) if w is not None]
        return CycleReport(
            self.kind,
            deployments=self.deployments + other.deployments,
            applied=self.applied + other.applied,
            skipped=self.skipped | other.skipped,
            errors={**self.errors, **other.errors},
            created_routes=self.created_routes + other.created_routes,
            terminated_routes=self.terminated_routes + other.terminated_routes,
            lifecycle_changes={**self.lifecycle_changes, **other.lifecycle_changes},
            rollouts_ended=self.rollouts_ended + other.rollouts_ended,
            requeue_after=min(waits, default=None),
            requeue={**self.requeue, **other.requeue},
            evaluated=self.evaluated | other.evaluated,
            unsettled=self.unsettled | other.unsettled,
        )


Rule = Callable[[DeploymentRecord, Sequence[RouteRecord], HealthChecks, datetime, Room], Outcome]

PLACING = frozenset({CycleKind.SCALING, CycleKind.CHECK_REPLICAS, CycleKind.DEPLOYING})
"""The cycle kinds that create routes, hence read the capacity."""


def _rule_for(kind: CycleKind) -> Rule:
    if kind is CycleKind.DEPLOYING:
        return compute_deploying_outcome
    if kind in (CycleKind.SCALING, CycleKind.CHECK_REPLICAS):
        return compute_replicas_outcome
    if kind is CycleKind.DESTROYING:
        return lambda dep, routes, checks, now, room: compute_destroying_outcome(dep, routes, now)
    return lambda dep, routes, checks, now, room: compute_pending_outcome(dep, now)


async def read_analysis(store: Store, deployments: Sequence[DeploymentRecord]) -> dict[int, AnalysisCounts]:
    """The analysis counts of the canary rollouts among `deployments` (one read; none without one)."""
    analysed = [d for d in deployments if is_analysed(d)]
    if not analysed:
        return {}
    tallies = await store.analysis_counts([d.id for d in analysed])
    return {d.id: compute_analysis_counts(d, tallies.get(d.id, NO_TALLY)) for d in analysed}


def revisions_placed(deployments: Sequence[DeploymentRecord]) -> set[tuple[int, int]]:
    """The revisions a placing cycle may create routes of: each deployment's target and serving one."""
    keys = {(d.id, rev) for d in deployments if (rev := target_revision(d)) is not None}
    return keys | {(d.id, d.current_revision) for d in deployments if d.current_revision is not None}


async def read_room(
    store: Store, capacity: Totals, needs: Mapping[tuple[int, int], Mapping[str, int]]
) -> Room:
    """What is free now (control.rules.capacity) for routes of revisions with these `needs`: one read of
    the routes that hold slots, and none at all when no such revision needs anything."""
    if not needs:
        return NO_ROOM
    return Room.compute(capacity, await store.list_holding_routes(), needs)


def _evaluate(
    kind: CycleKind,
    rule: Rule,
    dep: DeploymentRecord,
    dep_routes: Sequence[RouteRecord],
    health_checks: HealthChecks,
    now: datetime,
    room: Room,
    report: CycleReport,
) -> Outcome:
    """One deployment's outcome; an evaluation that raises is recorded for this deployment only."""
    try:
        return rule(dep, dep_routes, health_checks, now, room)
    except Exception as exc:  # noqa: BLE001 - recorded for this deployment only
        log.exception("cycle %s failed for deployment %s", kind.value, dep.name)
        report.errors[dep.id] = f"{type(exc).__name__}: {exc}"
        if kind is CycleKind.DEPLOYING:
            return compute_error_outcome(dep, dep_routes, exc, now)
        outcome = Outcome(dep)
        outcome.apply(transitions.record(dep, now, result="error", message=f"{kind.value}: {exc}",
                                         error=report.errors[dep.id]))
        return outcome


def _record_timeline(
    outcome: Outcome, routes: Sequence[RouteRecord], health_checks: HealthChecks, marks: Mapping[int, RolloutMark],
    now: datetime,
) -> None:
    """The rollout timeline's samples of one DEPLOYING outcome (control.rules.timeline). A failure here
    is logged and records nothing: the chart must never stop or fail a rollout."""
    try:
        compute_timeline(outcome, routes, health_checks, marks.get(outcome.deployment.id), now)
    except Exception:  # noqa: BLE001 - the rollout goes on without this sample
        log.exception("timeline sample failed for deployment %s", outcome.deployment.name)


async def run_cycle(
    store: Store, kind: CycleKind, now: datetime, capacity: Totals | None = None, *, only: Collection[int] | None = None,
    after: int | None = None, limit: int | None = None,
) -> CycleReport:
    """One cycle of `kind` over every deployment in its lifecycle: read once, decide, write once.
    `capacity`: the runtime's node totals (node -> resource -> units); deployments are visited in id
    order and each one's creations are taken from what is free before the next is decided. `only`: just
    these deployments (those of them in the lifecycle: the coordinator's `CycleWatch`). `after`, `limit`:
    one page of them, by id (the coordinator reads a whole lifecycle a page at a time)."""
    report = CycleReport(kind)
    if only is not None and not only:
        return report  # nothing may need a decision: nothing to read
    # One read transaction (store.read_cycle): the deployments (a DEPLOYING cycle: with each one's open
    # rollout, for its timeline), their routes and, of the revisions, "has a health check" and what a
    # route needs of the node's slots (joined into both queries; no big JSON column read or decoded).
    snapshot = await store.read_cycle(
        LIFECYCLE_OF[kind], routes=kind is not CycleKind.CHECK_PENDING, facts=kind in PLACING,
        marks=kind is CycleKind.DEPLOYING, ids=only, after=after, limit=limit,
    )
    deployments: Sequence[DeploymentRecord] = snapshot.deployments
    marks: Mapping[int, RolloutMark] = snapshot.marks
    report.deployments = len(deployments)
    report.evaluated = {d.id for d in deployments}
    if not deployments:
        return report
    routes_by_dep: dict[int, list[RouteRecord]] = group_by_deployment(snapshot.routes)
    health_checks: HealthChecks = snapshot.health_checks
    room = NO_ROOM
    if kind in PLACING:
        keys = {(r.deployment_id, r.revision) for r in snapshot.routes} | revisions_placed(deployments)
        room = await read_room(store, capacity or {}, {k: n for k, n in snapshot.needs.items() if k in keys})
    rule = _rule_for(kind)
    if kind is CycleKind.DEPLOYING:
        counts = await read_analysis(store, deployments)
        if counts:
            def rule(dep: DeploymentRecord, routes: Sequence[RouteRecord], checks: HealthChecks, now: datetime,
                     room: Room) -> Outcome:
                return compute_deploying_outcome(dep, routes, checks, now, room, counts.get(dep.id, NO_ANALYSIS))
    with gc_paused():  # synchronous and allocation-heavy (see rollwise.store.bulk)
        outcomes = [_evaluate(kind, rule, dep, routes_by_dep.get(dep.id, []), health_checks, now, room, report)
                    for dep in sorted(deployments, key=lambda d: d.id)]
        if kind is CycleKind.DEPLOYING:
            for o in outcomes:
                _record_timeline(o, routes_by_dep.get(o.deployment.id, []), health_checks, marks, now)
        changes = gather(outcomes)
    report.requeue = {o.deployment.id: o.requeue_after for o in outcomes if o.requeue_after is not None}
    report.requeue_after = min(report.requeue.values(), default=None)
    report.unsettled = {o.deployment.id for o in outcomes if not o.settled}
    if not changes.deployments:
        return report

    result = await store.apply(changes, now)
    report.skipped = set(result.skipped)
    for o in outcomes:
        if o.is_empty or o.deployment.id in report.skipped or o.timeline_only:
            continue  # a timeline sample alone is recorded, but it is no progress
        report.applied += 1
        report.created_routes += len(o.new_routes)
        # Traffic-only updates (blue-green promotion) leave `status` UNSET: they terminate nothing.
        report.terminated_routes += sum(1 for u in o.route_updates if u.status is RouteStatus.TERMINATING)
        if o.change.lifecycle is not UNSET:
            report.lifecycle_changes[o.deployment.id] = o.change.lifecycle
            if kind is CycleKind.DEPLOYING:
                # A rollout whose policy no longer validates still ends (rolled back) and is counted.
                policy = o.deployment.policy
                ended = "completed" if o.swap else "rolled_back"
                report.rollouts_ended.append((policy.strategy.value if policy else "unknown", ended))
    return report
