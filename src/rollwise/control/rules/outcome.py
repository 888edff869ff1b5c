"""One deployment's share of a cycle's single write, and the gathering of all shares into one
`ChangeSet` for `Store.apply`.

Cycles compute an `Outcome` per deployment (pure, from the records they read); `gather` turns the list
into the ChangeSet. Constructors of store input types are kept here, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rollwise.control.rules.transitions import Transition
from rollwise.control.rules.views import revision_number
from rollwise.model import Decision, Health, RouteStatus, Traffic
from rollwise.store.commands import (
    NO_CHANGE,
    ChangeSet,
    DeploymentChange,
    DeploymentUpdate,
    NewHistory,
    NewRollout,
    NewRoute,
    RolloutUpdate,
    RouteUpdate,
)
from rollwise.store.records import DeploymentRecord


@dataclass
class Outcome:
    deployment: DeploymentRecord
    change: DeploymentChange = NO_CHANGE
    swap: bool = False
    requeue_after: float | None = None
    """From the decision: look at this deployment again after so many seconds even if nothing happens."""
    new_routes: list[NewRoute] = field(default_factory=list)
    route_updates: list[RouteUpdate] = field(default_factory=list)
    history: list[NewHistory] = field(default_factory=list)
    rollout_updates: list[RolloutUpdate] = field(default_factory=list)
    """The rollout's end (from a transition) and timeline samples (control.rules.timeline): one at most."""
    new_rollouts: list[NewRollout] = field(default_factory=list)
    settled: bool = False
    """Nothing but a write about this deployment (its row, its routes, a measurement) or its
    `requeue_after` can change the next decision: it need not be evaluated again before either (the
    coordinator's `CycleWatch`). Not settled: waiting for room on the nodes (another deployment frees it),
    or an evaluation that failed."""

    @property
    def is_empty(self) -> bool:
        return not (self.swap or self.new_routes or self.route_updates or self.history or self.rollout_updates
                    or self.new_rollouts) and (self.change is NO_CHANGE or self.change.is_empty)

    @property
    def timeline_only(self) -> bool:
        """Only timeline samples to write: recorded, but no progress of the deployment."""
        return (not (self.swap or self.new_routes or self.route_updates or self.history)
                and (self.change is NO_CHANGE or self.change.is_empty)
                and all(u.outcome is None for u in self.rollout_updates)
                and bool(self.rollout_updates or self.new_rollouts))

    def apply(self, transition: Transition) -> None:
        """Add a transition of the deployment (control.rules.transitions): its change, history, swap and
        the rollout it starts or ends."""
        # `then` copies the change (dataclasses.replace); an empty side needs no copy.
        if self.change is NO_CHANGE:
            self.change = transition.change
        elif transition.change is not NO_CHANGE:
            self.change = self.change.then(transition.change)
        self.history.extend(transition.history)
        self.swap = self.swap or transition.swap
        self.rollout_updates.extend(transition.rollout_updates)
        self.new_rollouts.extend(transition.new_rollouts)

    def apply_route_decision(
        self, decision: Decision, now: datetime, *, holds: Callable[[int], Mapping[str, int]] | None = None
    ) -> None:
        """Route creations, terminations and traffic changes of a strategy decision. `holds(revision)`:
        what a new route of that revision holds (its revision's resources; control.rules.capacity)."""
        dep_id = self.deployment.id
        for c in decision.create:
            number = revision_number(c.revision)
            self.new_routes.append(
                NewRoute(
                    id=None,
                    deployment_id=dep_id,
                    revision=number,
                    status=RouteStatus.PROVISIONING,
                    health=Health.NOT_CHECKED,
                    traffic=c.traffic,
                    traffic_ratio=c.traffic_ratio,
                    created_at=now,
                    holds=holds(number) if holds is not None else None,
                )
            )
        for route_id in decision.terminate:
            self.route_updates.append(terminate_update(dep_id, route_id, now))
        for t in decision.traffic:
            self.route_updates.append(
                RouteUpdate(id=t.id, deployment_id=dep_id, traffic=t.traffic, traffic_ratio=t.traffic_ratio)
            )


def terminate_update(deployment_id: int, route_id: str, now: datetime) -> RouteUpdate:
    return RouteUpdate(
        id=route_id,
        deployment_id=deployment_id,
        status=RouteStatus.TERMINATING,
        traffic=Traffic.INACTIVE,
        status_updated_at=now,
    )


def gather(outcomes: Iterable[Outcome]) -> ChangeSet:
    """All outcomes of a cycle as one ChangeSet; empty outcomes contribute nothing."""
    cs = ChangeSet(deployments=[], new_routes=[], route_updates=[], history=[])
    for o in outcomes:
        if o.is_empty:
            continue
        cs.deployments.append(
            DeploymentUpdate(
                deployment_id=o.deployment.id,
                expected_version=o.deployment.version,
                change=o.change,
                swap_expected=o.deployment.deploying_revision if o.swap else None,
            )
        )
        cs.new_routes.extend(o.new_routes)
        cs.route_updates.extend(o.route_updates)
        cs.history.extend(o.history)
        cs.rollout_updates.extend(o.rollout_updates)
        cs.new_rollouts.extend(o.new_rollouts)
    return cs
