"""Rolling-rollout latency against its physical floor, with real processes and Traefik.

Example model servers start with a fixed delay (`--startup-delay`). A rolling update cannot finish
faster than the number of startup waves its settings force times that delay; the waves are counted by
running the strategy engine itself with routes that become ready instantly. The benchmark measures the
real rollout's wall time (activate -> READY) and prints the overhead ratio wall / floor, and the median
delay between a route turning ready (route controller pass) and the next deploying cycle that acts.

    .venv/bin/python benchmarks/rollout_latency.py [--replicas 4] [--max-surge 1] [--max-unavailable 0]
        [--startup-delay 1.0] [--runs 2]

The last line printed is JSON. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rollwise.cli.demo import free_port
from rollwise.cli.serve import ServerConfig, build_plane, running
from rollwise.control.coordinator import Intervals
from rollwise.control.cycles import CycleKind, CycleReport
from rollwise.control.route_controller import RoutePassReport
from rollwise.model import (
    DeploymentView, Health, Lifecycle, Mode, Policy, RouteStatus, RouteView, SubStep, Traffic,
)
from rollwise.strategy import decide


def count_waves(replicas: int, policy: Policy) -> int:
    """Startup waves a rolling update needs when every created route is ready one wave later."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    routes = [
        RouteView(f"o{i}", "1", RouteStatus.RUNNING, Health.HEALTHY, Traffic.ACTIVE, 1.0, True, False, now, now)
        for i in range(replicas)
    ]
    view = DeploymentView(replicas, "1", "2", Mode.FORWARD, last_progress_at=now)
    waves, n = 0, 0
    for _ in range(10_000):
        d = decide(view, routes, policy, now)
        if d.sub_step is SubStep.COMPLETED:
            return waves
        gone = set(d.terminate)
        routes = [r for r in routes if r.id not in gone]
        if d.create:
            waves += 1
        for c in d.create:
            n += 1
            routes.append(RouteView(f"n{n}", "2", RouteStatus.RUNNING, Health.HEALTHY, Traffic.ACTIVE, 1.0, True,
                                    False, now, now))
    raise RuntimeError("the rollout did not complete")


def revision(label: str, delay: float) -> dict:
    return {
        "command": [sys.executable, "-m", "rollwise.examples.model_server", "--port", "{port}", "--version", label,
                    "--startup-delay", str(delay)],
        "health_check": {"path": "/healthz", "interval_seconds": 0.1, "timeout_seconds": 1},
        "startup_timeout_seconds": 30,
        "drain_seconds": 0.1,
        "stop_grace_seconds": 3,
        "label": label,
    }


async def one_run(args: argparse.Namespace, policy: dict, data_dir: Path) -> tuple[float, list[float]]:
    config = ServerConfig(data_dir=data_dir, proxy_port=free_port(), intervals=Intervals(short=0.01, long=5, routes=0.05))
    ready_times: list[float] = []
    act_times: list[float] = []
    async with build_plane(config) as plane:
        def on_routes(report: RoutePassReport) -> None:
            if report.became_ready:
                ready_times.append(time.monotonic())

        def on_cycle(report: CycleReport, seconds: float) -> None:
            if report.kind is CycleKind.DEPLOYING and (report.created_routes or report.terminated_routes or report.lifecycle_changes):
                act_times.append(time.monotonic())

        plane.coordinator.route_observers.append(on_routes)
        plane.coordinator.observers.append(on_cycle)
        async with running(plane):
            ops = plane.ops
            await ops.create(name="bench", replicas=args.replicas, policy=policy, revision=revision("v1", args.startup_delay))
            while (await ops.get("bench")).lifecycle is not Lifecycle.READY:
                await asyncio.sleep(0.05)
            rev = await ops.add_revision("bench", revision("v2", args.startup_delay))
            ready_times.clear()
            act_times.clear()
            t0 = time.monotonic()
            await ops.activate("bench", rev.number)
            while (await ops.get("bench")).lifecycle is not Lifecycle.READY:
                await asyncio.sleep(0.01)
            wall = time.monotonic() - t0
    delays = []
    for t in ready_times:
        after = [a - t for a in act_times if a >= t]
        if after:
            delays.append(min(after))
    return wall, delays


def measure_boot(samples: int = 3) -> float:
    """Median seconds from spawning the example server (no startup delay) to its port accepting."""
    import socket
    import subprocess

    times = []
    for _ in range(samples):
        port = free_port()
        t = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollwise.examples.model_server", "--port", str(port), "--version", "boot"],
            stderr=subprocess.DEVNULL,
        )
        try:
            while time.monotonic() - t < 10:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.005)
            times.append(time.monotonic() - t)
        finally:
            proc.terminate()
            proc.wait()
    return statistics.median(times)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--max-surge", default="1")
    p.add_argument("--max-unavailable", default="0")
    p.add_argument("--startup-delay", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args()
    conv = lambda v: int(v) if v.isdigit() else v  # noqa: E731
    policy = {"strategy": "rolling", "max_surge": conv(args.max_surge), "max_unavailable": conv(args.max_unavailable)}
    waves = count_waves(args.replicas, Policy.model_validate(policy))
    floor = waves * args.startup_delay
    walls, delays = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="rollwise-bench-") as tmp:
            wall, d = await one_run(args, policy, Path(tmp))
        walls.append(wall)
        delays.extend(d)
        print(f"run {i + 1}: rollout {wall:.2f}s, floor {floor:.2f}s ({waves} waves x {args.startup_delay:g}s), "
              f"overhead x{wall / floor:.2f}", flush=True)
    wall = statistics.median(walls)
    boot = measure_boot()
    floor_with_boot = waves * (args.startup_delay + boot)
    print(f"process boot (python + imports, no delay) {boot:.2f}s; floor including boot {floor_with_boot:.2f}s: "
          f"overhead ratio {wall / floor_with_boot:.2f}")
    median_delay = statistics.median(delays) if delays else None
    print(f"median rollout {wall:.2f}s vs floor {floor:.2f}s: overhead ratio {wall / floor:.2f}; "
          f"median ready->next-cycle delay {median_delay * 1000 if median_delay is not None else float('nan'):.0f} ms")
    print(json.dumps({"replicas": args.replicas, "policy": policy, "waves": waves, "startup_delay": args.startup_delay,
                      "floor_seconds": floor, "wall_seconds": round(wall, 3), "overhead_ratio": round(wall / floor, 3),
                      "process_boot_seconds": round(boot, 3),
                      "overhead_ratio_with_boot": round(wall / floor_with_boot, 3),
                      "median_ready_to_cycle_seconds": round(median_delay, 4) if median_delay is not None else None}))


if __name__ == "__main__":
    asyncio.run(main())
