"""Routes lost with their node (a cluster runtime's ExitReport.lost): terminated, not failed, so the loss
never counts against the revision (no crash-loop back-off, no rollback); replaced like any missing
replica; one history row says so."""

from __future__ import annotations

from datetime import timedelta

from rollwise.control.rules.lost import LOST
from rollwise.model import Lifecycle, Mode, RouteStatus

from .harness import MAX_ROUNDS, Scenario, is_ready


async def test_a_lost_route_in_ready_is_replaced_at_once_and_noted_once(sc: Scenario) -> None:
    await sc.ready(replicas=3)
    victim = (await sc.alive())[0]
    sc.runtime.lose(victim.id)
    await sc.run_until_sample("svc", lambda s: victim.id not in s.route_ids and s.serving == 3)
    lost = next(r for r in await sc.routes() if r.id == victim.id)
    assert lost.status is RouteStatus.TERMINATED and not lost.failed
    assert lost.detail is not None and lost.detail.startswith(LOST) and "its node was lost" in lost.detail
    dep = await sc.dep()
    assert dep.lifecycle is Lifecycle.READY and dep.last_error is None  # not a failure of the revision
    replacement = max(await sc.routes(), key=lambda r: r.created_at)
    # A crashed route is replaced after the 1 s back-off; a lost one at the next cycle.
    assert replacement.created_at - lost.status_updated_at < timedelta(seconds=1)
    await sc.steps(5)
    notes = [h for h in await sc.history() if h.message.startswith("node lost:")]
    assert len(notes) == 1 and notes[0].attempts == 1, [(h.message, h.attempts) for h in notes]
    assert f"r1 {victim.id}" in notes[0].message


async def test_routes_lost_mid_rollout_do_not_roll_it_back(sc: Scenario) -> None:
    await sc.ready(replicas=3, policy={"strategy": "rolling", "max_surge": 1, "max_unavailable": 0})
    await sc.start_rollout()
    for _ in range(MAX_ROUNDS):
        new = [r for r in await sc.routes() if r.revision == 2 and r.status is RouteStatus.RUNNING]
        if new:
            break
        await sc.step()
    assert new, "no route of revision 2 ran"
    for r in new:
        sc.runtime.lose(r.id)
    dep = await sc.run_until("svc", is_ready)
    assert dep.current_revision == 2 and dep.mode is Mode.FORWARD and dep.rollback_reason is None
    history = await sc.history()
    assert not any("roll" in h.message and "back" in h.message for h in history), [h.message for h in history]
    assert sum(h.message.startswith("node lost:") for h in history) == 1
