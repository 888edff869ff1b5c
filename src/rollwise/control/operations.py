"""The operations layer: what an operator can ask of rollwise, with every rule that decides whether the
request applies now. The REST API and the CLI call these; nothing else writes deployments on behalf of
people.

Each write is one guarded transaction (`Store.apply`: the deployment's version must still be the one
read, and the write bumps it, so a cycle that read the old state skips that deployment); the history row
that records the request is part of the same transaction. Refusals raise the typed errors of
`control.errors` with a one-line message. After a write, the cycles that must act are marked needed.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rollwise.control.clock import Clock
from rollwise.control.cycles import CycleKind
from rollwise.control.deploying import strategy_words
from rollwise.control.lifecycle import compute_replicas_decision
from rollwise.control.views import compute_deployment_view, compute_route_views
from rollwise.model import Decision, Lifecycle, Mode, Policy, SubStep, StrategyName, ValidationFailed
from rollwise.model.policy import parse_policy
from rollwise.model.revision import RevisionInput, parse_revision
from rollwise.control.errors import AlreadyExists, NotActive, NotApplicable, NotFound, RolloutInProgress
from rollwise.store import Store
from rollwise.store.records import (
    ChangeSet,
    DeploymentRecord,
    DeploymentUpdate,
    HistoryRecord,
    NewHistory,
    RevisionRecord,
    RevisionSpec,
    RouteRecord,
)
from rollwise.strategy import decide

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_REPLICAS = 1000
_RETRIES = 5


def check_name(name: Any, *, field: str = "name") -> str:
    if not isinstance(name, str) or len(name) > 63 or not NAME_RE.match(name):
        raise ValidationFailed(
            f"{field}: {name!r} is not a DNS label (lower-case letters, digits and '-', at most 63, "
            "starting and ending with a letter or digit)"
        )
    return name


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
    )


class Operations:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        mark: Callable[..., None] = lambda *kinds: None,
        *,
        is_active: Callable[[], bool] = lambda: True,
        route_overlay: Callable[[Sequence[RouteRecord]], builtins.list[RouteRecord]] = list,
    ) -> None:
        """`route_overlay` turns stored route rows into what the route controller knows (changes the
        database refused are kept in its memory): reads never show a gone process as healthy."""
        self.store = store
        self.clock = clock
        self._mark = mark
        self._is_active = is_active
        self._overlay = route_overlay

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

    # --- create, revisions, changes -----------------------------------------------------------------

    async def create(
        self, *, name: str, replicas: int, policy: Mapping[str, Any] | Policy | None, revision: Any
    ) -> DeploymentRecord:
        self._check_active()
        check_name(name)
        check_replicas(replicas)
        pol = policy if isinstance(policy, Policy) else parse_policy(dict(policy or {}))
        rev = revision if isinstance(revision, RevisionInput) else parse_revision(revision)
        existing = await self.store.get_deployment(name)
        if existing is not None and existing.lifecycle is not Lifecycle.DESTROYED:
            raise AlreadyExists(f"deployment {name!r} already exists")
        if existing is not None:
            await self.store.purge_destroyed()
        try:
            dep = await self.store.create_deployment(
                name=name, replicas=replicas, policy=pol, revision=to_revision_spec(rev), now=self.clock.now()
            )
        except AlreadyExists as e:  # the name was taken between our check and the insert
            raise AlreadyExists(f"deployment {name!r} already exists") from e
        self._mark(CycleKind.CHECK_PENDING)
        return dep

    async def add_revision(self, name: str, revision: Any) -> RevisionRecord:
        self._check_active()
        dep = await self.get(name)
        rev = revision if isinstance(revision, RevisionInput) else parse_revision(revision)
        return await self.store.add_revision(dep.id, to_revision_spec(rev), self.clock.now())

    async def patch(
        self, name: str, *, replicas: int | None = None, policy: Mapping[str, Any] | Policy | None = None
    ) -> DeploymentRecord:
        if replicas is not None:
            check_replicas(replicas)
        pol = None
        if policy is not None:
            pol = policy if isinstance(policy, Policy) else parse_policy(dict(policy))

        def change(dep: DeploymentRecord) -> tuple[dict[str, Any], str | None]:
            self._refuse_gone(dep)
            ch: dict[str, Any] = {}
            words = []
            if replicas is not None and replicas != dep.replicas:
                ch["replicas"] = replicas
                words.append(f"replicas {dep.replicas} -> {replicas}")
            if pol is not None and pol != dep.policy:
                ch["policy"] = pol
                words.append(f"policy: {strategy_words(pol)}")
            return ch, ("changed " + ", ".join(words)) if words else None

        dep = await self._write(name, change)
        self._mark(CycleKind.CHECK_REPLICAS, CycleKind.SCALING, CycleKind.DEPLOYING)
        return dep

    # --- rollouts -----------------------------------------------------------------------------------

    async def activate(self, name: str, number: int, *, supersede: bool = False) -> DeploymentRecord:
        """Start a rollout to revision `number` (a no-op for the revision already serving or deploying)."""
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValidationFailed(f"revision: {number!r} is not a revision number")
        dep = await self.get(name)
        if await self.store.get_revision(dep.id, number) is None:
            raise NotFound(f"deployment {name!r} has no revision {number}")
        now = self.clock.now()

        def change(dep: DeploymentRecord) -> tuple[dict[str, Any], str | None]:
            self._refuse_gone(dep)
            if dep.lifecycle in (Lifecycle.PENDING, Lifecycle.SCALING):
                raise NotApplicable(
                    f"deployment {name!r} is still {dep.lifecycle.value}: activate a revision once it is ready"
                )
            if dep.lifecycle is Lifecycle.DEPLOYING:
                if number == dep.deploying_revision and dep.mode is Mode.FORWARD:
                    return {}, None
                if not supersede:
                    raise RolloutInProgress(
                        f"deployment {name!r}: rollout of revision {dep.deploying_revision} in progress "
                        "(pass supersede to replace it)"
                    )
                if number == dep.current_revision:
                    if dep.mode is Mode.ROLLING_BACK:
                        return {}, None
                    return {"abort_requested": True}, (
                        f"revision {number} activated while rolling out {dep.deploying_revision}: aborting"
                    )
                return _rollout_fields(number, now), (
                    f"{strategy_words(dep.policy)}: rollout of revision {number} started, "
                    f"superseding revision {dep.deploying_revision}"
                )
            if number == dep.current_revision:
                return {}, None
            return _rollout_fields(number, now), (
                f"{strategy_words(dep.policy)}: rollout of revision {number} started "
                f"(revision {dep.current_revision} serving)"
            )

        dep = await self._write(name, change, to_revision=number)
        self._mark(CycleKind.DEPLOYING)
        return dep

    async def undo(self, name: str) -> DeploymentRecord:
        """Activate the revision that served before the current one, as a new rollout."""
        self._check_active()
        dep = await self.get(name)
        if dep.lifecycle is Lifecycle.DEPLOYING:
            raise RolloutInProgress(f"deployment {name!r}: a rollout is in progress; abort it instead")
        previous = None
        for h in reversed(await self.store.list_history(dep.id)):
            if h.result == "success" and h.to_revision == dep.current_revision and h.from_revision is not None:
                if h.lifecycle_to is Lifecycle.READY and h.from_revision != dep.current_revision:
                    previous = h.from_revision
                    break
        if previous is None:
            raise NotApplicable(f"deployment {name!r}: no earlier revision has served, nothing to undo")
        return await self.activate(name, previous)

    async def promote(self, name: str) -> DeploymentRecord:
        def change(dep: DeploymentRecord) -> tuple[dict[str, Any], str | None]:
            self._refuse_not_deploying(dep, "promote")
            if dep.policy is None or dep.policy.strategy is not StrategyName.BLUE_GREEN:
                raise NotApplicable(f"deployment {name!r}: promote applies to blue-green rollouts only")
            if dep.sub_step is not SubStep.AWAITING_PROMOTION:
                state = dep.sub_step.value if dep.sub_step else "starting"
                raise NotApplicable(f"deployment {name!r}: nothing awaits promotion (rollout is {state})")
            return {"promote_requested": True}, "blue-green: promotion requested by an operator"

        return await self._verb(name, change)

    async def pause(self, name: str) -> DeploymentRecord:
        def change(dep: DeploymentRecord) -> tuple[dict[str, Any], str | None]:
            self._refuse_not_deploying(dep, "pause")
            if dep.paused:
                raise NotApplicable(f"deployment {name!r}: the rollout is already paused")
            return {"paused": True}, f"{strategy_words(dep.policy)}: paused by an operator"

        return await self._verb(name, change)

    async def resume(self, name: str) -> DeploymentRecord:
        now = self.clock.now()

        def change(dep: DeploymentRecord) -> tuple[dict[str, Any], str | None]:
            if dep.lifecycle is not Lifecycle.DEPLOYING or not dep.paused:
                raise NotApplicable(f"deployment {name!r}: no paused rollout to resume")
            return (
                {"paused": False, "last_progress_at": now},
                f"{strategy_words(dep.policy)}: resumed by an operator",
            )

        return await self._verb(name, change)

    async def abort(self, name: str) -> DeploymentRecord:
        def change(dep: DeploymentRecord) -> tuple[dict[str, Any], str | None]:
            self._refuse_not_deploying(dep, "abort")
            if dep.abort_requested:
                return {}, None
            return {"abort_requested": True}, f"{strategy_words(dep.policy)}: abort requested by an operator"

        return await self._verb(name, change)

    async def destroy(self, name: str) -> DeploymentRecord:
        def change(dep: DeploymentRecord) -> tuple[dict[str, Any], str | None]:
            if dep.lifecycle is Lifecycle.DESTROYING:
                return {}, None
            return (
                {"lifecycle": Lifecycle.DESTROYING, "deploying_revision": None, "mode": Mode.FORWARD},
                "destroy requested: routes will drain and stop",
            )

        dep = await self._write(name, change, lifecycle_change=Lifecycle.DESTROYING)
        self._mark(CycleKind.DESTROYING)
        return dep

    # --- dry run --------------------------------------------------------------------------------------

    async def plan(self, name: str) -> Decision:
        """What the next cycle will decide for this deployment (no write)."""
        dep = await self.get(name)
        routes = await self.store.list_routes([dep.id])
        # The same read of the revisions as the cycles (`run_cycle`), so the plan is their decision.
        checks = await self.store.health_check_flags({(r.deployment_id, r.revision) for r in routes})
        now = self.clock.now()
        if dep.lifecycle is Lifecycle.DEPLOYING:
            if dep.policy is None:
                raise NotApplicable(f"deployment {name!r}: its policy cannot be evaluated")
            return decide(compute_deployment_view(dep), compute_route_views(routes, checks), dep.policy, now)
        if dep.lifecycle in (Lifecycle.READY, Lifecycle.SCALING):
            return compute_replicas_decision(dep, routes, checks, now)
        raise NotApplicable(f"deployment {name!r} is {dep.lifecycle.value}: no cycle decision to show")

    # --- helpers ------------------------------------------------------------------------------------

    def _refuse_gone(self, dep: DeploymentRecord) -> None:
        if dep.lifecycle in (Lifecycle.DESTROYING, Lifecycle.DESTROYED):
            raise NotApplicable(f"deployment {dep.name!r} is being destroyed")

    def _refuse_not_deploying(self, dep: DeploymentRecord, verb: str) -> None:
        if dep.lifecycle is not Lifecycle.DEPLOYING:
            raise NotApplicable(f"deployment {dep.name!r}: no rollout in progress to {verb}")
        if dep.mode is Mode.ROLLING_BACK:
            raise NotApplicable(f"deployment {dep.name!r}: the rollout is already rolling back")

    async def _verb(
        self, name: str, change: Callable[[DeploymentRecord], tuple[dict[str, Any], str | None]]
    ) -> DeploymentRecord:
        dep = await self._write(name, change)
        self._mark(CycleKind.DEPLOYING)
        return dep

    async def _write(
        self,
        name: str,
        change: Callable[[DeploymentRecord], tuple[dict[str, Any], str | None]],
        *,
        to_revision: int | None = None,
        lifecycle_change: Lifecycle | None = None,
    ) -> DeploymentRecord:
        """Read, compute the change, write it guarded by the version read; retry on a race."""
        self._check_active()
        for _ in range(_RETRIES):
            dep = await self.get(name)
            changes, message = change(dep)
            if not changes:
                return dep
            now = self.clock.now()
            changes = dict(changes)
            policy = changes.pop("policy", None)
            expected = dep.version
            if policy is not None:
                # The policy lives in its own table: written first, guarded by the same version.
                updated = await self.store.update_policy(dep.id, policy, now, expected_version=expected)
                if updated is None:
                    continue
                expected = updated.version
            history = []
            if message:
                history.append(
                    NewHistory(
                        deployment_id=dep.id,
                        lifecycle_from=dep.lifecycle,
                        lifecycle_to=changes.get("lifecycle", dep.lifecycle),
                        sub_step=changes.get("sub_step", dep.sub_step),
                        result="operator",
                        message=message,
                        strategy=str(dep.policy.strategy) if dep.policy else None,
                        from_revision=dep.current_revision,
                        to_revision=to_revision if to_revision is not None else dep.deploying_revision,
                        error=None,
                        at=now,
                    )
                )
            result = await self.store.apply(
                ChangeSet(
                    deployments=[DeploymentUpdate(deployment_id=dep.id, expected_version=expected, changes=changes)],
                    new_routes=[],
                    route_updates=[],
                    history=history,
                ),
                now,
            )
            if dep.id not in result.skipped:
                return await self.get(name) if lifecycle_change is not Lifecycle.DESTROYED else dep
        raise RolloutInProgress(f"deployment {name!r} keeps changing; try again")


def _rollout_fields(number: int, now: datetime) -> dict[str, Any]:
    return {
        "lifecycle": Lifecycle.DEPLOYING,
        "deploying_revision": number,
        "sub_step": SubStep.PROVISIONING,
        "mode": Mode.FORWARD,
        "paused": False,
        "abort_requested": False,
        "promote_requested": False,
        "rollout_started_at": now,
        "last_progress_at": now,
        "rollback_reason": None,
        "error_count": 0,
        "last_error": None,
    }
