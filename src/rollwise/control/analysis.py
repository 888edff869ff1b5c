"""`AnalysisRunner`: measures the canary analysis of every analysed deployment once per interval and
stores the measurements (docs/control.md, "Analysis"). The strategy engine only reads their counts
(`Store.analysis_counts`, fed into the DEPLOYING cycle).

`run_due()` is called by the coordinator once per round, after the route pass:

1. Finished command metrics are collected (see 4).
2. At most every `poll_seconds` the DEPLOYING deployments are read; those analysed now
   (`rules.analysis.analysed_spec`: a forward canary with `analysis` whose canary has traffic) that need a
   first look or are due get ONE read of the proxy's counters (`TrafficLayer.revision_stats()`).
3. The counters are cumulative: the runner keeps the previous read of each analysed deployment in memory
   and a window is `traffic.stats.window(previous, now)` (a proxy restart resets the counters; `window`
   then takes what was counted since). The first look only keeps the counters: nothing is measured, and
   the first window starts there. A window ends, and the next starts, when its measurements are taken:
   `interval_seconds` after it started. A new rollout (another `rollout_started_at`) starts afresh, and so
   does a server that restarted (the memory is lost; at most one interval is not measured).
4. Builtin metrics are measured from the windows of the canary (the deploying revision) and the stable
   revision (the current one) at once. Command metrics run as asyncio subprocesses in a task of their own
   (the round does not wait for them): the argv with `ROLLWISE_CANARY_URL` (the deployment's URL on the
   proxy), `ROLLWISE_CANARY_REVISION` (`r2`), `ROLLWISE_DEPLOYMENT` and `PATH`/`HOME`/`LANG` of the
   server, in a session of their own, stdout and stderr read up to OUTPUT_BYTES each (the tail is kept),
   the whole process group killed at `timeout_seconds`. A deployment's next window starts only once its
   commands are done.
5. All the measurements of one interval (one row per metric) are written together, and every finished
   interval of the round in ONE `Store.add_measurements`; `run_due` returns how many rows it wrote.

Never raises for a metric's trouble: a proxy that does not answer, a command that cannot start or crashes
is an inconclusive measurement with the error as its words. Store errors propagate (the coordinator
logs them); rows a transient store error refused are written in the next round, rows the database refused
(their deployment was purged) are dropped.

Called by control.coordinator. Must not: decide anything about the rollout (it measures and stores).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rollwise.control.clock import Clock
from rollwise.control.errlog import ErrorLog
from rollwise.control.rules.analysis import (
    INCONCLUSIVE,
    WORDS_CHARS,
    Measured,
    analysed_spec,
    is_due,
    measure_builtin,
    measure_command,
    stable_revision,
)
from rollwise.control.rules.views import revision_key
from rollwise.model import AnalysisSpec, Lifecycle, MetricSpec, RollwiseError
from rollwise.store import Store, StoreError, StoreFailed
from rollwise.store.commands import NewMeasurement
from rollwise.store.records import DeploymentRecord
from rollwise.traffic.base import RevisionStats, TrafficLayer
from rollwise.traffic.stats import window

log = logging.getLogger(__name__)

OUTPUT_BYTES = 64 * 1024
"""Of a command's stdout and of its stderr, the last this many bytes are kept."""
ENV_KEPT = ("PATH", "HOME", "LANG")
"""The server's environment variables a command metric gets (besides the ROLLWISE_* ones)."""

ProxyUrl = Callable[[str], str]
"""Deployment name -> its URL on the proxy (e.g. http://127.0.0.1:8080/d/NAME/)."""


@dataclass(slots=True)
class _Look:
    """One read of a deployment's counters: where its next window starts."""

    rollout_started_at: datetime | None
    at: datetime
    stats: dict[int, RevisionStats]
    """Revision number -> cumulative counters at `at`."""


@dataclass(slots=True)
class _Interval:
    """One deployment's measurements of one window, some of them still running (commands)."""

    dep: DeploymentRecord
    start: datetime
    end: datetime
    measured: dict[str, Measured] = field(default_factory=dict)


class AnalysisRunner:
    def __init__(
        self,
        store: Store,
        traffic: TrafficLayer,
        clock: Clock,
        proxy_url: ProxyUrl | None = None,
        *,
        poll_seconds: float = 1.0,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        """`proxy_url`: the URL command metrics get as ROLLWISE_CANARY_URL (None: not set, no proxy).
        `poll_seconds`: how often the DEPLOYING deployments are read (a window ends at most that late).
        `wake`: called when a command metric finished, so its result is written soon."""
        self.store = store
        self.traffic = traffic
        self.clock = clock
        self.proxy_url = proxy_url
        self.poll_seconds = poll_seconds
        self._wake = wake
        self._looks: dict[int, _Look] = {}
        self._running: dict[int, asyncio.Task[_Interval]] = {}
        self._stopping: set[asyncio.Task[_Interval]] = set()
        self._unwritten: list[NewMeasurement] = []
        self._last_poll: float | None = None
        self._errors = ErrorLog(log, clock=clock.monotonic)

    # --- the round ------------------------------------------------------------------------------------

    async def run_due(self) -> int:
        """Measure what is due, write what was measured; the number of measurements written."""
        for interval in self._collect():
            self._unwritten.extend(self._rows(interval))
        mono = self.clock.monotonic()
        if self._last_poll is None or mono - self._last_poll >= self.poll_seconds:
            self._last_poll = mono
            for interval in await self._measure_due():
                self._unwritten.extend(self._rows(interval))
        rows, self._unwritten = self._unwritten, []
        if not rows:
            return 0
        try:
            await self.store.add_measurements(rows)
        except StoreFailed:
            raise  # refused for good (a deployment was purged meanwhile): these rows are dropped
        except StoreError:
            self._unwritten = rows + self._unwritten  # transient: written next time
            raise
        return len(rows)

    async def wait_running(self, timeout: float | None = None) -> None:
        """Wait until no command metric runs (at most `timeout` seconds); their results are written by the
        next `run_due`. For tests and a clean stop."""
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=timeout)

    async def close(self) -> None:
        """Stop the command metrics still running (their process groups are killed); nothing is written."""
        tasks = [*self._running.values(), *self._stopping]
        self._running.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- steps ----------------------------------------------------------------------------------------

    def _collect(self) -> list[_Interval]:
        done: list[_Interval] = []
        for dep_id, task in list(self._running.items()):
            if not task.done():
                continue
            del self._running[dep_id]
            if task.cancelled():
                continue
            try:
                done.append(task.result())
            except Exception as e:  # noqa: BLE001 - a bug in a command's task must not stop the analysis
                self._errors.report("command metric failed", e)
        return done

    async def _measure_due(self) -> list[_Interval]:
        deployments = await self.store.list_deployments([Lifecycle.DEPLOYING])
        now = self.clock.now()
        analysed: list[tuple[DeploymentRecord, AnalysisSpec]] = []
        for dep in deployments:
            spec = analysed_spec(dep)
            if spec is not None:
                analysed.append((dep, spec))
        self._forget({dep.id for dep, _ in analysed})
        wanted = [
            (dep, spec) for dep, spec in analysed
            if dep.id not in self._running and self._needs_look(dep, spec, now)
        ]
        if not wanted:
            return []
        stats: Mapping[tuple[str, int], RevisionStats] | None
        problem = ""
        try:
            stats = await self.traffic.revision_stats()
        except RollwiseError as e:
            stats, problem = None, e.message
        except Exception as e:  # noqa: BLE001 - the proxy's trouble is a metric's trouble: inconclusive
            self._errors.report("reading the proxy's counters failed", e)
            stats, problem = None, " ".join(str(e).split()) or type(e).__name__
        done: list[_Interval] = []
        for dep, spec in wanted:
            look = self._looks.get(dep.id)
            if stats is None:
                self._looks.pop(dep.id, None)  # the next window starts at the next successful read
                if look is not None and look.rollout_started_at == dep.rollout_started_at:
                    done.extend(self._start(dep, spec, look.at, now, None, None, problem))
                continue
            mine = {rev: s for (name, rev), s in stats.items() if name == dep.name}
            self._looks[dep.id] = _Look(dep.rollout_started_at, now, mine)
            if look is None or look.rollout_started_at != dep.rollout_started_at:
                continue  # the first look: the first window starts now
            done.extend(self._start(dep, spec, look.at, now, look.stats, mine, problem))
        return done

    def _needs_look(self, dep: DeploymentRecord, spec: AnalysisSpec, now: datetime) -> bool:
        look = self._looks.get(dep.id)
        if look is None or look.rollout_started_at != dep.rollout_started_at:
            return True
        return is_due(look.at, now, spec.interval_seconds)

    def _forget(self, analysed: set[int]) -> None:
        """Drop the memory of deployments no longer analysed (the rollout ended, rolls back, was paused out
        of traffic); their running commands are stopped, their results would count for nothing."""
        for dep_id in [d for d in self._looks if d not in analysed]:
            del self._looks[dep_id]
        for dep_id in [d for d in self._running if d not in analysed]:
            self._stop(self._running.pop(dep_id))

    def _stop(self, task: asyncio.Task[_Interval]) -> None:
        """Cancel a command task (its process groups are killed) and hold it until it has finished."""
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _start(
        self,
        dep: DeploymentRecord,
        spec: AnalysisSpec,
        start: datetime,
        end: datetime,
        before: Mapping[int, RevisionStats] | None,
        after: Mapping[int, RevisionStats] | None,
        problem: str,
    ) -> list[_Interval]:
        """Measure one window: the builtins now; the commands in a task (then [] is returned and the
        interval comes back through `_collect`)."""
        interval = _Interval(dep, start, end)
        canary_rev = dep.deploying_revision
        assert canary_rev is not None  # analysed_spec checked it
        stable_rev = stable_revision(dep)
        commands: list[MetricSpec] = []
        for metric in spec.metrics:
            if metric.command is not None:
                commands.append(metric)
            elif before is None or after is None:
                words = f"inconclusive: the proxy's counters could not be read: {problem}"
                interval.measured[metric.name] = Measured(INCONCLUSIVE, None, words[:WORDS_CHARS])
            else:
                canary = _window(before, after, canary_rev)
                stable = None if stable_rev is None else _window(before, after, stable_rev)
                try:
                    interval.measured[metric.name] = measure_builtin(
                        metric, canary, stable, min_requests=spec.min_requests
                    )
                except Exception as e:  # noqa: BLE001 - a metric that errors is inconclusive, never a crash
                    interval.measured[metric.name] = Measured(INCONCLUSIVE, None, f"inconclusive: {e}"[:WORDS_CHARS])
        if not commands:
            return [interval]
        self._running[dep.id] = asyncio.create_task(self._run_commands(interval, commands))
        return []

    async def _run_commands(self, interval: _Interval, commands: Sequence[MetricSpec]) -> _Interval:
        env = self._environment(interval.dep)
        results = await asyncio.gather(*(run_command(metric, env) for metric in commands))
        for metric, measured in zip(commands, results, strict=True):
            interval.measured[metric.name] = measured
        self._wake()
        return interval

    def _environment(self, dep: DeploymentRecord) -> dict[str, str]:
        env = {key: os.environ[key] for key in ENV_KEPT if key in os.environ}
        env["ROLLWISE_DEPLOYMENT"] = dep.name
        env["ROLLWISE_CANARY_REVISION"] = revision_key(dep.deploying_revision) or ""
        if self.proxy_url is not None:
            env["ROLLWISE_CANARY_URL"] = self.proxy_url(dep.name)
        return env

    def _rows(self, interval: _Interval) -> list[NewMeasurement]:
        dep = interval.dep
        assert dep.deploying_revision is not None and dep.rollout_started_at is not None
        at = self.clock.now()
        policy = dep.policy
        names = [m.name for m in policy.analysis.metrics] if policy is not None and policy.analysis else []
        return [
            NewMeasurement(
                deployment_id=dep.id, revision=dep.deploying_revision, rollout_started_at=dep.rollout_started_at,
                metric=name, verdict=measured.verdict, value=measured.value, words=measured.words,
                window_start=interval.start, window_end=interval.end, at=at,
            )
            for name in names
            if (measured := interval.measured.get(name)) is not None
        ]


def _window(before: Mapping[int, RevisionStats], after: Mapping[int, RevisionStats], revision: int) -> RevisionStats:
    """The counts of `revision` in the window; nothing when the proxy does not count it (yet)."""
    now = after.get(revision)
    if now is None:
        return RevisionStats()
    return window(before.get(revision), now)


# ------------------------------------------------------------------------------------- one command


async def run_command(metric: MetricSpec, env: Mapping[str, str]) -> Measured:
    """Run a command metric and judge it (`rules.analysis.measure_command`); never raises but for
    cancellation (which kills its process group first)."""
    argv = list(metric.command or ())
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
    except (OSError, ValueError) as e:
        return measure_command(metric, exit_code=None, error=_error_words(e))
    assert proc.stdout is not None and proc.stderr is not None
    reading = asyncio.gather(_tail(proc.stdout), _tail(proc.stderr))
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), timeout=metric.timeout_seconds)
        except TimeoutError:
            timed_out = True
            _kill_group(proc)
            await proc.wait()
        try:
            out, err = await asyncio.wait_for(reading, timeout=1.0)
        except TimeoutError:  # a grandchild that left the group keeps the pipes open: take what came
            reading.cancel()
            out, err = b"", b""
    except BaseException:
        _kill_group(proc)
        reading.cancel()
        with contextlib.suppress(BaseException):
            await proc.wait()
        raise
    output = out.decode("utf-8", "replace")
    if not output.strip():
        output = err.decode("utf-8", "replace")
    return measure_command(metric, exit_code=None if timed_out else proc.returncode, timed_out=timed_out,
                           output=output)


async def _tail(stream: asyncio.StreamReader) -> bytes:
    """Everything the stream gives until its end, keeping only the last OUTPUT_BYTES."""
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-OUTPUT_BYTES:]
    return kept


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the command's process group (it runs in a session of its own: its children go too), while
    the command itself has not been reaped (its pid is the group's id only until then)."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _error_words(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such program"
    if isinstance(e, PermissionError):
        return "permission denied"
    return " ".join(str(e).split()) or type(e).__name__
