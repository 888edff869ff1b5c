"""The work of `rollwise demo` (what `make demo` runs; the command itself is in cli.demo): the whole product on the embedded defaults — SQLite in a
temporary data directory, local processes, Traefik — with real traffic.

It deploys the example model server at v1 with 3 replicas, sends steady traffic through the proxy
(100 requests/s by default), rolls out v2 with a rolling update, v3 with blue-green and auto-promotion,
then a broken v4 (its processes exit at start) that the failure budget rolls back. A live view shows the
revisions, routes by status, the traffic split, the sub-step and the requests so far; at the end a table
per rollout and the line `demo: 3 rollouts, N requests, F failed`. Exit status 0 only when no request
failed and every rollout ended as planned. Every process it started is stopped before it returns.
Each demo also serves the REST API and the dashboard on a free loopback port for as long as it runs and
prints `dashboard: http://127.0.0.1:PORT/ui/ (token: ...)`, the token being ROLLWISE_TOKEN when it is set.

What is deployed and called is a `Workload` (EXAMPLE, the example model server, by default);
benchmarks/pressure.py runs the same three rollouts with MLServer through another one.

`rollwise demo --gpus N` (`run_gpus`) is another story: a node of N gpu slots (fake ones: the server is
told `resources={"gpu": N}`, no GPU is touched), N replicas that each need one (`resources: {gpu: 1}`),
and one rolling rollout with the default policy (surge 25%, unavailable 0), so there is no spare slot at
all: rollwise replaces one route at a time. Besides the traffic's failed requests, it checks what the
devices did: it samples `GET /v1/capacity` (served by the demo's own in-process API) about every 100 ms
and asks every route's process, at its own address, which CUDA_VISIBLE_DEVICES it received (the example
server's `/version`); the node never holds more than N, no index is given to two alive processes at
once, and each process got the indices the server says its route holds. The last line is
`demo --gpus N: 1 rollout, R requests, F failed, max H of N gpu held`.

`rollwise demo --canary` (`run_canary`): the same deployment of 3 replicas with `strategy: canary`, steps
20 % → 50 % → 100 % (3 s pauses) and an analysis (a 2 s window, errors ≤ 5 %, at least 10 requests, 2
failed windows roll back), under the same traffic. A good v2 completes; a v3 started with
`--error-rate 0.2` (every 5th prediction answers 500, its health check stays green) is rolled back by
the analysis alone. Its load generator counts every answer by the version that gave it
(the example server names it in its 500s too), so the failures split in two: the bad canary's own 500s
before the rollback (expected, bounded by its weight and the analysis' windows; printed) and every other
failure, which must be 0. The last line is e.g. `demo --canary: 2 rollouts (completed, rolled back by
analysis: errors = 0.21 > 0.05), 2310 requests, 41 canary errors before the rollback, 0 other failures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from rollwise.cli.demo import free_port
from rollwise.cli.loadgen import LoadGenerator, VersionTally
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


async def render(ops: Operations, load: LoadGenerator | None, title: str, name: str = NAME,
                 capacity: Mapping[str, Any] | None = None) -> Panel:
    """The live view; with `capacity` (a `GET /v1/capacity` answer) also each route's gpu indices and the
    node's held/total slots."""
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
    # A canary's split at the proxy, as the control plane set it (None for the other strategies).
    weights = "".join(f"  {labels.get(n, f'r{n}')} {w}%" for n, w in sorted((dep.traffic_weights or {}).items()))
    head = (
        f"[bold]{name}[/]  lifecycle [cyan]{dep.lifecycle.value}[/]  sub-step [cyan]"
        f"{dep.sub_step.value if dep.sub_step else '-'}[/]  serving [green]{cur}[/]  deploying [yellow]{nxt}[/]\n"
        f"requests {sent}  failed [{'red' if failed else 'green'}]{failed}[/]"
        + (f"  weights{weights}" if weights else "")
    )
    parts: list[Any] = [head, table]
    if capacity is not None:
        parts.append(devices_panel(capacity, labels))
    return Panel(Group(*parts, events), title=title)


def devices_panel(capacity: Mapping[str, Any], labels: Mapping[int, str]) -> Group:
    """Held/total gpu slots, then each gpu index of the node and the route holding it (revision label,
    status), all as of the same `GET /v1/capacity` answer."""
    node = (capacity.get("nodes") or [{}])[0]
    total = int((node.get("total") or {}).get(GPU, 0))
    held = int((node.get("held") or {}).get(GPU, 0))
    holder: dict[int, Mapping[str, Any]] = {}
    waiting = 0
    for r in node.get("routes") or []:
        indices = (r.get("devices") or {}).get(GPU) or []
        waiting += 0 if indices else 1
        for i in indices:
            holder[int(i)] = r
    table = Table(box=None, header_style="bold")
    for col in ("gpu", "route", "revision", "status"):
        table.add_column(col)
    for i in range(total):
        r = holder.get(i)
        if r is None:
            table.add_row(str(i), "[dim]free[/]", "", "")
        else:
            table.add_row(str(i), str(r["id"])[:8], labels.get(int(r["revision"]), str(r["revision"])),
                          str(r.get("status")))
    line = f"gpu held [bold]{held}/{total}[/]" + (f"  ({waiting} route(s) not started yet)" if waiting else "")
    return Group(line, table)


async def wait_for(ops: Operations, pred: Any, live: Live | None, load: LoadGenerator | None, title: str,
                   workload: Workload = EXAMPLE, capacity: Callable[[], Mapping[str, Any] | None] = lambda: None) -> Any:
    """Redraw the live view until `pred(deployment)`; `capacity()`: the latest `GET /v1/capacity`, if any."""
    timeout = workload.rollout_timeout
    deadline = time.monotonic() + timeout
    while True:
        dep = await ops.get(workload.name)
        if live is not None:
            live.update(await render(ops, load, title, workload.name, capacity()))
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
        async with running(plane), api_client(plane, console):
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


# ----------------------------------------------------------------------------------------- demo --gpus N

GPU = "gpu"
GPU_POLICY: dict[str, Any] = {"strategy": "rolling"}
"""The default rolling policy: max surge 25%, max unavailable 0, capacity_fallback replace."""
SAMPLE_EVERY = 0.1
"""Seconds between two samples of the node's slots and the routes' devices."""
VERSION_TIMEOUT = 0.5
"""Seconds a route's /version may take to answer a sample (a draining route may not answer at all)."""
ALIVE = ("provisioning", "running", "terminating")


def gpu_revision(label: str) -> dict[str, Any]:
    """The example model server needing one gpu slot."""
    return revision(label) | {"resources": {GPU: 1}}


@dataclass
class Answer:
    """One /version answer of a route's process: when it was asked and answered, and its gpu indices."""

    sent: float
    received: float
    indices: frozenset[int]


@dataclass
class DeviceCheck:
    """What the samples saw of the node's gpu slots, and every problem found (each once)."""

    gpus: int
    samples: int = 0
    """Answers of GET /v1/capacity."""
    max_held: int = 0
    """The most gpu slots the node held in one sample."""
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    """route id -> its process's /version answers."""
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        text = " ".join(text.split())
        if text not in self.problems:
            self.problems.append(text)

    def observe_capacity(self, capacity: Mapping[str, Any]) -> None:
        """One GET /v1/capacity: held within total, and no index held by two routes."""
        self.samples += 1
        for node in capacity.get("nodes") or []:
            total = int((node.get("total") or {}).get(GPU, 0))
            held = int((node.get("held") or {}).get(GPU, 0))
            if total != self.gpus:
                self.problem(f"node {node.get('name')}: {total} gpu slots, not {self.gpus}")
            self.max_held = max(self.max_held, held)
            if held > self.gpus:
                self.problem(f"node {node.get('name')}: {held} gpu slots held, over {self.gpus}")
            owner: dict[int, str] = {}
            for route in node.get("routes") or []:
                for i in (route.get("devices") or {}).get(GPU) or []:
                    if int(i) in owner:
                        self.problem(f"gpu {i} held by routes {owner[int(i)]} and {route['id']} at once")
                    owner[int(i)] = str(route["id"])

    def observe_version(self, route: Mapping[str, Any], body: Mapping[str, Any], sent: float, received: float) -> None:
        """One process's /version: it received the indices its route holds (per the server)."""
        given = body.get("cuda_visible_devices")
        expected = sorted(int(i) for i in (route.get("devices") or {}).get(GPU) or [])
        try:
            indices = sorted(int(i) for i in str(given).split(",") if i.strip()) if given is not None else None
        except ValueError:
            indices = None
        if indices != expected:
            self.problem(f"route {route['id']}: its process has CUDA_VISIBLE_DEVICES={given!r}, the server says "
                         f"it holds gpu {expected}")
            return
        self.answers.setdefault(str(route["id"]), []).append(Answer(sent, received, frozenset(indices)))

    def check_processes(self) -> None:
        """No gpu index was in the CUDA_VISIBLE_DEVICES of two processes alive at the same moment.

        A process is certainly alive from the moment its first /version answer arrived to the moment its
        last was asked for (same route, same process); two processes sharing an index must not overlap
        there. (Looser bounds could blame a process that answered just before exiting.)"""
        alive = {rid: (min(a.received for a in answers), max(a.sent for a in answers),
                       frozenset().union(*(a.indices for a in answers)))
                 for rid, answers in self.answers.items()}
        for (a, (a0, a1, ia)), (b, (b0, b1, ib)) in itertools.combinations(sorted(alive.items()), 2):
            shared = ia & ib
            if shared and max(a0, b0) < min(a1, b1):
                self.problem(f"gpu {','.join(map(str, sorted(shared)))} given to the processes of routes {a} and "
                             f"{b} while both were alive")

    @property
    def processes(self) -> int:
        """Route processes that answered /version at least once."""
        return len(self.answers)


@dataclass
class GpuReport:
    """What one `demo --gpus N` run did."""

    gpus: int
    check: DeviceCheck
    rollout: Result | None = None
    requests: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def problems(self) -> list[str]:
        found = list(self.check.problems)
        if self.error is not None:
            found.insert(0, self.error)
        if self.failed:
            found.append(f"{self.failed} request(s) failed: {self.errors}")
        if self.rollout is not None and not self.rollout.as_planned:
            found.append(f"the rollout {self.rollout.outcome}, not {self.rollout.expected}")
        if self.check.samples == 0:
            found.append("GET /v1/capacity never answered")
        if self.check.processes == 0:
            found.append("no route process answered /version")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def line(self) -> str:
        done = 1 if self.rollout is not None else 0
        return (f"demo --gpus {self.gpus}: {done} rollout{'s' if done != 1 else ''}, {self.requests} requests, "
                f"{self.failed} failed, max {self.check.max_held} of {self.gpus} gpu held")


class _QuietUvicorn:
    """uvicorn serving the API on a socket, leaving Ctrl-C to the demo (no signal handlers of its own)."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.server = Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.sock = sock

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.sock])


@contextlib.asynccontextmanager
async def api_client(plane: Plane, console: Console | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API over the demo's plane on a free loopback port, and a client of it (with the token).
    With `console`, the dashboard's URL is printed, and the token is the server's (ROLLWISE_TOKEN, else a
    new one in DATA_DIR/token) so a person can sign in to watch."""
    from rollwise.api.app import create_app
    from rollwise.api.auth import load_or_create_token

    token = secrets.token_urlsafe(24) if console is None else load_or_create_token(plane.config.data_dir, None)[0]
    app = create_app(plane.ops, token=token, role=lambda: plane.role, coordinator=plane.coordinator,
                     proxy=plane.traffic)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    api = _QuietUvicorn(app, sock)
    task = asyncio.create_task(api.serve())
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    if console is not None:
        where = "ROLLWISE_TOKEN" if os.environ.get("ROLLWISE_TOKEN") else plane.config.data_dir / "token"
        console.print(f"dashboard: {base}/ui/ (token: {where})", highlight=False, soft_wrap=True)
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                     timeout=5.0, trust_env=False) as client:
            yield client
    finally:
        api.server.should_exit = True
        await task
        sock.close()


async def sample_capacity(api: httpx.AsyncClient, check: DeviceCheck, latest: list[Mapping[str, Any]],
                          stop: asyncio.Event) -> None:
    """GET /v1/capacity every SAMPLE_EVERY seconds until `stop`; `latest` keeps the newest (live view)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            capacity = (await api.get("/v1/capacity")).raise_for_status().json()
        except (httpx.HTTPError, ValueError) as e:
            check.problem(f"the API did not answer a sample: {type(e).__name__}: {str(e).splitlines()[0]}")
        else:
            check.observe_capacity(capacity)
            latest[:] = [capacity]
        await _pause(stop, started)


async def sample_processes(api: httpx.AsyncClient, check: DeviceCheck, stop: asyncio.Event,
                           name: str = NAME) -> None:
    """Every SAMPLE_EVERY seconds until `stop`: the deployment's routes (API), then the /version of every
    started route's process, at its own address, all at once."""
    async with httpx.AsyncClient(timeout=VERSION_TIMEOUT, trust_env=False) as routes_client:

        async def version_of(route: Mapping[str, Any]) -> None:
            sent = time.monotonic()
            try:
                response = await routes_client.get(f"http://{route['address']}/version")
                body = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                return  # not listening yet, or gone: nothing proved either way
            if isinstance(body, dict):
                check.observe_version(route, body, sent, time.monotonic())

        while not stop.is_set():
            started = time.monotonic()
            try:
                dep = (await api.get(f"/v1/deployments/{name}")).raise_for_status().json()
            except (httpx.HTTPError, ValueError) as e:
                check.problem(f"the API did not answer a sample: {type(e).__name__}: {str(e).splitlines()[0]}")
            else:
                started_routes = [r for r in dep.get("routes") or [] if r.get("address") and r["status"] in ALIVE]
                await asyncio.gather(*(version_of(r) for r in started_routes))
            await _pause(stop, started)


async def _pause(stop: asyncio.Event, since: float) -> None:
    """Until SAMPLE_EVERY seconds after `since`, or `stop`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, SAMPLE_EVERY - (time.monotonic() - since)))


async def run_gpu_demo(console: Console, *, rate: float, gpus: int, data_dir: Path) -> GpuReport:
    """A node of `gpus` fake gpu slots, as many replicas needing one each, one rolling rollout under
    traffic with the default policy; what the devices did is checked all along (module docstring)."""
    config = ServerConfig(
        data_dir=data_dir,
        proxy_port=free_port(),
        runtime="local",
        resources={GPU: gpus},
        intervals=Intervals(short=0.02, long=5.0, routes=0.1),
    )
    workload = Workload(name=NAME, revision=lambda label, broken: gpu_revision(label), path=EXAMPLE.path,
                        body=EXAMPLE.body)
    report = GpuReport(gpus, DeviceCheck(gpus))
    load: LoadGenerator | None = None
    latest: list[Mapping[str, Any]] = []

    def capacity() -> Mapping[str, Any] | None:
        return latest[0] if latest else None

    async with build_plane(config) as plane, running(plane), api_client(plane, console) as api:
        ops = plane.ops
        console.print(f"[bold]rollwise demo --gpus {gpus}[/]: data in {data_dir}, proxy on "
                      f"127.0.0.1:{config.proxy_port}, {gpus} gpu slots (fake), {gpus} replicas needing 1 each")
        await ops.create(name=NAME, replicas=gpus, policy=GPU_POLICY, revision=gpu_revision("v1"))
        stop_sampling = asyncio.Event()
        samplers = [asyncio.create_task(sample_capacity(api, report.check, latest, stop_sampling)),
                    asyncio.create_task(sample_processes(api, report.check, stop_sampling))]
        try:
            with Live(console=console, refresh_per_second=8, transient=not console.is_terminal) as live:
                try:
                    await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, live, None, "v1: scaling up",
                                   workload, capacity)
                    url = f"http://127.0.0.1:{config.proxy_port}/d/{NAME}{workload.path}"
                    async with LoadGenerator(url, rate=rate, body=workload.body) as load:
                        await asyncio.sleep(1.0)
                        rev = await ops.add_revision(NAME, gpu_revision("v2"))
                        sent0, failed0 = load.stats.snapshot()
                        t0 = time.monotonic()
                        await ops.activate(NAME, rev.number)
                        title = "v2: rolling rollout, no spare gpu"
                        dep = await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, live, load, title,
                                             workload, capacity)
                        sent1, failed1 = load.stats.snapshot()
                        completed = dep.sub_step is SubStep.COMPLETED and dep.current_revision == rev.number
                        outcome = "completed" if completed else "rolled_back"
                        report.rollout = Result("v2", "rolling", "completed", outcome, time.monotonic() - t0,
                                                sent1 - sent0, failed1 - failed0, t0, rev.number)
                        console.print(f"{title}: {outcome} in {time.monotonic() - t0:.1f}s")
                        await asyncio.sleep(0.5)
                except TimeoutError as e:
                    report.error = str(e)
            if report.error is None:
                console.print(await render(ops, load, "final state", NAME, capacity()))
        finally:
            stop_sampling.set()
            await asyncio.gather(*samplers)
    report.check.check_processes()
    if load is not None:
        report.requests, report.failed, report.errors = load.stats.sent, load.stats.failed, dict(load.stats.errors)
    return report


def run_gpus(console: Console, *, rate: float, gpus: int) -> int:
    """`rollwise demo --gpus N` in a temporary data directory; print the summary; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="rollwise-demo-") as tmp:
        report = asyncio.run(run_gpu_demo(console, rate=rate, gpus=gpus, data_dir=Path(tmp)))
    if report.rollout is not None:
        print_rollouts(console, [report.rollout])
    console.print(f"devices: {report.check.samples} capacity samples, {report.check.processes} route processes "
                  f"asked for their CUDA_VISIBLE_DEVICES")
    for problem in report.problems():
        console.print(f"[red]check failed: {problem}[/]")
    print(report.line(), flush=True)
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------------- demo --canary

CANARY_STEPS: list[dict[str, Any]] = [{"set_weight": 20}, {"pause": {"seconds": 3}},
                                      {"set_weight": 50}, {"pause": {"seconds": 3}}]
CANARY_ANALYSIS: dict[str, Any] = {
    "interval_seconds": 2, "failure_limit": 2, "min_requests": 10,
    "metrics": [{"name": "errors", "builtin": "error_rate", "max": 0.05}],
}
CANARY_POLICY: dict[str, Any] = {"strategy": "canary", "steps": CANARY_STEPS, "analysis": CANARY_ANALYSIS}
"""20 % → 50 % → 100 %, a 2 s window measured against errors ≤ 5 %, two failed windows roll back."""
CANARY_BAD_ERROR_RATE = "0.2"
"""v3's --error-rate: every 5th prediction answers 500; its /healthz stays healthy."""


@dataclass
class CanaryRollout:
    """One canary rollout of `demo --canary` and what the analysis made of it."""

    result: Result
    rollback_reason: str | None = None
    """The deployment's rollback_reason at the end (`analysis`...), None when it completed."""
    last_failure: str | None = None
    """The words of the newest failed measurement (`errors = 0.2 > 0.05`)."""
    measurements: list[str] = field(default_factory=list)
    """Every measurement of the rollout: `<verdict> <words>`, oldest first."""
    first_traffic: float | None = None
    """time.monotonic() of the first answer of the canary's version."""
    ended: float | None = None
    """time.monotonic() when the demo saw the rollout end."""

    def words(self) -> str:
        r = self.result
        if r.outcome == "completed":
            return "completed"
        why = self.rollback_reason or "?"
        return (f"rolled back by analysis: {self.last_failure}" if why == "analysis" and self.last_failure
                else f"rolled back ({why})")


@dataclass
class CanaryReport:
    """What one `demo --canary` run did: a good canary (v2) that completes, a bad one (v3, --error-rate)
    that the analysis rolls back, and the traffic's failures split into the bad canary's own answers
    (expected: bounded by its weight and the analysis' windows) and every other failure (must be 0)."""

    rollouts: list[CanaryRollout] = field(default_factory=list)
    bad_label: str = "v3"
    requests: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    by_version: dict[str, VersionTally] = field(default_factory=dict)
    error: str | None = None

    @property
    def canary_errors(self) -> int:
        """500s the bad canary gave itself (they name its version): what the analysis is there to catch."""
        tally = self.by_version.get(self.bad_label)
        return tally.errors if tally else 0

    @property
    def other_failures(self) -> int:
        return self.failed - self.canary_errors

    def problems(self) -> list[str]:
        found = [] if self.error is None else [self.error]
        expected = (("v2", "completed", None), (self.bad_label, "rolled_back", "analysis"))
        for (label, outcome, reason), done in itertools.zip_longest(expected, self.rollouts):
            if done is None:
                found.append(f"the {label} rollout did not end")
            elif done.result.outcome != outcome or done.rollback_reason != reason:
                found.append(f"the {label} rollout: {done.words()}, expected {outcome}"
                             + (f" by {reason}" if reason else ""))
        if self.other_failures:
            other = {k: n for k, n in self.errors.items() if k != f"HTTP 500 from {self.bad_label}"}
            found.append(f"{self.other_failures} request(s) failed other than the bad canary's own answers: {other}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def line(self) -> str:
        n = len(self.rollouts)
        return (f"demo --canary: {n} rollout{'s' if n != 1 else ''} ({', '.join(r.words() for r in self.rollouts)}), "
                f"{self.requests} requests, {self.canary_errors} canary errors before the rollback, "
                f"{self.other_failures} other failures")


def canary_revision(label: str, error_rate: str | None = None) -> dict[str, Any]:
    """The example model server; with `error_rate`, that share of its predictions answer 500."""
    return revision(label, ("--error-rate", error_rate) if error_rate else ())


async def run_canary_demo(console: Console, *, rate: float, replicas: int, data_dir: Path) -> CanaryReport:
    """v1, then a canary to a good v2 (completes), then to a v3 answering 20 % of its predictions with 500
    that the analysis rolls back, all under traffic (module docstring, `CanaryReport`)."""
    config = ServerConfig(
        data_dir=data_dir,
        proxy_port=free_port(),
        runtime="local",
        intervals=Intervals(short=0.02, long=5.0, routes=0.1),
    )
    report = CanaryReport()
    load: LoadGenerator | None = None
    async with build_plane(config) as plane, running(plane), api_client(plane, console):
        ops = plane.ops
        console.print(f"[bold]rollwise demo --canary[/]: data in {data_dir}, proxy on 127.0.0.1:{config.proxy_port}, "
                      f"steps 20% → 50% → 100%, analysis every {CANARY_ANALYSIS['interval_seconds']}s "
                      f"(errors ≤ {CANARY_ANALYSIS['metrics'][0]['max']:.0%}, {CANARY_ANALYSIS['failure_limit']} "
                      f"failures roll back)")
        await ops.create(name=NAME, replicas=replicas, policy=CANARY_POLICY, revision=canary_revision("v1"))
        with Live(console=console, refresh_per_second=8, transient=not console.is_terminal) as live:
            try:
                await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, live, None, "v1: scaling up")
                url = f"http://127.0.0.1:{config.proxy_port}/d/{NAME}{EXAMPLE.path}"
                load = LoadGenerator(url, rate=rate, body=EXAMPLE.body)
                async with load:
                    await asyncio.sleep(1.0)
                    for label, bad, expected in (("v2", None, "completed"),
                                                 (report.bad_label, CANARY_BAD_ERROR_RATE, "rolled_back")):
                        rev = await ops.add_revision(NAME, canary_revision(label, bad))
                        sent0, failed0 = load.stats.snapshot()
                        t0 = time.monotonic()
                        await ops.activate(NAME, rev.number)
                        title = f"{label}: canary" + (f" (--error-rate {bad})" if bad else "")
                        dep = await wait_for(ops, lambda d: d.lifecycle is Lifecycle.READY, live, load, title)
                        ended = time.monotonic()
                        sent1, failed1 = load.stats.snapshot()
                        outcome = "completed" if dep.sub_step is SubStep.COMPLETED else "rolled_back"
                        _, measured, tally = await ops.analysis(NAME)
                        done = CanaryRollout(
                            Result(label, "canary", expected, outcome, ended - t0, sent1 - sent0, failed1 - failed0,
                                   t0, rev.number),
                            rollback_reason=dep.rollback_reason.value if dep.rollback_reason else None,
                            last_failure=tally.last_failure,
                            measurements=[f"{m.verdict} {m.words}" for m in measured],
                            first_traffic=(load.by_version.get(label) or VersionTally()).first,
                            ended=ended)
                        report.rollouts.append(done)
                        console.print(f"{title}: {done.words()} in {ended - t0:.1f}s; analysis: "
                                      + ("; ".join(done.measurements) or "nothing measured"))
                        await asyncio.sleep(1.0)
            except TimeoutError as e:
                report.error = str(e)
        if report.error is None:
            console.print(await render(ops, load, "final state", NAME))
    if load is not None:
        stats = load.stats
        report.requests, report.failed, report.errors = stats.sent, stats.failed, dict(stats.errors)
        report.by_version = dict(load.by_version)
    return report


def run_canary(console: Console, *, rate: float, replicas: int) -> int:
    """`rollwise demo --canary` in a temporary data directory; print the summary; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="rollwise-demo-") as tmp:
        report = asyncio.run(run_canary_demo(console, rate=rate, replicas=replicas, data_dir=Path(tmp)))
    print_rollouts(console, [r.result for r in report.rollouts])
    bad = report.by_version.get(report.bad_label)
    rolled = next((r for r in report.rollouts if r.result.label == report.bad_label), None)
    if bad is not None and bad.first is not None and rolled is not None and rolled.ended is not None:
        console.print(f"{report.bad_label}: {bad.answers} answers through the proxy, {bad.errors} of them 500 "
                      f"(--error-rate {CANARY_BAD_ERROR_RATE}), from its first answer to the rollback "
                      f"{rolled.ended - bad.first:.1f}s")
    for problem in report.problems():
        console.print(f"[red]check failed: {problem}[/]")
    print(report.line(), flush=True)
    return 0 if report.ok else 1
