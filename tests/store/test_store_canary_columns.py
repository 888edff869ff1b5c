"""The canary columns of a deployment (migration 0004) on both backends: written by a guarded update,
read back as the record's typed fields, cleared again."""

from __future__ import annotations

from datetime import timedelta

from rollwise.store import DeploymentChange, DeploymentUpdate, Store

from .helpers import NOW, make_deployments, update_one


async def test_canary_columns_round_trip(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    assert (dep.canary_step, dep.step_started_at, dep.traffic_weights, dep.promote_full_requested) == (
        0, None, None, False)
    later = NOW + timedelta(seconds=5)
    change = DeploymentChange(canary_step=2, step_started_at=later, traffic_weights={1: 90, 2: 10},
                              promote_full_requested=True)
    written = await update_one(store, DeploymentUpdate(deployment_id=dep.id, expected_version=dep.version,
                                                        change=change), later)
    assert written is not None
    assert (written.canary_step, written.step_started_at, written.promote_full_requested) == (2, later, True)
    assert written.traffic_weights == {1: 90, 2: 10}
    cleared = await update_one(store, DeploymentUpdate(
        deployment_id=dep.id, expected_version=written.version,
        change=DeploymentChange(canary_step=0, step_started_at=None, traffic_weights=None,
                                promote_full_requested=False)), later)
    assert cleared is not None
    assert (cleared.canary_step, cleared.step_started_at, cleared.traffic_weights,
            cleared.promote_full_requested) == (0, None, None, False)
