"""The demo's three rollouts on a saturated machine: busy loops keep every core busy (3 per core by
default) while `rollwise demo`'s work runs, once with the example model server and once with MLServer
(when its virtualenv is set up).

    .venv/bin/python benchmarks/pressure.py [--server example|mlserver|both] [--busy-per-core 3]
        [--rate 100] [--replicas 3] [--setup-mlserver] [--rollout-timeout 300]
        [--shared-session] [--history] [--keep]

Each run is the demo's (cli.demo_run.run_demo, an in-process plane with Traefik and real route
processes): the model at v1 x replicas, traffic through the proxy, v2 rolling, v3 blue-green with
auto-promotion, a broken v4 that the failure budget rolls back. Per run it prints the per-rollout table,
where failed requests fell (if any; then also the deployment's history and the kept data directory with
the route logs), one JSON line of figures (requests, failed, the rate achieved, latency percentiles,
load average and CPU busy share over the run, the CPU the benchmark process itself got (plane, load
generator and live view: cores' worth), the event loop's lag, the time between the coordinator's
route passes and its cycles' durations, per-rollout seconds as the demo
measures them (activate -> seen ready) and by the deployment's history), then the demo's line `demo: 3 rollouts,
N requests, F failed`; the last line printed is that line of the last run. Exit status 0 only when every
run had no failed request and every rollout ended as planned.

Busy loops are `sys.executable -c` spinners at normal priority, each in a session of its own (like
unrelated busy programs; `--shared-session` keeps them in the benchmark's, see `busy_loops`), started
before the first run and stopped at the end (also on an error or Ctrl-C; a spinner whose parent is gone
stops by itself).

MLServer lives in its own virtualenv, benchmarks/.venv-mlserver, built from
benchmarks/mlserver-requirements.txt by `--setup-mlserver` (when missing or when the requirements
changed; ~1 minute); without it the MLServer run is skipped with one line. The models (scikit-learn
iris, LogisticRegression) are trained with that venv's python into a temporary folder. Traffic stays
on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from rollwise.cli.demo_run import EXAMPLE, DemoReport, Workload, print_rollouts, run_demo
from rollwise.cli.serve import Plane
from rollwise.control.cycles import CycleReport
from rollwise.control.route_controller import RoutePassReport

HERE = Path(__file__).resolve().parent
MLSERVER_VENV = HERE / ".venv-mlserver"
REQUIREMENTS = HERE / "mlserver-requirements.txt"
STAMP = MLSERVER_VENV / ".installed"
"""Holds the sha256 of the requirements file the venv was built from."""

# Spins at 100% of one core; checks now and then (every ~10-30 ms) that its parent still lives, so a
# spinner never outlives a benchmark killed with SIGKILL.
SPINNER = (
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    for _ in range(200_000):\n"
    "        pass\n"
)

TRAIN = (
    "import sys, joblib\n"
    "from sklearn.datasets import load_iris\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "X, y = load_iris(return_X_y=True)\n"
    "joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), sys.argv[1])\n"
)

VERSIONS = (
    "import importlib.metadata as m\n"
    "names = ('mlserver', 'mlserver-sklearn', 'scikit-learn', 'fastapi', 'starlette', 'uvloop', 'uvicorn')\n"
    "print(' '.join(f'{p} {m.version(p)}' for p in names))\n"
)

IRIS_BODY = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}


# --- busy loops and machine figures -------------------------------------------------------------------


def cores() -> int:
    return len(os.sched_getaffinity(0))


def autogroup() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


@contextmanager
def busy_loops(n: int, *, own_sessions: bool) -> Iterator[list[subprocess.Popen[bytes]]]:
    """n CPU spinners at normal priority for the duration of the block; all stopped on the way out.

    With `own_sessions` each spinner leads a session of its own, like an unrelated busy program: with the
    kernel's autogroup scheduling (sched_autogroup_enabled) CPU time is shared between sessions first,
    and route processes (which rollwise starts with setsid) compete with each spinner as equals. Without
    it the spinners share the benchmark's session, hence its share, and mostly slow down the benchmark
    process itself (the rollwise plane and the load generator), not the routes."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", SPINNER], stdin=subprocess.DEVNULL,
                                          start_new_session=own_sessions))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all cores from /proc/stat (idle includes iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


# --- MLServer ------------------------------------------------------------------------------------------


def requirements_digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def mlserver_installed() -> bool:
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    return mlserver.exists() and STAMP.exists() and STAMP.read_text().strip() == requirements_digest()


def setup_mlserver(console: Console) -> None:
    """Build benchmarks/.venv-mlserver from the requirements file (a fresh venv; pip, no cache tricks)."""
    t0 = time.monotonic()
    console.print(f"pressure: installing MLServer into {MLSERVER_VENV} from {REQUIREMENTS.name} ...")
    if MLSERVER_VENV.exists():
        shutil.rmtree(MLSERVER_VENV)
    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
    subprocess.run([str(MLSERVER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "-r", str(REQUIREMENTS)], check=True)
    STAMP.write_text(requirements_digest() + "\n")
    console.print(f"pressure: MLServer installed in {time.monotonic() - t0:.0f}s")


def mlserver_versions() -> str:
    done = subprocess.run(
        [str(MLSERVER_VENV / "bin" / "python"), "-c", VERSIONS],
        capture_output=True, text=True, check=True,
    )
    return done.stdout.strip()


def make_models(root: Path) -> None:
    """root/{v1,v2,v3}/iris: the same iris model, told apart by parameters.version; root/v4/iris: the
    settings without the model file (MLServer then fails to load it and exits, never ready)."""
    model = root / "model.joblib"
    subprocess.run([str(MLSERVER_VENV / "bin" / "python"), "-c", TRAIN, str(model)], check=True)
    for label in ("v1", "v2", "v3", "v4"):
        folder = root / label / "iris"
        folder.mkdir(parents=True)
        settings = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib", "version": label}}
        (folder / "model-settings.json").write_text(json.dumps(settings))
        if label != "v4":
            shutil.copy(model, folder / "model.joblib")


def mlserver_workload(models: Path, rollout_timeout: float) -> Workload:
    def revision(label: str, broken: bool) -> dict[str, Any]:
        folder = models / ("v4" if broken else label) / "iris"
        assert (folder / "model.joblib").exists() != broken, folder
        return {
            # Routes start in the server's working directory with only PATH, HOME, LANG, TZ and TMPDIR
            # from its environment: absolute paths, every setting in env.
            "command": [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(folder)],
            "ports": ["grpc", "metrics"],
            "env": {
                "MLSERVER_HOST": "127.0.0.1",
                "MLSERVER_HTTP_PORT": "{port}",
                "MLSERVER_GRPC_PORT": "{port.grpc}",
                "MLSERVER_METRICS_PORT": "{port.metrics}",
                # The default worker pool crashes at start with uvloop 0.23 (examples/mlserver.yaml).
                "MLSERVER_PARALLEL_WORKERS": "0",
            },
            # The model's own readiness: /v2/health/ready was seen answering 200 with no model loaded
            # during a crashed start.
            "health_check": {"path": "/v2/models/iris/ready", "interval_seconds": 1, "timeout_seconds": 5,
                             "unhealthy_threshold": 3},
            "startup_timeout_seconds": 120,
            "drain_seconds": 2,
            "stop_grace_seconds": 15,
            "label": label,
        }

    return Workload(name="iris", revision=revision, path="/v2/models/iris/infer", body=IRIS_BODY,
                    version_key="model_version", rollout_timeout=rollout_timeout)


# --- one run -------------------------------------------------------------------------------------------


def place_failures(report: DemoReport) -> list[str]:
    """Failed requests grouped by the phase they were sent in and their kind, with when (seconds after
    that rollout's activation) the first and the last were sent."""
    groups: dict[tuple[str, str], list[float]] = {}
    for t, kind in report.failures:
        phase, since = "before v2", 0.0
        for r in report.rollouts:
            if r.started <= t:
                phase, since = r.label, t - r.started
        groups.setdefault((phase, kind), []).append(since)
    return [f"  {phase}: {len(ts)} x {kind}, sent {min(ts):.2f}-{max(ts):.2f}s after its activation"
            for (phase, kind), ts in sorted(groups.items())]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], 3)}


def rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


async def with_lag_probe(run: Coroutine[Any, Any, DemoReport], lags: list[float]) -> DemoReport:
    """Run `run` while sampling the event loop's lag (how late a 0.1 s sleep wakes) into `lags`: the
    plane, the load generator and the live view share this loop, as in `rollwise demo`."""
    async def probe() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.1)
            lags.append(time.monotonic() - t - 0.1)

    task = asyncio.create_task(probe())
    try:
        return await run
    finally:
        task.cancel()


class PlaneTimes:
    """When the coordinator's route passes ended and how long its lifecycle cycles took."""

    def __init__(self) -> None:
        self.pass_ends: list[float] = []
        self.cycles: list[float] = []

    def attach(self, plane: Plane) -> None:
        plane.coordinator.route_observers.append(self._on_pass)
        plane.coordinator.observers.append(self._on_cycle)

    def _on_pass(self, report: RoutePassReport) -> None:
        self.pass_ends.append(time.monotonic())

    def _on_cycle(self, report: CycleReport, seconds: float) -> None:
        self.cycles.append(seconds)

    def pass_gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.pass_ends, self.pass_ends[1:], strict=False)]


def one_run(console: Console, server: str, workload: Workload, args: argparse.Namespace, busy: int) -> bool:
    data_dir = Path(tempfile.mkdtemp(prefix=f"rollwise-pressure-{server}-"))
    load0 = os.getloadavg()[0]
    idle0, total0 = cpu_times()
    t0 = time.monotonic()
    cpu0 = time.process_time()
    lags: list[float] = []
    plane_times = PlaneTimes()
    console.rule(f"{server}: {busy} busy loops on {cores()} cores, {args.rate:g} req/s, {args.replicas} replicas")
    try:
        report = asyncio.run(with_lag_probe(run_demo(console, rate=args.rate, replicas=args.replicas,
                                                     data_dir=data_dir, workload=workload,
                                                     on_plane=plane_times.attach), lags))
    except KeyboardInterrupt:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    except BaseException:
        console.print(f"pressure: {server}: data kept in {data_dir} (route logs in logs/)")
        raise
    wall = time.monotonic() - t0
    own_cpu = time.process_time() - cpu0
    idle1, total1 = cpu_times()
    load1 = os.getloadavg()[0]
    busy_share = 1 - (idle1 - idle0) / max(1, total1 - total0)
    print_rollouts(console, report.rollouts)
    if report.error is not None:
        console.print(f"[red]pressure: {server}: stopped early: {report.error}[/]")
    if report.failures:
        console.print(f"pressure: {server}: failed requests by rollout and kind:")
        for line in place_failures(report):
            console.print(line)
    if not report.ok or args.history:
        console.print(f"pressure: {server}: deployment history:")
        for line in report.history_lines():
            console.print(f"  {line}")
    if not report.ok or args.keep:
        console.print(f"pressure: {server}: data kept in {data_dir} (route logs in logs/)")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
    figures = {
        "server": server,
        "cores": cores(),
        "busy_loops": busy,
        "busy_sessions": "shared" if args.shared_session else "own",
        "autogroup": autogroup(),
        "rate": args.rate,
        "replicas": args.replicas,
        "loadavg_start": round(load0, 2),
        "loadavg_end": round(load1, 2),
        "cpu_busy_share": round(busy_share, 3),
        "seconds": round(wall, 1),
        "benchmark_process_cpu_share": round(own_cpu / wall, 3),
        "requests": report.requests,
        "failed": report.failed,
        "failures_by_kind": report.errors,
        "achieved_rate": round(report.requests / report.load_seconds, 1) if report.load_seconds else None,
        "latency_seconds": percentiles(report.latencies),
        "loop_lag_seconds": percentiles(lags),
        "route_pass_gap_seconds": percentiles(plane_times.pass_gaps()),
        "cycle_seconds": percentiles(plane_times.cycles),
        "rollouts": {r.label: {"strategy": r.strategy, "outcome": r.outcome, "planned": r.expected,
                               "seconds": round(r.seconds, 1), "rollwise_seconds": rounded(report.rollout_seconds(r)),
                               "requests": r.requests, "failed": r.failed}
                     for r in report.rollouts},
        "error": report.error,
        "ok": report.ok,
    }
    print(json.dumps(figures), flush=True)
    print(report.line(), flush=True)
    return report.ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", choices=("example", "mlserver", "both"), default="both")
    p.add_argument("--busy-per-core", type=int, default=3, help="CPU spinners per core (0: an idle run)")
    p.add_argument("--rate", type=float, default=100.0, help="requests per second through the proxy")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--setup-mlserver", action="store_true",
                   help=f"build {MLSERVER_VENV.relative_to(HERE.parent)} when missing or out of date")
    p.add_argument("--rollout-timeout", type=float, default=300.0,
                   help="seconds each phase may take before the run is given up (the demo's own: 60)")
    p.add_argument("--shared-session", action="store_true",
                   help="spinners stay in the benchmark's session (see busy_loops: with autogroup they then "
                        "starve the plane and the load generator rather than the routes)")
    p.add_argument("--keep", action="store_true", help="keep each run's data directory (kept anyway on failure)")
    p.add_argument("--history", action="store_true", help="print each run's deployment history (always on failure)")
    args = p.parse_args()
    console = Console()

    servers = ["example", "mlserver"] if args.server == "both" else [args.server]
    if "mlserver" in servers and not mlserver_installed():
        if args.setup_mlserver:
            setup_mlserver(console)
        else:
            servers.remove("mlserver")
            print(f"pressure: mlserver skipped: {MLSERVER_VENV} is not set up (add --setup-mlserver)", flush=True)
    if not servers:
        return 2
    if "mlserver" in servers:
        console.print(f"pressure: {mlserver_versions()}")

    busy = cores() * args.busy_per_core
    with tempfile.TemporaryDirectory(prefix="rollwise-pressure-models-") as models_dir:
        workloads: dict[str, Callable[[], Workload]] = {
            "example": lambda: dataclasses.replace(EXAMPLE, rollout_timeout=args.rollout_timeout),
            "mlserver": lambda: mlserver_workload(Path(models_dir), args.rollout_timeout),
        }
        if "mlserver" in servers:
            make_models(Path(models_dir))
        with busy_loops(busy, own_sessions=not args.shared_session):
            ok = run_all(console, servers, workloads, args, busy)
    return 0 if all(ok) else 1


def run_all(console: Console, servers: list[str], workloads: dict[str, Callable[[], Workload]],
            args: argparse.Namespace, busy: int) -> list[bool]:
    ok: list[bool] = []
    if busy:
        time.sleep(3.0)  # let the spinners take the cores before the first run
    for server in servers:
        ok.append(one_run(console, server, workloads[server](), args, busy))
    return ok


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("pressure: interrupted", file=sys.stderr)
        sys.exit(130)
