"""Time-driven steps happen on time: a blue-green rollout waiting for its auto-promotion delay is
promoted when the delay passes, not on the coordinator's long interval (set to a minute here)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rollwise.cli.serve import ServerConfig, build_plane, running
from rollwise.control.coordinator import Intervals
from rollwise.model import Lifecycle, SubStep

REVISION = {"command": ["simulated"], "health_check": {"path": "/healthz", "interval_seconds": 0.1}}


async def wait_for(ops, pred, timeout: float) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        dep = await ops.get("bg")
        if pred(dep):
            return dep
        assert time.monotonic() < deadline, f"still {dep.lifecycle} / {dep.sub_step}"
        await asyncio.sleep(0.05)


async def test_auto_promotion_happens_when_its_delay_passes(tmp_path: Path) -> None:
    config = ServerConfig(
        data_dir=tmp_path, runtime="simulated", proxy=False, intervals=Intervals(short=0.01, long=60, routes=0.05)
    )
    async with build_plane(config) as plane, running(plane):
        ops = plane.ops
        await ops.create(name="bg", replicas=2, revision=REVISION,
                         policy={"strategy": "blue_green", "auto_promote": True, "promote_delay_seconds": 1})
        await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, 10)
        await ops.add_revision("bg", REVISION)
        await ops.activate("bg", 2)
        await wait_for(ops, lambda d: d.sub_step is SubStep.AWAITING_PROMOTION, 10)
        dep = await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, 10)  # far below the 60 s interval
        assert dep.current_revision == 2 and dep.sub_step is SubStep.COMPLETED
