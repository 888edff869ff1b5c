"""What is free on the runtime's nodes during one cycle, and P for each deployment (pure).

docs/strategies.md, "Capacity": a route holds its revision's `resources` from the cycle that creates it
until its process has exited (statuses provisioning, running and terminating hold; terminated and
failed_to_start do not). A cycle builds one `Room` from the runtime's node totals and every holding
route of every deployment, then visits its deployments in id order: `view` gives a deployment's P for its
target revision, and `take` subtracts what its decision creates before the next deployment is looked at,
so two deployments never plan the same free device.

P = over the nodes, the sum of min over the needed resources of floor(free / need); a revision that
needs nothing is unlimited (`UNLIMITED`). Routes are charged to the node they run on; a route that has
not started yet (no node) is charged to the first node where it fits, as the runtime would place it.

Called by control.cycles and control.operations (dry run, capacity read). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rollwise.model import UNLIMITED, CapacityView, Decision, Mode
from rollwise.store.records import DeploymentRecord, RouteRecord

from rollwise.strategy.messages import CAPACITY_WAIT

Totals = Mapping[str, Mapping[str, int]]
"""node name -> resource -> units (the runtime's `capacity()`)."""


@dataclass
class Room:
    free: dict[str, dict[str, int]]
    """node -> resource -> free units now (may go below zero when a node was over-committed: a restart
    with fewer slots than routes hold)."""
    needs: Mapping[tuple[int, int], Mapping[str, int]] = field(default_factory=dict)
    """(deployment id, revision number) -> what one route needs; absent = nothing."""

    @classmethod
    def compute(
        cls, totals: Totals, holding: Iterable[RouteRecord], needs: Mapping[tuple[int, int], Mapping[str, int]]
    ) -> Room:
        room = cls({node: dict(t) for node, t in totals.items()}, needs)
        for r in sorted(holding, key=lambda r: r.node is None):  # placed routes first
            if r.holds:
                room.take(r.holds, 1, node=r.node)
        return room

    def need_of(self, deployment_id: int, revision: int | None) -> Mapping[str, int]:
        if revision is None:
            return {}
        return self.needs.get((deployment_id, revision), {})

    def view(self, need: Mapping[str, int]) -> CapacityView:
        """P for routes that each need `need`, with the words of the reasons."""
        need = {name: n for name, n in need.items() if n > 0}
        if not need:
            return UNLIMITED
        placeable = sum(_fits(free, need) for free in self.free.values())
        free = {name: max(0, sum(f.get(name, 0) for f in self.free.values())) for name in need}
        return CapacityView(placeable=placeable, need=need, free=free)

    def take(self, need: Mapping[str, int], count: int = 1, *, node: str | None = None) -> None:
        """Charge `count` routes that each need `need`: to `node` when known, else where they fit."""
        need = {name: n for name, n in need.items() if n > 0}
        if not need or not self.free:
            return
        for _ in range(count):
            where = node if node in self.free else next(
                (n for n, free in self.free.items() if _fits(free, need) > 0), next(iter(self.free))
            )
            for name, n in need.items():
                self.free[where][name] = self.free[where].get(name, 0) - n

    def as_totals(self) -> dict[str, dict[str, int]]:
        return {node: dict(free) for node, free in self.free.items()}


NO_ROOM = Room({})
"""A cycle whose deployments need nothing: every P is unlimited (`view` of an empty need)."""


def target_revision(dep: DeploymentRecord) -> int | None:
    """The revision a cycle places routes of: the one rolling out, or while rolling back (and outside a
    rollout) the serving one."""
    if dep.deploying_revision is not None and dep.mode is Mode.FORWARD:
        return dep.deploying_revision
    return dep.current_revision


def compute_target_view(room: Room, dep: DeploymentRecord) -> CapacityView:
    return room.view(room.need_of(dep.id, target_revision(dep)))


def _fits(free: Mapping[str, int], need: Mapping[str, int]) -> int:
    return max(0, min(free.get(name, 0) // n for name, n in need.items()))


def is_capacity_wait(decision: Decision) -> bool:
    """Whether the decision waits for room on the nodes (freed by other deployments' routes)."""
    return CAPACITY_WAIT.partition(":")[0] in decision.reason
