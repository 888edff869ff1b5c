"""The canary analysis runner (control/analysis.py) over a real SQLite store and a manual clock.

The proxy's counters come from `ScriptedTraffic`, a stand-in TrafficLayer whose `revision_stats()`
answers what the test scripted (cumulative counters, as Traefik's are; the real proxy's counters are
exercised in tests/traffic and tests/e2e). Command metrics run real processes: small Python scripts.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rollwise.control.analysis import AnalysisRunner
from rollwise.control.clock import ManualClock
from rollwise.control.coordinator import Coordinator
from rollwise.control.cycles import CycleKind
from rollwise.model import Lifecycle, Mode, parse_policy
from rollwise.runtime.simulated import SimulatedRuntime
from rollwise.store import DeploymentChange, DeploymentUpdate, RevisionSpec, Store
from rollwise.store.commands import ChangeSet
from rollwise.store.records import DeploymentRecord, MeasurementRecord
from rollwise.traffic.base import NoTraffic, RevisionStats, TrafficUnavailable

INF = float("inf")
ERRORS = {"name": "errors", "builtin": "error_rate", "max": 0.01}
VS_STABLE = {"name": "errors-vs-stable", "builtin": "error_rate", "max_over_stable": 0.005}
LATENCY = {"name": "latency", "builtin": "latency_p99_ms", "max": 800}


class ScriptedTraffic(NoTraffic):
    """A traffic layer whose per-revision counters are what the test set (`counts`), or an error
    (`failure`); `reads` counts the calls of `revision_stats`."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[tuple[str, int], RevisionStats] = {}
        self.failure: Exception | None = None
        self.reads = 0

    def set(self, name: str, revision: int, requests: int, errors: int = 0, *, slow: int = 0,
            started: float = 1.0) -> None:
        """Cumulative counters: `requests` answers, `errors` of them 5xx, `slow` of them over 1 s."""
        fast = requests - slow
        self.counts[(name, revision)] = RevisionStats(
            requests=requests, errors=errors, by_code={200: requests - errors, 500: errors},
            buckets=((0.1, fast), (1.0, fast), (2.0, requests), (INF, requests)), started=started,
        )

    async def revision_stats(self) -> dict[tuple[str, int], RevisionStats]:
        self.reads += 1
        if self.failure is not None:
            raise self.failure
        return dict(self.counts)


def policy(*metrics: dict[str, Any], interval: float = 30, min_requests: int = 50) -> dict[str, Any]:
    return {"strategy": "canary", "steps": [{"set_weight": 10}, {"pause": {}}],
            "analysis": {"interval_seconds": interval, "min_requests": min_requests, "failure_limit": 2,
                         "metrics": list(metrics)}}


class Bench:
    def __init__(self, store: Store, clock: ManualClock, traffic: ScriptedTraffic, runner: AnalysisRunner) -> None:
        self.store, self.clock, self.traffic, self.runner = store, clock, traffic, runner

    async def canary(self, name: str, doc: dict[str, Any], *, weights: dict[int, int] | None = None,
                     mode: Mode = Mode.FORWARD) -> DeploymentRecord:
        """A deployment rolling out revision 2 as a canary with 10 % of the requests (by default)."""
        dep = await self.store.create_deployment(
            name=name, replicas=4, policy=parse_policy(doc), revision=RevisionSpec(command=("serve",)),
            now=self.clock.now(),
        )
        await self.store.add_revision(dep.id, RevisionSpec(command=("serve", "v2")), self.clock.now())
        return await self.change(dep, lifecycle=Lifecycle.DEPLOYING, deploying_revision=2, mode=mode,
                                 rollout_started_at=self.clock.now(), canary_step=1,
                                 traffic_weights={1: 90, 2: 10} if weights is None else weights)

    async def change(self, dep: DeploymentRecord, **fields: Any) -> DeploymentRecord:
        result = await self.store.apply(ChangeSet(deployments=[DeploymentUpdate(
            deployment_id=dep.id, expected_version=dep.version, change=DeploymentChange(**fields))]),
            self.clock.now())
        assert dep.id in result.applied
        found = await self.store.get_deployment(dep.name)
        assert found is not None
        return found

    async def later(self, seconds: float) -> int:
        self.clock.advance(seconds)
        return await self.runner.run_due()

    async def measurements(self, dep: DeploymentRecord) -> list[MeasurementRecord]:
        return await self.store.list_measurements(dep.id)


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/rollwise.db")
    clock = ManualClock()
    traffic = ScriptedTraffic()
    runner = AnalysisRunner(store, traffic, clock, lambda name: f"http://127.0.0.1:8080/d/{name}/")
    try:
        yield Bench(store, clock, traffic, runner)
    finally:
        await runner.close()
        await store.close()


def rows(ms: list[MeasurementRecord]) -> list[tuple[str, str, str | None, str]]:
    return [(m.metric, m.verdict, m.value, m.words) for m in ms]


# -------------------------------------------------------------------------------------- builtins


async def test_the_first_look_keeps_the_counters_then_one_measurement_per_metric_per_interval(bench: Bench) -> None:
    dep = await bench.canary("svc", policy(ERRORS, VS_STABLE, LATENCY))
    bench.traffic.set("svc", 1, requests=9000, errors=90)
    bench.traffic.set("svc", 2, requests=1000, errors=0)
    start = bench.clock.now()

    assert await bench.runner.run_due() == 0  # the first look: the window starts here
    assert await bench.later(29) == 0  # not due yet
    # In the window: stable 900 more requests, 9 errors (1 %); canary 100 more, 5 errors (5 %), 2 slow.
    bench.traffic.set("svc", 1, requests=9900, errors=99)
    bench.traffic.set("svc", 2, requests=1100, errors=5, slow=2)
    assert await bench.later(1) == 3

    written = await bench.measurements(dep)
    assert rows(written) == [
        ("errors", "failed", "0.05", "errors = 0.05 > 0.01"),
        ("errors-vs-stable", "failed", "0.05", "errors-vs-stable = 0.05 > stable 0.01 + 0.005"),
        # p99 of 100 requests, 2 of them between 1 s and 2 s: 1 + 1 * (99 - 98) / 2 = 1.5 s
        ("latency", "failed", "1500", "latency = 1500 > 800"),
    ]
    for m in written:
        assert (m.revision, m.rollout_started_at) == (2, dep.rollout_started_at)
        assert (m.window_start, m.window_end) == (start, start + timedelta(seconds=30))
    counts = await bench.store.analysis_counts([dep.id])
    assert (counts[dep.id].failed, counts[dep.id].passed, counts[dep.id].last_failure) == (
        3, 0, written[2].words)

    # The next window starts where this one ended: 12 canary requests in it are too few.
    bench.traffic.set("svc", 2, requests=1112, errors=5, slow=2)
    assert await bench.later(30) == 3
    assert [(m.verdict, m.words) for m in (await bench.measurements(dep))[3:]] == [
        ("inconclusive", "inconclusive: 12 requests < 50")] * 3


async def test_a_proxy_restart_resets_the_counters_and_the_window_takes_what_came_since(bench: Bench) -> None:
    dep = await bench.canary("svc", policy(ERRORS))
    bench.traffic.set("svc", 2, requests=5000, errors=0)
    await bench.runner.run_due()
    bench.traffic.set("svc", 2, requests=200, errors=1, started=99.0)  # restarted: counting again from 0
    assert await bench.later(30) == 1
    assert rows(await bench.measurements(dep)) == [("errors", "passed", "0.005", "errors = 0.005 <= 0.01")]


async def test_the_proxy_is_read_once_per_round_for_every_deployment(bench: Bench) -> None:
    a = await bench.canary("a", policy(ERRORS))
    b = await bench.canary("b", policy(ERRORS))
    for name in ("a", "b"):
        bench.traffic.set(name, 2, requests=100)
    await bench.runner.run_due()
    assert bench.traffic.reads == 1
    for name in ("a", "b"):
        bench.traffic.set(name, 2, requests=300, errors=10)
    assert await bench.later(30) == 2
    assert bench.traffic.reads == 2
    assert [m.verdict for m in await bench.measurements(a)] == [m.verdict for m in await bench.measurements(b)] == [
        "failed"]


@pytest.mark.parametrize("setup", ["rolling", "rolling_back", "no_canary_traffic", "ready"])
async def test_deployments_not_analysed_are_not_measured(bench: Bench, setup: str) -> None:
    if setup == "rolling":
        dep = await bench.canary("svc", {"strategy": "rolling"})
    elif setup == "rolling_back":
        dep = await bench.canary("svc", policy(ERRORS), mode=Mode.ROLLING_BACK)
    elif setup == "no_canary_traffic":
        dep = await bench.canary("svc", policy(ERRORS), weights={1: 100, 2: 0})
    else:
        dep = await bench.canary("svc", policy(ERRORS))
        dep = await bench.change(dep, lifecycle=Lifecycle.READY, deploying_revision=None)
    bench.traffic.set("svc", 2, requests=100, errors=50)
    for _ in range(3):
        assert await bench.later(30) == 0
    assert bench.traffic.reads == 0
    assert await bench.measurements(dep) == []


async def test_a_new_rollout_starts_with_a_first_look(bench: Bench) -> None:
    dep = await bench.canary("svc", policy(ERRORS))
    bench.traffic.set("svc", 2, requests=100)
    await bench.runner.run_due()
    bench.clock.advance(20)
    dep = await bench.change(dep, rollout_started_at=bench.clock.now())  # another rollout (superseded)
    bench.traffic.set("svc", 2, requests=1000, errors=100)
    assert await bench.later(10) == 0  # a first look for the new rollout, not a window of the old one
    bench.traffic.set("svc", 2, requests=1100, errors=100)
    assert await bench.later(30) == 1
    [m] = await bench.measurements(dep)
    assert (m.rollout_started_at, m.verdict) == (dep.rollout_started_at, "passed")


async def test_a_proxy_that_does_not_answer_makes_the_builtins_inconclusive(bench: Bench) -> None:
    dep = await bench.canary("svc", policy(ERRORS))
    bench.traffic.set("svc", 2, requests=100)
    await bench.runner.run_due()
    bench.traffic.failure = TrafficUnavailable("traefik API: connection refused")
    assert await bench.later(30) == 1
    assert rows(await bench.measurements(dep)) == [
        ("errors", "inconclusive", None,
         "inconclusive: the proxy's counters could not be read: traefik API: connection refused")]
    bench.traffic.failure = RuntimeError("a bug in the proxy client")
    assert await bench.later(30) == 0  # no window open: the next successful read starts one
    bench.traffic.failure = None
    assert await bench.later(1) == 0
    bench.traffic.set("svc", 2, requests=200)
    assert await bench.later(30) == 1


# -------------------------------------------------------------------------------------- commands


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


async def until_written(bench: Bench, timeout: float = 20.0) -> int:
    """Wait for the running commands (real time, bounded), then write their results."""
    await bench.runner.wait_running(timeout)
    return await bench.runner.run_due()


async def test_a_command_metric_fails_with_its_last_line_and_gets_the_canary_url(
    bench: Bench, tmp_path: Path
) -> None:
    env_file = tmp_path / "env.txt"
    argv = script(tmp_path, "eval.py", f"""
        import os, sys
        with open({str(env_file)!r}, "w") as f:
            for key in ("ROLLWISE_CANARY_URL", "ROLLWISE_CANARY_REVISION", "ROLLWISE_DEPLOYMENT", "SECRET"):
                f.write(f"{{key}}={{os.environ.get(key)}}\\n")
        print("evaluating 200 prompts")
        print("accuracy 0.71", flush=True)
        print("a warning", file=sys.stderr)
        sys.exit(1)
    """)
    dep = await bench.canary("svc", policy(ERRORS, {"name": "eval", "command": argv, "timeout_seconds": 30}))
    bench.traffic.set("svc", 2, requests=100)
    os.environ["SECRET"] = "server-only"
    try:
        await bench.runner.run_due()
        bench.traffic.set("svc", 2, requests=200)
        assert await bench.later(30) == 0  # the interval is written once its command is done
        assert await until_written(bench) == 2
    finally:
        del os.environ["SECRET"]

    assert rows(await bench.measurements(dep)) == [
        ("errors", "passed", "0", "errors = 0 <= 0.01"),
        ("eval", "failed", "accuracy 0.71", "eval = accuracy 0.71 (exit 1)"),
    ]
    assert env_file.read_text().splitlines() == [
        "ROLLWISE_CANARY_URL=http://127.0.0.1:8080/d/svc/", "ROLLWISE_CANARY_REVISION=r2",
        "ROLLWISE_DEPLOYMENT=svc", "SECRET=None",
    ]


async def test_a_command_that_times_out_is_inconclusive_and_killed_with_its_children(
    bench: Bench, tmp_path: Path
) -> None:
    pids = tmp_path / "pids.txt"
    argv = script(tmp_path, "slow.py", f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open({str(pids)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        print("started", flush=True)
        time.sleep(60)
    """)
    dep = await bench.canary("svc", policy({"name": "eval", "command": argv, "timeout_seconds": 1.5}))
    await bench.runner.run_due()
    await bench.later(30)
    assert await until_written(bench) == 1

    assert rows(await bench.measurements(dep)) == [
        ("eval", "inconclusive", "started", "inconclusive: timed out after 1.5 s")]
    for pid in map(int, pids.read_text().split()):
        await gone(pid)


async def gone(pid: int, timeout: float = 5.0) -> None:
    """Wait until `pid` is no process any more (a killed grandchild is reaped by init, not at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return  # killed, waiting for its parent (init) to reap it
        await asyncio.sleep(0.02)
    raise AssertionError(f"process {pid} still runs")


async def test_commands_that_cannot_run_or_crash_are_inconclusive(bench: Bench, tmp_path: Path) -> None:
    crash = script(tmp_path, "crash.py", """
        import sys
        print("loading the model", flush=True)
        print("KeyError: 'model'", file=sys.stderr)
        sys.exit(2)
    """)
    dep = await bench.canary("svc", policy(
        {"name": "missing", "command": [str(tmp_path / "no-such-program")]},
        {"name": "crash", "command": crash},
    ))
    await bench.runner.run_due()
    await bench.later(30)
    assert await until_written(bench) == 2
    assert rows(await bench.measurements(dep)) == [
        ("missing", "inconclusive", None, f"inconclusive: cannot run {tmp_path}/no-such-program: no such program"),
        ("crash", "inconclusive", "loading the model", "inconclusive: exit 2: loading the model"),
    ]


async def test_close_stops_running_commands(bench: Bench, tmp_path: Path) -> None:
    pids = tmp_path / "pid.txt"
    argv = script(tmp_path, "slow.py", f"""
        import os, time
        open({str(pids)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    dep = await bench.canary("svc", policy({"name": "eval", "command": argv, "timeout_seconds": 60}))
    await bench.runner.run_due()
    await bench.later(30)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not pids.exists() or not pids.read_text():
        assert loop.time() < deadline, "the command did not start"
        await asyncio.sleep(0.02)
    await bench.runner.close()
    await gone(int(pids.read_text()))
    assert await bench.measurements(dep) == []


# -------------------------------------------------------------------------------- the coordinator


async def test_the_coordinator_measures_after_the_route_pass_and_runs_the_deploying_cycle(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/rollwise.db")
    clock = ManualClock()
    traffic = ScriptedTraffic()
    runtime = SimulatedRuntime(clock.now)
    coordinator = Coordinator(store=store, runtime=runtime, prober=runtime, traffic=traffic, clock=clock,
                              proxy_url="http://127.0.0.1:8080/")
    try:
        bench = Bench(store, clock, traffic, coordinator.analysis)
        dep = await bench.canary("svc", policy(ERRORS), weights={1: 100, 2: 0})
        for _ in range(100):  # until the canary's first route is ready and gets its 10 %
            await coordinator.run_once()
            clock.advance(0.5)
            found = await store.get_deployment("svc")
            assert found is not None
            if (found.traffic_weights or {}).get(2, 0) > 0:
                break
        else:
            raise AssertionError(f"the canary never got traffic: {found}")
        traffic.set("svc", 2, requests=100)
        clock.advance(1)  # the runner reads the deployments at most once a second (poll_seconds)
        assert (await coordinator.run_once()).measurements == 0  # the first look, at t
        clock.advance(27)
        await coordinator.run_once()  # every cycle runs (due after Intervals.long); nothing measured yet
        clock.advance(1)
        quiet = await coordinator.run_once()
        assert quiet.measurements == 0
        assert not any(c.kind is CycleKind.DEPLOYING for c in quiet.cycles)  # not due, nothing marked it
        clock.advance(2)  # t + 30: the window ends
        traffic.set("svc", 2, requests=200, errors=20)
        step = await coordinator.run_once()
        assert step.measurements == 1
        assert any(c.kind is CycleKind.DEPLOYING for c in step.cycles)  # marked by the measurement
        assert [m.words for m in await store.list_measurements(dep.id)] == ["errors = 0.2 > 0.01"]
        assert coordinator.analysis.proxy_url is not None
        assert coordinator.analysis.proxy_url("svc") == "http://127.0.0.1:8080/d/svc/"
    finally:
        await coordinator.close()
        await runtime.close()
        await store.close()
