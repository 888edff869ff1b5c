"""The work of `rollwise demo` (what `make demo` runs; the command itself is in cli.demo): the whole product on the embedded defaults — SQLite in a
temporary data directory, local processes, Traefik — with real traffic.

It deploys the example model server at v1 with 3 replicas, sends steady traffic through the proxy
(100 requests/s by default), rolls out v2 with a rolling update, v3 with blue-green and auto-promotion,
then a broken v4 (its processes exit at start) that the failure budget rolls back. A live view shows the
revisions, routes by status, the traffic split, the sub-step and the requests so far; at the end a table
per rollout and the line `demo: 3 rollouts, N requests, F failed`. Exit status 0 only when no request
failed and every rollout ended as planned. Every process it started is stopped before it returns.

What is deployed and called is a `Workload` (EXAMPLE, the example model server, by default);
benchmarks/pressure.py runs the same three rollouts with MLServer through another one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from rollwise.cli.demo import free_port
from rollwise.cli.loadgen import LoadGenerator
from rollwise.cli.serve import Plane, ServerConfig, build_plane, running
from rollwise.control.coordinator import Intervals
from rollwise.control.operations import Operations
from rollwise.model import Lifecycle, RouteStatus, SubStep, is_ready_state
from rollwise.store.records import HistoryRecord, RouteRecord

NAME = "sentiment"
ROLLOUT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Workload:
    """What the demo deploys and how its traffic calls it."""

    name: str
    """The deployment's name (the proxy serves it under /d/NAME/)."""
    revision: Callable[[str, bool], dict[str, Any]]
    """revision(label, broken): the revision labelled v1..v4; broken (v4) ones must never become ready."""
    path: str
    """The request path inside the deployment, e.g. "/predict"."""
    body: dict[str, Any]
    """The JSON body of every request (POST)."""
    version_key: str = "version"
    """The field of a 200 answer that names the version that answered."""
    rollout_timeout: float = ROLLOUT_TIMEOUT
    """Seconds each phase (scale-up of v1, each rollout) may take before the demo gives up."""


@dataclass(frozen=True)
class Step:
    label: str
    policy: dict[str, Any]
    expected: str
    broken: bool = False


STEPS = (
    Step("v2", {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0}, "completed"),
    Step("v3", {"strategy": "blue_green", "auto_promote": True, "promote_delay_seconds": 1}, "completed"),
    Step("v4", {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0}, "rolled_back", broken=True),
)


@dataclass
class Result:
    label: str
    strategy: str
    expected: str
    outcome: str
    seconds: float
    requests: int
    failed: int
    started: float = 0.0
    """time.monotonic() when the rollout was activated."""
    revision: int = 0
    """The revision number rolled out."""

    @property
    def as_planned(self) -> bool:
        return self.outcome == self.expected


@dataclass
class DemoReport:
    """What one demo run did: its rollouts, the traffic's totals, and why it stopped early if it did."""

    rollouts: list[Result]
    requests: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Failed requests by kind ("HTTP 502", "ReadTimeout"...)."""
    failures: list[tuple[float, str]] = field(default_factory=list)
    """(time.monotonic() when sent, kind) of each failed request (the newest 10,000)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds each answered request took (the newest 100,000)."""
    load_seconds: float = 0.0
    """How long the traffic ran (requests / load_seconds is the rate achieved)."""
    history: list[HistoryRecord] = field(default_factory=list)
    """The deployment's history at the end, oldest first."""
    error: str | None = None
    """Set when a phase did not finish within the workload's rollout timeout."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0 and all(r.as_planned for r in self.rollouts)

    def line(self) -> str:
        return f"demo: {len(self.rollouts)} rollouts, {self.requests} requests, {self.failed} failed"

    def history_lines(self) -> list[str]:
        return [f"{h.created_at:%H:%M:%S.%f}"[:-3] + f" {h.message}"
                + (f" (x{h.attempts}, last {h.updated_at:%H:%M:%S})" if h.attempts > 1 else "")
                for h in self.history]

    def rollout_seconds(self, r: Result) -> float | None:
        """The rollout's own duration by its history: from "rollout started" (the deploying cycle that
        took it up) to the row that made the deployment ready again; None when not found."""
        rows = iter(self.history)
        start = next((h for h in rows if h.to_revision == r.revision and h.lifecycle_to is Lifecycle.DEPLOYING), None)
        end = next((h for h in rows if h.lifecycle_to is Lifecycle.READY), None)
        if start is None or end is None:
            return None
        return (end.created_at - start.created_at).total_seconds()


def revision(label: str, misbehave: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "command": [sys.executable, "-m", "rollwise.examples.model_server", "--port", "{port}", "--version", label,
                    *misbehave],
        "health_check": {"path": "/healthz", "interval_seconds": 0.5, "timeout_seconds": 1, "unhealthy_threshold": 2},
        "startup_timeout_seconds": 20,
        "drain_seconds": 0.5,
        "stop_grace_seconds": 5,
        "label": label,
    }


def example_revision(label: str, broken: bool) -> dict[str, Any]:
    """The example model server; a broken one exits at start (`--fail-start`)."""
    return revision(label, ("--fail-start",) if broken else ())


EXAMPLE = Workload(
    name=NAME,
    revision=example_revision,
    path="/predict",
    body={"text": "what a great and helpful model"},
)


async def render(ops: Operations, load: LoadGenerator | None, title: str, name: str = NAME) -> Panel:
    dep = await ops.get(name)
    routes = await ops.routes(dep)
    labels = {r.number: r.label or f"r{r.number}" for r in await ops.revisions(name)}
    table = Table(box=None, header_style="bold")
    for col in ("revision", "provisioning", "ready", "unready", "terminating", "failed", "traffic"):
        table.add_column(col, justify="right" if col != "revision" else "left")
    split = load.stats.split() if load else {}
    for number in sorted({r.revision for r in routes if r.status is not RouteStatus.TERMINATED or r.failed}):
        rs = [r for r in routes if r.revision == number]

        def count(pred: Callable[[RouteRecord], bool]) -> str:
            return str(sum(1 for r in rs if pred(r)))

        label = labels.get(number, str(number))
        table.add_row(
            label,
            count(lambda r: r.status is RouteStatus.PROVISIONING),
            # Ready as the strategies and the routing table count it: a degraded route serves.
            count(lambda r: is_ready_state(r.status, r.health, has_health_check=True)),
            count(lambda r: r.status is RouteStatus.RUNNING
                  and not is_ready_state(r.status, r.health, has_health_check=True)),
            count(lambda r: r.status is RouteStatus.TERMINATING),
            count(lambda r: r.failed),
            f"{split.get(label, 0.0):.0%}",
        )
    history = await ops.history(name)
    events = "\n".join(f"  {h.message}" + (f" (x{h.attempts})" if h.attempts > 1 else "") for h in history[-4:])
    cur = labels.get(dep.current_revision or 0, "-")
    nxt = labels.get(dep.deploying_revision or 0, "-")
    sent, failed = load.stats.snapshot() if load else (0, 0)
    head = (
        f"[bold]{name}[/]  lifecycle [cyan]{dep.lifecycle.value}[/]  sub-step [cyan]"
        f"{dep.sub_step.value if dep.sub_step else '-'}[/]  serving [green]{cur}[/]  deploying [yellow]{nxt}[/]\n"
        f"requests {sent}  failed [{'red' if failed else 'green'}]{failed}[/]"
    )
    return Panel(Group(head, table, events), title=title)


async def wait_for(ops: Operations, pred: Any, live: Live | None, load: LoadGenerator | None, title: str,
                   workload: Workload = EXAMPLE) -> Any:
    timeout = workload.rollout_timeout
    deadline = time.monotonic() + timeout
    while True:
        dep = await ops.get(workload.name)
        if live is not None:
            live.update(await render(ops, load, title, workload.name))
        if pred(dep):
            return dep
        if time.monotonic() > deadline:
            raise TimeoutError(f"{title}: no result within {timeout:g}s")
        await asyncio.sleep(0.2)


async def run_demo(console: Console, *, rate: float, replicas: int, data_dir: Path,
                   workload: Workload = EXAMPLE, on_plane: Callable[[Plane], None] | None = None) -> DemoReport:
    """The three rollouts under traffic. A phase that outlasts the workload's rollout timeout ends the
    run early: the report then has the rollouts done so far and `error` says which phase. `on_plane`
    sees the plane before it runs (benchmarks attach coordinator observers there)."""
    config = ServerConfig(
        data_dir=data_dir,
        proxy_port=free_port(),
        runtime="local",
        intervals=Intervals(short=0.02, long=5.0, routes=0.1),
    )
    name = workload.name
    report = DemoReport([])
    load: LoadGenerator | None = None
    async with build_plane(config) as plane:
        if on_plane is not None:
            on_plane(plane)
        async with running(plane):
            ops = plane.ops
            console.print(f"[bold]rollwise demo[/]: data in {data_dir}, proxy on 127.0.0.1:{config.proxy_port}")
            await ops.create(name=name, replicas=replicas, policy=STEPS[0].policy,
                             revision=workload.revision("v1", False))
            with Live(console=console, refresh_per_second=8, transient=not console.is_terminal) as live:
                try:
                    await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, live, None, "v1: scaling up",
                                   workload)
                    url = f"http://127.0.0.1:{config.proxy_port}/d/{name}{workload.path}"
                    load_started = time.monotonic()
                    async with LoadGenerator(url, rate=rate, body=workload.body,
                                             version_key=workload.version_key) as load:
                        await asyncio.sleep(1.0)
                        for step in STEPS:
                            await ops.patch(name, policy=step.policy)
                            rev = await ops.add_revision(name, workload.revision(step.label, step.broken))
                            sent0, failed0 = load.stats.snapshot()
                            t0 = time.monotonic()
                            await ops.activate(name, rev.number)
                            title = f"{step.label}: {step.policy['strategy'].replace('_', '-')} rollout"
                            dep = await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, live, load, title,
                                                 workload)
                            sent1, failed1 = load.stats.snapshot()
                            outcome = "completed" if dep.sub_step is SubStep.COMPLETED else "rolled_back"
                            report.rollouts.append(
                                Result(step.label, step.policy["strategy"], step.expected, outcome,
                                       time.monotonic() - t0, sent1 - sent0, failed1 - failed0, t0, rev.number)
                            )
                            console.print(f"{title}: {outcome} in {time.monotonic() - t0:.1f}s")
                            await asyncio.sleep(1.0)
                except TimeoutError as e:
                    report.error = str(e)
                if load is not None:
                    report.load_seconds = time.monotonic() - load_started
            if report.error is None:
                console.print(await render(ops, load, "final state", name))
            report.history = list(await ops.history(name))
    if load is not None:
        totals = load.stats
        report.requests, report.failed, report.errors = totals.sent, totals.failed, dict(totals.errors)
        report.failures = list(zip(totals.failure_times, totals.failure_kinds, strict=True))
        report.latencies = list(totals.latencies)
    if report.errors and report.error is None:
        console.print(f"failures by kind: {report.errors}")
    return report


def print_rollouts(console: Console, rollouts: list[Result]) -> None:
    table = Table(title="rollouts")
    for col in ("revision", "strategy", "outcome", "planned", "duration", "requests", "failed"):
        table.add_column(col)
    for r in rollouts:
        table.add_row(r.label, r.strategy.replace("_", "-"), r.outcome, r.expected, f"{r.seconds:.1f}s",
                      str(r.requests), str(r.failed))
    console.print(table)


def run(console: Console, *, rate: float, replicas: int, workload: Workload = EXAMPLE) -> int:
    """Run the demo in a temporary data directory; print the summary; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="rollwise-demo-") as tmp:
        report = asyncio.run(run_demo(console, rate=rate, replicas=replicas, data_dir=Path(tmp), workload=workload))
    if report.error is not None:
        console.print(f"[red]demo failed: {report.error}[/]")
        return 1
    print_rollouts(console, report.rollouts)
    print(report.line(), flush=True)
    return 0 if report.ok else 1
