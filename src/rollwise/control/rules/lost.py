"""Routes lost with their node (pure): the words the route controller writes, and the history row that
says so once.

A runtime that spans machines (the Ray runtime) reports a route whose node went away as *lost*
(`runtime.base.ExitReport.lost`); the route controller then marks it terminated — not failed, so a node's
loss never counts against the revision (no rollback, no crash-loop back-off) — with a detail starting with
`LOST`. The strategies see one ready route fewer and replace it like any other missing replica, where
capacity allows. `note_lost_routes` gives the deployment's next cycle one history row naming the lost
routes, and in the same write turns each one's detail prefix into `LOST_NOTED`, so the row is written
once.

Called by control.rules.lifecycle (READY/SCALING) and control.rules.deploying. Must not do I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rollwise.control.rules import transitions
from rollwise.control.rules.transitions import Transition
from rollwise.model import RouteStatus
from rollwise.store.commands import RouteUpdate
from rollwise.store.records import DeploymentRecord, RouteRecord

LOST = "lost with its node"
"""How a lost route's detail starts (written by the route controller)."""
LOST_NOTED = "lost with its node, noted"
"""How it starts once the history row names it."""


def newly_lost(routes: Sequence[RouteRecord]) -> list[RouteRecord]:
    return sorted(
        (r for r in routes if r.status is RouteStatus.TERMINATED and not r.failed and r.detail is not None
         and r.detail.startswith(LOST) and not r.detail.startswith(LOST_NOTED)),
        key=lambda r: r.id,
    )


def note_lost_routes(
    dep: DeploymentRecord, routes: Sequence[RouteRecord], now: datetime
) -> tuple[Transition, list[RouteUpdate]] | None:
    """The history row ("node lost: 2 routes terminated (r2 a1b2, r2 c3d4 on node 5f3e…); replacing them as
    capacity allows") and the route updates that mark them noted; None when no route is newly lost."""
    lost = newly_lost(routes)
    if not lost:
        return None
    nodes = sorted({r.node for r in lost if r.node})
    where = f" on node {', '.join(n[:12] for n in nodes)}" if nodes else ""
    names = ", ".join(f"r{r.revision} {r.id}" for r in lost)
    count = f"{len(lost)} route{'s' if len(lost) != 1 else ''}"
    row = transitions.record(
        dep, now, result="failure",
        message=f"node lost: {count} terminated ({names}{where}); replacing them as capacity allows",
        to_revision=dep.deploying_revision or dep.current_revision,
    )
    noted = [RouteUpdate(id=r.id, deployment_id=dep.id, detail=LOST_NOTED + (r.detail or "")[len(LOST):])
             for r in lost]
    return row, noted
