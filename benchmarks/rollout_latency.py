"""Rolling-rollout latency against its physical floor, with real processes and Traefik.

Example model servers start with a fixed delay (`--startup-delay`). A rolling update cannot finish
faster than the number of startup waves its settings force times that delay; the waves are counted by
running the strategy engine itself with routes that become ready instantly. The benchmark measures the
real rollout's wall time (activate -> READY) and prints the overhead ratio wall / floor, and the median
delay between a route turning ready (route controller pass) and the next deploying cycle that acts.

    .venv/bin/python benchmarks/rollout_latency.py [--replicas 4] [--max-surge 1] [--max-unavailable 0]
        [--startup-delay 1.0] [--runs 2] [--runtime local|ray]

`--runtime ray` runs the same rollouts with routes as Ray actors (`rollwise[ray]`) on a one-node local Ray
cluster the script starts on 127.0.0.1, and also measures `rollwise server` itself with each runtime (the
same run): seconds from spawning it to `/healthz` saying active, and its RSS when idle and with the
deployment ready (the Ray runtime's server process holds Ray's core worker; the cluster's own processes
are not counted).

The last line printed is JSON. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
    config = ServerConfig(data_dir=data_dir, proxy_port=free_port(), intervals=Intervals(short=0.01, long=5, routes=0.05),
                          runtime=args.runtime, ray_address=args.ray_address)
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


async def measure_ray_boot(address: str, samples: int = 3) -> float:
    """Median seconds from asking the Ray runtime for a route (actor created and placed, the example server
    spawned by it, no startup delay) to the route's port accepting: the Ray runtime's per-route floor."""
    import socket

    from rollwise.runtime.base import LaunchSpec
    from rollwise.runtime.ray import RayRuntime

    runtime = RayRuntime(address)
    times = []
    try:
        for i in range(samples):
            spec = LaunchSpec(route_id=f"boot{i}", deployment="boot", revision=1,
                              command=tuple(revision("boot", 0.0)["command"]), env={})
            t = time.monotonic()
            handle = await runtime.start(spec)
            host, port = handle.address.rsplit(":", 1)
            while time.monotonic() - t < 30:
                try:
                    socket.create_connection((host, int(port)), timeout=0.1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.005)
            times.append(time.monotonic() - t)
            await runtime.stop(handle, grace_seconds=3)
    finally:
        await runtime.close()
    return statistics.median(times)


RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
"""Keep 127.0.0.1 as given (not the machine's other interface); no cluster token for a local test cluster."""


@contextlib.contextmanager
def ray_cluster() -> Iterator[str]:
    """A one-node Ray cluster on 127.0.0.1 (short RAY_TMPDIR: Ray's socket paths must stay short)."""
    os.environ.update(RAY_ENV)
    tmp = tempfile.mkdtemp(prefix="rwbench", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    try:
        yield str(cluster.address)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def measure_server(runtime: str, ray_address: str | None, replicas: int) -> dict[str, float]:
    """`rollwise server --runtime RUNTIME`: seconds to healthy (active), RSS idle and with `replicas` ready."""
    import httpx

    rollwise = str(Path(sys.executable).with_name("rollwise"))
    with tempfile.TemporaryDirectory(prefix="rollwise-bench-") as tmp:
        api = free_port()
        args = [rollwise, "server", "--data-dir", f"{tmp}/data", "--api-port", str(api), "--proxy-port",
                str(free_port()), "--token", "bench", "--runtime", runtime]
        if ray_address:
            args += ["--ray-address", ray_address]
        t0 = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, **RAY_ENV})
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{api}", headers={"Authorization": "Bearer bench"}) as c:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"rollwise server --runtime {runtime} exited ({proc.returncode})")
                    try:
                        if c.get("/healthz", timeout=1).json().get("role") == "active":
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.02)
                start = time.monotonic() - t0
                idle = rss_mb(proc.pid)
                c.post("/v1/deployments", json={"name": "rss", "replicas": replicas,
                                                "revision": revision("v1", 0.0)}).raise_for_status()
                while c.get("/v1/deployments/rss").json()["lifecycle"] != "ready":
                    time.sleep(0.1)
                loaded = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {"start_seconds": round(start, 2), "rss_idle_mb": idle, "rss_ready_mb": loaded}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--max-surge", default="1")
    p.add_argument("--max-unavailable", default="0")
    p.add_argument("--startup-delay", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--runtime", choices=("local", "ray"), default="local")
    args = p.parse_args()
    args.ray_address = None
    if args.runtime == "ray":
        with ray_cluster() as address:
            args.ray_address = address
            await measure(args)
    else:
        await measure(args)


async def measure(args: argparse.Namespace) -> None:
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
    boot = await measure_ray_boot(args.ray_address) if args.runtime == "ray" else measure_boot()
    floor_with_boot = waves * (args.startup_delay + boot)
    what = "route boot on Ray (actor placed, process spawned, port open)" if args.runtime == "ray" else \
        "process boot (python + imports, no delay)"
    print(f"{what} {boot:.2f}s; floor including boot {floor_with_boot:.2f}s: "
          f"overhead ratio {wall / floor_with_boot:.2f}")
    median_delay = statistics.median(delays) if delays else None
    print(f"median rollout {wall:.2f}s vs floor {floor:.2f}s: overhead ratio {wall / floor:.2f}; "
          f"median ready->next-cycle delay {median_delay * 1000 if median_delay is not None else float('nan'):.0f} ms")
    servers = {}
    if args.runtime == "ray":
        servers = {name: measure_server(name, args.ray_address if name == "ray" else None, args.replicas)
                   for name in ("local", "ray")}
        for name, figures in servers.items():
            print(f"rollwise server --runtime {name}: healthy after {figures['start_seconds']:.2f}s, RSS "
                  f"{figures['rss_idle_mb']:.0f} MB idle, {figures['rss_ready_mb']:.0f} MB with "
                  f"{args.replicas} routes ready")
    print(json.dumps({"runtime": args.runtime, "replicas": args.replicas, "policy": policy, "waves": waves, "startup_delay": args.startup_delay,
                      "floor_seconds": floor, "wall_seconds": round(wall, 3), "overhead_ratio": round(wall / floor, 3),
                      "process_boot_seconds": round(boot, 3),
                      "overhead_ratio_with_boot": round(wall / floor_with_boot, 3),
                      "median_ready_to_cycle_seconds": round(median_delay, 4) if median_delay is not None else None,
                      **({"servers": servers} if servers else {})}))


if __name__ == "__main__":
    asyncio.run(main())
