"""The operations layer: what an operator can ask of rollwise, with every rule that decides whether the
request applies now. The REST API and the CLI call these; nothing else writes deployments on behalf of
people.

One request is one guarded transaction: the deployment is read once, the change is decided by
control.rules.transitions (the one owner of lifecycle and rollout changes), and one ChangeSet is written —
the deployment's columns, its policy and the history row together (`Store.apply`: the version must
still be the one read, and the write bumps it). When another writer got there first (a cycle, a
concurrent request), the request is decided again on what that writer left, so concurrent requests
end as if they had been sent one after the other. Writes return a `DeploymentState`: the deployment as
the write left it, with the routes and revisions a reply shows (`POST /rollout` and `PATCH` read three
times in all and write once; tests/control/test_request_statements.py counts them).

Refusals raise the typed errors of `control.errors` with a one-line message. After a write, the cycles
that must act are marked needed.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rollwise.control.rules import transitions
from rollwise.control.clock import Clock
from rollwise.control.cycles import CycleKind
from rollwise.control.cycles import read_analysis, read_room, revisions_placed
from rollwise.model.views import NO_ANALYSIS
from rollwise.control.rules.capacity import Room, Totals, compute_target_view
from rollwise.control.rules.lifecycle import compute_replicas_decision, describe_replicas_decision
from rollwise.control.rules.views import compute_deployment_view, compute_route_views
from rollwise.model import Decision, Lifecycle, Policy, RouteStatus, ValidationFailed, check_deployment_name
from rollwise.model.policy import parse_policy
from rollwise.model.revision import RevisionInput, parse_revision
from rollwise.model.names import MAX_REPLICAS
from rollwise.control.errors import AlreadyExists, NotActive, NotApplicable, NotFound, RolloutInProgress
from rollwise.store import Store
from rollwise.store.commands import UNSET, ChangeSet, DeploymentUpdate, RevisionSpec
from rollwise.store.records import (
    NO_TALLY,
    AnalysisTally,
    DeploymentRecord,
    HistoryRecord,
    MeasurementRecord,
    RevisionRecord,
    RolloutRecord,
    RouteRecord,
)
from rollwise.control.rules.timeline import Timeline, compute_events
from rollwise.strategy import decide

HOLDING = frozenset({RouteStatus.PROVISIONING, RouteStatus.RUNNING, RouteStatus.TERMINATING})
"""Route statuses that hold slots: until the process has exited (docs/strategies.md, "Capacity")."""

MAX_ATTEMPTS = 200
"""Decide-and-write attempts of one request; each failed attempt means another writer made progress."""


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """A deployment as a request left it, with what a reply shows: its routes and the revisions."""

    deployment: DeploymentRecord
    routes: builtins.list[RouteRecord]
    revisions: builtins.list[RevisionRecord]


def check_replicas(value: Any, *, field: str = "replicas") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{field}: {value!r} is not an integer")
    if not 0 <= value <= MAX_REPLICAS:
        raise ValidationFailed(f"{field}: {value} is not between 0 and {MAX_REPLICAS}")
    return value


def to_revision_spec(rev: RevisionInput) -> RevisionSpec:
    return RevisionSpec(
        command=tuple(rev.command),
        env=dict(rev.env),
        health_check=rev.health_check.model_dump() if rev.health_check else None,
        startup_timeout_seconds=rev.startup_timeout_seconds,
        drain_seconds=rev.drain_seconds,
        stop_grace_seconds=rev.stop_grace_seconds,
        label=rev.label,
        ports=tuple(rev.ports),
        resources=dict(rev.resources),
    )


def check_fits(rev: RevisionInput, capacity: Totals, *, prefix: str = "revision.") -> None:
    """Refuse a revision whose routes no node could ever hold (ValidationFailed naming the resource,
    `{prefix}resources.NAME`: "revision." in a deployment, "" for a revision posted alone)."""
    for name, need in sorted(rev.resources.items()):
        most = max((totals.get(name, 0) for totals in capacity.values()), default=0)
        if most == 0:
            raise ValidationFailed(
                f"{prefix}resources.{name}: the node has no {name} slots "
                f"(declare them with rollwise server --resources {name}=N)"
            )
        if need > most:
            raise ValidationFailed(f"{prefix}resources.{name}: needs {need} per route, the node has {most}")


@dataclass(frozen=True, slots=True)
class NodeUsage:
    """One node's slots as `GET /v1/capacity` shows them."""

    name: str
    total: dict[str, int]
    held: dict[str, int]
    free: dict[str, int]
    routes: builtins.list[tuple[RouteRecord, str]]
    """The routes that hold slots here, each with its deployment's name."""


class Operations:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        mark: Callable[..., None] = lambda *kinds: None,
        *,
        is_active: Callable[[], bool] = lambda: True,
        route_overlay: Callable[[Sequence[RouteRecord]], builtins.list[RouteRecord]] = list,
        capacity: Callable[[], Totals] = dict,
    ) -> None:
        """`route_overlay` turns stored route rows into what the route controller knows (changes the
        database refused are kept in its memory): reads never show a gone process as healthy.
        `capacity`: the runtime's node totals (node -> resource -> units), for validation, the dry run
        and `GET /v1/capacity`."""
        self.store = store
        self._capacity = capacity
        self.clock = clock
        self._mark = mark
        self._is_active = is_active
        self._overlay = route_overlay
        self.rollout_observers: builtins.list[Callable[[DeploymentRecord], None]] = []
        """Called with the deployment after each request that started a rollout (metrics count them)."""

    def _check_active(self) -> None:
        """Writes are taken only by the active server (a standby serves reads)."""
        if not self._is_active():
            raise NotActive("this server is a standby: send writes to the active rollwise server")

    # --- reads --------------------------------------------------------------------------------------

    async def get(self, name: str) -> DeploymentRecord:
        dep = await self.store.get_deployment(name)
        if dep is None or dep.lifecycle is Lifecycle.DESTROYED:
            raise NotFound(f"deployment {name!r} not found")
        return dep

    # From here on, `list` in a signature would name this method: signatures below say `builtins.list`.
    async def list(self) -> list[DeploymentRecord]:
        return [d for d in await self.store.list_deployments(None) if d.lifecycle is not Lifecycle.DESTROYED]

    async def page(
        self,
        *,
        after: int | None,
        limit: int,
        lifecycles: Collection[Lifecycle] | None = None,
        deploying: bool | None = None,
    ) -> tuple[builtins.list[DeploymentRecord], bool]:
        """One page of the deployments not destroyed, by id after `after` (Store.page_deployments), and
        whether more follow: one query of `limit + 1` rows."""
        found = await self.store.page_deployments(
            after=after, limit=limit + 1, lifecycles=lifecycles, deploying=deploying
        )
        return found[:limit], len(found) > limit

    async def routes(self, dep: DeploymentRecord) -> builtins.list[RouteRecord]:
        return self._overlay(await self.store.list_routes([dep.id]))

    async def routes_and_revisions(
        self, deps: Sequence[DeploymentRecord]
    ) -> dict[int, tuple[builtins.list[RouteRecord], builtins.list[RevisionRecord]]]:
        """Routes of many deployments and the revisions they run, in two queries whatever their number."""
        routes = self._overlay(await self.store.list_routes([d.id for d in deps])) if deps else []
        revisions = await self.store.load_revisions({(r.deployment_id, r.revision) for r in routes})
        out: dict[int, tuple[list[RouteRecord], list[RevisionRecord]]] = {d.id: ([], []) for d in deps}
        for r in routes:
            out[r.deployment_id][0].append(r)
        for (dep_id, _), rev in sorted(revisions.items()):
            out[dep_id][1].append(rev)
        return out

    async def revisions(self, name: str) -> builtins.list[RevisionRecord]:
        return await self.store.list_revisions((await self.get(name)).id)

    async def history(self, name: str, limit: int | None = None) -> builtins.list[HistoryRecord]:
        return await self.store.list_history((await self.get(name)).id, limit=limit)

    async def analysis(
        self, name: str, *, every_rollout: bool = False
    ) -> tuple[DeploymentRecord, builtins.list[MeasurementRecord], AnalysisTally]:
        """A deployment's canary analysis: (the deployment, its measurements oldest first, the counts of
        its current rollout). The measurements are the current rollout's (none before the first rollout),
        every rollout's with `every_rollout`. Three reads."""
        dep = await self.get(name)
        if dep.rollout_started_at is None and not every_rollout:
            return dep, [], NO_TALLY
        measured = await self.store.list_measurements(
            dep.id, rollout_started_at=None if every_rollout else dep.rollout_started_at
        )
        tally = (await self.store.analysis_counts([dep.id])).get(dep.id, NO_TALLY)
        return dep, measured, tally

    async def rollouts(self, name: str) -> builtins.list[RolloutRecord]:
        """The deployment's rollouts, oldest first (two reads)."""
        return await self.store.list_rollouts((await self.get(name)).id)

    async def timeline(self, name: str, rollout_id: int) -> Timeline:
        """One rollout of the deployment: its samples and its events (the history rows of its span, in
        words: control.rules.timeline). NotFound for a rollout of another deployment. Two reads."""
        dep = await self.get(name)
        found = await self.store.rollout_timeline(dep.id, rollout_id)
        if found is None:
            raise NotFound(f"deployment {name!r} has no rollout {rollout_id}")
        rollout, samples, rows = found
        return Timeline(rollout, samples, compute_events(rollout, rows))

    async def capacity(self) -> builtins.list[NodeUsage]:
        """Each node's slots: total, held (by every route that holds some, of any deployment), free,
        and the holders. Two reads (the holding routes, the deployments' names)."""
        totals = self._capacity()
        holding = self._overlay(await self.store.list_holding_routes())
        holding = [r for r in holding if r.holds and r.status in HOLDING]
        names = {d.id: d.name for d in await self.store.list_deployments(None)} if holding else {}
        room = Room.compute(totals, holding, {})
        nodes = builtins.list(totals) or []
        out = []
        for node in nodes:
            total = dict(totals[node])
            free = {name: max(0, room.free[node].get(name, 0)) for name in total}
            held = {name: total[name] - room.free[node].get(name, 0) for name in total}
            mine = [(r, names.get(r.deployment_id, str(r.deployment_id))) for r in holding
                    if r.node == node or (r.node is None and node == nodes[0])]
            out.append(NodeUsage(node, total, held, free, mine))
        return out

    # --- create, revisions, changes -----------------------------------------------------------------

    async def create(
        self, *, name: str, replicas: int, policy: Mapping[str, Any] | Policy | None, revision: Any
    ) -> DeploymentState:
        """Store a new deployment with its first revision (PENDING: the cycles bring it up)."""
        self._check_active()
        check_deployment_name(name)
        check_replicas(replicas)
        pol = policy if isinstance(policy, Policy) else parse_policy(dict(policy or {}))
        rev = revision if isinstance(revision, RevisionInput) else parse_revision(revision)
        check_fits(rev, self._capacity())
        try:
            # One write: a destroyed deployment of that name is deleted in it, a live one refuses it.
            dep, first = await self.store.create_deployment_and_revision(
                name=name, replicas=replicas, policy=pol, revision=to_revision_spec(rev), now=self.clock.now()
            )
        except AlreadyExists as e:
            raise AlreadyExists(f"deployment {name!r} already exists") from e
        self._mark(CycleKind.CHECK_PENDING)
        return DeploymentState(dep, [], [first])

    async def add_revision(self, name: str, revision: Any) -> RevisionRecord:
        self._check_active()
        dep = await self.get(name)
        rev = revision if isinstance(revision, RevisionInput) else parse_revision(revision)
        check_fits(rev, self._capacity(), prefix="")  # the endpoint's messages name the body's fields
        return await self.store.add_revision(dep.id, to_revision_spec(rev), self.clock.now())

    async def patch(
        self,
        name: str,
        *,
        replicas: int | None = None,
        policy: Mapping[str, Any] | Policy | None = None,
    ) -> DeploymentState:
        """Change the replica count and/or the policy. A mapping `policy` is merged into the current
        policy (fields left out keep their values) and the result validated as a whole, in the same
        read as the write, so concurrent patches of different fields never lose one another."""
        if replicas is not None:
            check_replicas(replicas)
        fields = None if policy is None or isinstance(policy, Policy) else dict(policy)

        def decide_patch(dep: DeploymentRecord, now: datetime) -> transitions.Transition:
            merged = policy if isinstance(policy, Policy) else None
            if fields is not None:
                base = dep.policy.to_json() if dep.policy is not None else {}
                merged = parse_policy({**base, **fields})
            return transitions.patch(dep, replicas=replicas, policy=merged, now=now)

        dep = await self._write(name, decide_patch)
        self._mark(CycleKind.CHECK_REPLICAS, CycleKind.SCALING, CycleKind.DEPLOYING)
        return await self._state(dep)

    # --- rollouts -----------------------------------------------------------------------------------

    async def activate(self, name: str, number: int, *, supersede: bool = False) -> DeploymentState:
        """Start a rollout to revision `number` (a no-op for the revision already serving or deploying)."""
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValidationFailed(f"revision: {number!r} is not a revision number")
        self._check_active()
        dep = await self.get(name)
        # The reply's routes are read with the revisions, at once (the activation changes no route).
        revisions, routes = await asyncio.gather(self.store.list_revisions(dep.id), self.store.list_routes([dep.id]))
        if not any(r.number == number for r in revisions):
            raise NotFound(f"deployment {name!r} has no revision {number}")
        dep = await self._write(
            name, lambda d, now: transitions.activate(d, number, supersede=supersede, now=now), read=dep
        )
        self._mark(CycleKind.DEPLOYING)
        return DeploymentState(dep, self._overlay(routes), revisions)

    async def undo(self, name: str) -> DeploymentState:
        """Activate the revision that served before the current one, as a new rollout (decided on the
        same read as the write: concurrent undos start one rollout, the others are refused)."""
        self._check_active()
        dep = await self.get(name)
        history = await self.store.list_history(dep.id)
        dep = await self._write(name, lambda d, now: transitions.undo(d, history, now), read=dep)
        self._mark(CycleKind.DEPLOYING)
        return await self._state(dep)

    async def promote(self, name: str, *, full: bool = False) -> DeploymentState:
        return await self._verb(name, lambda dep, now: transitions.promote(dep, now, full=full))

    async def pause(self, name: str) -> DeploymentState:
        return await self._verb(name, transitions.pause)

    async def resume(self, name: str) -> DeploymentState:
        return await self._verb(name, transitions.resume)

    async def abort(self, name: str) -> DeploymentState:
        return await self._verb(name, transitions.abort)

    async def actions(self, name: str) -> tuple[str, ...]:
        """The operator verbs that apply now (`transitions.applicable_verbs`: the rules the verbs
        themselves are decided by); none on a standby, which takes no writes. One read, two when no
        rollout runs (undo looks for the previous revision in the history)."""
        dep = await self.get(name)
        if not self._is_active():
            return ()
        history = await self.store.list_history(dep.id) if dep.lifecycle is not Lifecycle.DEPLOYING else []
        return transitions.applicable_verbs(dep, history, self.clock.now())

    async def destroy(self, name: str) -> DeploymentState:
        dep = await self._write(name, transitions.destroy)
        self._mark(CycleKind.DESTROYING)
        return await self._state(dep)

    # --- dry run --------------------------------------------------------------------------------------

    async def plan(self, name: str) -> Decision:
        """What the next cycle will decide for this deployment (no write)."""
        dep = await self.get(name)
        routes = await self.store.list_routes([dep.id])
        # The same reads as the cycles (`run_cycle`), so the plan is their decision: the revisions'
        # facts and what is free (every deployment's holding routes; this one's own included).
        keys = {(r.deployment_id, r.revision) for r in routes} | revisions_placed([dep])
        checks, needs = await self.store.revision_facts(keys)
        room = await read_room(self.store, self._capacity(), needs)
        now = self.clock.now()
        if dep.lifecycle is Lifecycle.DEPLOYING:
            if dep.policy is None:
                raise NotApplicable(f"deployment {name!r}: its policy cannot be evaluated")
            analysis = (await read_analysis(self.store, [dep])).get(dep.id, NO_ANALYSIS)
            view = replace(compute_deployment_view(dep, analysis), capacity=compute_target_view(room, dep))
            return decide(view, compute_route_views(routes, checks), dep.policy, now)
        if dep.lifecycle in (Lifecycle.READY, Lifecycle.SCALING):
            return describe_replicas_decision(dep, compute_replicas_decision(dep, routes, checks, now, room))
        raise NotApplicable(f"deployment {name!r} is {dep.lifecycle.value}: no cycle decision to show")

    # --- helpers ------------------------------------------------------------------------------------

    async def _verb(
        self, name: str, decide: Callable[[DeploymentRecord, datetime], transitions.Transition]
    ) -> DeploymentState:
        dep = await self._write(name, decide)
        self._mark(CycleKind.DEPLOYING)
        return await self._state(dep)

    async def _state(self, dep: DeploymentRecord) -> DeploymentState:
        """`dep` with its routes and the revisions they run (two reads)."""
        routes, revisions = (await self.routes_and_revisions([dep]))[dep.id]
        return DeploymentState(dep, routes, revisions)

    async def _write(
        self,
        name: str,
        decide: Callable[[DeploymentRecord, datetime], transitions.Transition],
        *,
        read: DeploymentRecord | None = None,
    ) -> DeploymentRecord:
        """Decide on the deployment as read and write the transition in one guarded transaction; when
        another writer got there first, read again and decide again. Returns the deployment as the
        write left it (or as read, when the transition changes nothing). `read`: the first attempt's
        read, when the caller has it already."""
        self._check_active()
        for _ in range(MAX_ATTEMPTS):
            dep = read if read is not None else await self.get(name)
            read = None
            now = self.clock.now()
            transition = decide(dep, now)
            if transition.is_empty:
                return dep
            update = DeploymentUpdate(deployment_id=dep.id, expected_version=dep.version, change=transition.change)
            result = await self.store.apply(ChangeSet(
                deployments=[update], history=list(transition.history),
                rollout_updates=list(transition.rollout_updates), new_rollouts=list(transition.new_rollouts),
            ), now, combine=True)  # written with the requests queued meanwhile (store.grouped)
            if dep.id in result.skipped:
                continue
            written = replace(transition.change.applied_to(dep), version=result.versions[dep.id],
                              updated_at=result.written_at or now)
            if transition.change.rollout_started_at is not UNSET:
                for observer in self.rollout_observers:
                    observer(written)
            return written
        raise RolloutInProgress(f"deployment {name!r} keeps changing; try again")
