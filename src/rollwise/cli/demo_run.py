"""The work of `rollwise demo` (what `make demo` runs; the command itself is in cli.demo): the whole product on the embedded defaults — SQLite in a
temporary data directory, local processes, Traefik — with real traffic.

It deploys the example model server at v1 with 3 replicas, sends steady traffic through the proxy
(100 requests/s by default), rolls out v2 with a rolling update, v3 with blue-green and auto-promotion,
then a broken v4 (its processes exit at start) that the failure budget rolls back. A live view shows the
revisions, routes by status, the traffic split, the sub-step and the requests so far; at the end a table
per rollout and the line `demo: 3 rollouts, N requests, F failed`. Exit status 0 only when no request
failed and every rollout ended as planned. Every process it started is stopped before it returns.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from rollwise.cli.demo import free_port
from rollwise.cli.loadgen import LoadGenerator
from rollwise.cli.serve import ServerConfig, build_plane, running
from rollwise.control.coordinator import Intervals
from rollwise.control.operations import Operations
from rollwise.model import Lifecycle, RouteStatus, SubStep
from rollwise.store.records import RouteRecord

NAME = "sentiment"
ROLLOUT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Step:
    label: str
    policy: dict[str, Any]
    expected: str
    misbehave: tuple[str, ...] = ()


STEPS = (
    Step("v2", {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0}, "completed"),
    Step("v3", {"strategy": "blue_green", "auto_promote": True, "promote_delay_seconds": 1}, "completed"),
    Step("v4", {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0}, "rolled_back", ("--fail-start",)),
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

    @property
    def as_planned(self) -> bool:
        return self.outcome == self.expected


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


async def render(ops: Operations, load: LoadGenerator | None, title: str) -> Panel:
    dep = await ops.get(NAME)
    routes = await ops.routes(dep)
    labels = {r.number: r.label or f"r{r.number}" for r in await ops.revisions(NAME)}
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
            count(lambda r: r.status is RouteStatus.RUNNING and r.health.value == "healthy"),
            count(lambda r: r.status is RouteStatus.RUNNING and r.health.value != "healthy"),
            count(lambda r: r.status is RouteStatus.TERMINATING),
            count(lambda r: r.failed),
            f"{split.get(label, 0.0):.0%}",
        )
    history = await ops.history(NAME)
    events = "\n".join(f"  {h.message}" + (f" (x{h.attempts})" if h.attempts > 1 else "") for h in history[-4:])
    cur = labels.get(dep.current_revision or 0, "-")
    nxt = labels.get(dep.deploying_revision or 0, "-")
    sent, failed = load.stats.snapshot() if load else (0, 0)
    head = (
        f"[bold]{NAME}[/]  lifecycle [cyan]{dep.lifecycle.value}[/]  sub-step [cyan]"
        f"{dep.sub_step.value if dep.sub_step else '-'}[/]  serving [green]{cur}[/]  deploying [yellow]{nxt}[/]\n"
        f"requests {sent}  failed [{'red' if failed else 'green'}]{failed}[/]"
    )
    return Panel(Group(head, table, events), title=title)


async def wait_for(ops: Operations, pred: Any, live: Live | None, load: LoadGenerator | None, title: str) -> Any:
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while True:
        dep = await ops.get(NAME)
        if live is not None:
            live.update(await render(ops, load, title))
        if pred(dep):
            return dep
        if time.monotonic() > deadline:
            raise TimeoutError(f"{title}: no result within {ROLLOUT_TIMEOUT:g}s")
        await asyncio.sleep(0.2)


async def run_demo(console: Console, *, rate: float, replicas: int, data_dir: Path) -> list[Result]:
    config = ServerConfig(
        data_dir=data_dir,
        proxy_port=free_port(),
        runtime="local",
        intervals=Intervals(short=0.02, long=5.0, routes=0.1),
    )
    results: list[Result] = []
    async with build_plane(config) as plane, running(plane):
        ops = plane.ops
        console.print(f"[bold]rollwise demo[/]: data in {data_dir}, proxy on 127.0.0.1:{config.proxy_port}")
        await ops.create(name=NAME, replicas=replicas, policy=STEPS[0].policy, revision=revision("v1"))
        with Live(console=console, refresh_per_second=8, transient=not console.is_terminal) as live:
            await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, live, None, "v1: scaling up")
            url = f"http://127.0.0.1:{config.proxy_port}/d/{NAME}/predict"
            async with LoadGenerator(url, rate=rate) as load:
                await asyncio.sleep(1.0)
                for step in STEPS:
                    await ops.patch(NAME, policy=step.policy)
                    rev = await ops.add_revision(NAME, revision(step.label, step.misbehave))
                    sent0, failed0 = load.stats.snapshot()
                    t0 = time.monotonic()
                    await ops.activate(NAME, rev.number)
                    title = f"{step.label}: {step.policy['strategy'].replace('_', '-')} rollout"
                    dep = await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, live, load, title)
                    sent1, failed1 = load.stats.snapshot()
                    outcome = "completed" if dep.sub_step is SubStep.COMPLETED else "rolled_back"
                    results.append(
                        Result(step.label, step.policy["strategy"], step.expected, outcome,
                               time.monotonic() - t0, sent1 - sent0, failed1 - failed0)
                    )
                    console.print(f"{title}: {outcome} in {time.monotonic() - t0:.1f}s")
                    await asyncio.sleep(1.0)
            totals = load.stats
        console.print(await render(ops, load, "final state"))
    results.append(Result("total", "", "", "", 0, totals.sent, totals.failed))
    if totals.errors:
        console.print(f"failures by kind: {dict(totals.errors)}")
    return results


def run(console: Console, *, rate: float, replicas: int) -> int:
    """Run the demo in a temporary data directory; print the summary; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="rollwise-demo-") as tmp:
        try:
            results = asyncio.run(run_demo(console, rate=rate, replicas=replicas, data_dir=Path(tmp)))
        except TimeoutError as e:
            console.print(f"[red]demo failed: {e}[/]")
            return 1
    *rollouts, total = results
    table = Table(title="rollouts")
    for col in ("revision", "strategy", "outcome", "planned", "duration", "requests", "failed"):
        table.add_column(col)
    for r in rollouts:
        table.add_row(r.label, r.strategy.replace("_", "-"), r.outcome, r.expected, f"{r.seconds:.1f}s",
                      str(r.requests), str(r.failed))
    console.print(table)
    ok = total.failed == 0 and all(r.as_planned for r in rollouts)
    print(f"demo: {len(rollouts)} rollouts, {total.requests} requests, {total.failed} failed", flush=True)
    return 0 if ok else 1
