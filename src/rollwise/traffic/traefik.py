"""`TraefikLayer`: the default traffic layer, a local Traefik process fed through its file provider.

Called by the rollwise server (start, ensure_running, close, detach) and the route controller (apply,
confirm_removed, wait_applied); the REST API's `/metrics` may call `request_counts`; the control layer
reads `revision_stats` (per-revision counters for canary analysis). It implements
`rollwise.traffic.base.TrafficLayer`.

Files under `data_dir/traefik/` (directory 0700, files 0600): `traefik.yml` (static configuration),
`dynamic.yml` (the routing table, replaced atomically), `traefik.pid` (pid and process identity),
`traefik.log` (Traefik's stdout and stderr), `plugins-local/` (the source of the plugin that answers 404
for an unknown revision, `_traefik_plugin`; Traefik runs in this directory to find it) and, when asked
for, `access.log`. Traefik serves deployment NAME under `/d/NAME/` on `host:proxy_port` (split between
revisions by weight; `X-Rollwise-Revision: rN` pins a request to revision N), and its API, ping and
Prometheus metrics on `api_host:api_port` (loopback by default: the API is unauthenticated). The shape
of the configuration is described in `_traefik_config` and docs/traffic.md.

Process life: `start()` adopts the Traefik a previous server of this data directory left running when it
is verifiably ours and runs the static configuration this layer would write; otherwise it stops that one
and starts a new one. `ensure_running()` restarts a dead Traefik with the current table. `close()` stops
Traefik; `detach()` leaves it running for the next server.

This module must not import rollwise.runtime, store or control (docs/architecture.md, "Layers"), must not leave a
Traefik running after `close()`, must not pass the server's environment (tokens) to Traefik, and
translates OS and HTTP errors into TrafficFailure at its boundary; `confirm_removed` and `wait_applied`
never raise for an unreachable API (they answer False).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from rollwise.traffic import _traefik_config as cfg
from rollwise.traffic import _traefik_plugin as plugin
from rollwise.traffic import _traefik_process as proc
from rollwise.traffic.base import Backend, RevisionStats, TrafficFailure, TrafficUnavailable
from rollwise.traffic.stats import was_reset

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 10.0
ADOPT_TIMEOUT_SECONDS = 2.0
"""An adopted Traefik answers at once; one that does not within this is replaced."""
API_TIMEOUT_SECONDS = 2.0
POLL_SECONDS = 0.02
DEFAULT_IDLE_TIMEOUT = 1.0
"""Seconds an idle connection from Traefik to a backend stays open: below the keep-alive of common
servers (gunicorn 2 s, uvicorn and hypercorn 5 s), so Traefik, not the backend, closes it."""
PASSED_ENV = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")
"""The only variables of the server's environment Traefik gets (never ROLLWISE_TOKEN, TRAEFIK_*...)."""
DATA_DIR_MARKER = "ROLLWISE_DATA_DIR"
"""Set in Traefik's environment so operators and test finalizers can find it; the local runtime counts
a process as a route only when it also carries ROLLWISE_ROUTE_ID, which Traefik never gets."""


class TraefikLayer:
    """A Traefik process run (or adopted) by this object, and the routing table it serves."""

    def __init__(
        self,
        data_dir: Path,
        *,
        proxy_port: int,
        api_port: int | None = None,
        host: str = "127.0.0.1",
        api_host: str = "127.0.0.1",
        binary: Path | None = None,
        throttle: str = "50ms",
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        access_log: bool = False,
    ) -> None:
        """`api_port` None picks a free port at the first start (kept across restarts while free; an
        adopted Traefik keeps its own). `throttle` is Traefik's providersThrottleDuration.
        `idle_timeout` (seconds) must stay below the keep-alive timeout of every backend."""
        if not (math.isfinite(idle_timeout) and idle_timeout > 0):
            # 0 would mean "no limit" to Traefik: exactly the stale-connection race this prevents.
            raise ValueError(f"idle_timeout must be a positive number of seconds, not {idle_timeout!r}")
        self.data_dir = Path(data_dir).resolve()
        self.dir = self.data_dir / "traefik"
        self.static_file = self.dir / "traefik.yml"
        self.dynamic_file = self.dir / "dynamic.yml"
        self.pid_file = self.dir / "traefik.pid"
        self.log_file = self.dir / "traefik.log"
        self.access_log_file = self.dir / "access.log"
        self.proxy_port = proxy_port
        self.api_port = api_port
        self._api_port_requested = api_port
        self.host = host
        self.api_host = api_host
        self.idle_timeout = idle_timeout
        self._binary = binary
        self._throttle = throttle
        self._access_log = access_log
        self._process: proc.TraefikProcess | None = None
        self._supervising = False
        """True between a successful start() and close()/detach(): ensure_running() acts only then."""
        self._client: httpx.AsyncClient | None = None
        self._lifecycle_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._services: dict[str, tuple[Backend, ...]] = {}
        self._written_text: str | None = None
        self._written_digest: str | None = None
        self._stats_seen: dict[tuple[str, int], RevisionStats] = {}
        """The last counters Traefik reported per revision (as read, before `started` is adjusted)."""
        self._stats_reset_at: dict[tuple[str, int], float] = {}
        """time.time() when a revision's counters were seen to restart while Traefik did not."""
        self._stats_lock = asyncio.Lock()
        """One read of the metrics at a time: reads compared out of order would look like resets."""
        self.restarts = 0
        """How many times `ensure_running` brought a dead Traefik back."""
        self.down_since: float | None = None
        """time.monotonic() when Traefik was first seen down while started; None while it runs."""
        self.adopted = False
        """True when the running Traefik was adopted from a previous server rather than started."""

    # -- public API ---------------------------------------------------------------------------------

    @property
    def proxy_url(self) -> str:
        """Base URL of the proxy, e.g. http://127.0.0.1:8080 (deployment NAME is under /d/NAME/)."""
        return f"http://{proc.join_host_port(self.host, self.proxy_port)}"

    @property
    def api_url(self) -> str:
        if self.api_port is None:
            raise TrafficFailure("the traefik API port is chosen at start(); start the layer first")
        return f"http://{proc.join_host_port(self.api_host, self.api_port)}"

    @property
    def services(self) -> Mapping[str, tuple[Backend, ...]]:
        """The routing table of the last `apply` (empty before the first one)."""
        return dict(self._services)

    @property
    def pid(self) -> int | None:
        """The pid of the running Traefik (started or adopted by this layer), or None."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """True while our Traefik (started or adopted) is alive. Reaps it when it died as our child,
        and notes `down_since` when a started layer first sees it down."""
        alive = self._process is not None and self._process.alive()
        if not alive and self._supervising and self.down_since is None:
            self.down_since = time.monotonic()
        return alive

    async def start(self) -> None:
        """Make Traefik run for this data directory and return once its API answers and its proxy port
        accepts connections. Idempotent while it runs.

        Adopts a running Traefik named by the pid file when it is verifiably ours (same process
        identity, command line naming this directory's `traefik.yml`) and its static configuration is
        the one this layer would write: the proxy never stops. Otherwise stops that process and starts
        a new one, with the table of an `apply` made before `start` (or else the existing dynamic.yml)
        written before Traefik listens; a new Traefik is ready only once it reports that table loaded.
        Raises TrafficFailure (binary missing, port taken, Traefik exits or is not ready)."""
        async with self._lifecycle_lock:
            if not self.running:
                await self._bring_up()
            self._supervising = True
            self.down_since = None

    async def ensure_running(self) -> bool:
        """If the started Traefik is down: log one warning, start it again with the last written table
        on the same ports, count it in `restarts` and return True. False when it was running or the
        layer is not started (never started, closed or detached). Raises TrafficFailure when the
        restart failed (`down_since` stays set; the next call tries again)."""
        async with self._lifecycle_lock:
            if not self._supervising or self.running:
                return False
            dead = self._process
            if dead is not None:
                code = "unknown exit code" if dead.exit_code is None else f"exit code {dead.exit_code}"
                logger.warning(
                    "traefik pid %s exited (%s); restarting it with the current routing table",
                    dead.pid,
                    code,
                )
            # The dead process is forgotten here, so a failed attempt does not warn again next time.
            await self._forget_process()
            await self._bring_up()
            self.restarts += 1
            down_for = time.monotonic() - (self.down_since or time.monotonic())
            self.down_since = None
            logger.info("traefik restarted as pid %s after %.2f s down", self.pid, down_for)
            return True

    async def apply(self, services: Mapping[str, Sequence[Backend]]) -> None:
        """Replace the whole routing table and return once the file is written (not yet loaded: see
        `wait_applied`). The table is served as given (no proxy health checks). Rewrites nothing when
        unchanged. Works before `start` too (the table is then in place before Traefik listens).
        Raises ValidationFailed for a bad deployment name or weight (then nothing is written)."""
        table = {k: tuple(v) for k, v in services.items()}
        async with self._write_lock:  # renders too, so concurrent applies land in call order
            # Off the event loop: 1,000 deployments take about 50 ms to build and render.
            text, digest = await asyncio.to_thread(_render, table)
            if text != self._written_text:
                try:
                    await asyncio.to_thread(self._write_dynamic, text)
                except OSError as e:
                    raise TrafficFailure(f"cannot write {self.dynamic_file}: {e}") from e
                self._written_text, self._written_digest = text, digest
            self._services = table

    async def confirm_removed(self, deployment: str, addresses: Sequence[str]) -> bool:
        """True when Traefik has loaded the last written table and reports none of `addresses` as a
        server of `deployment`. False otherwise, including when the API does not answer."""
        data = await self._rawdata_or_none()
        if data is None or data.digest is None or data.digest != self._written_digest:
            return False
        present = data.servers.get(deployment, frozenset())
        return not present.intersection(cfg.server_url(a) for a in addresses)

    async def wait_applied(self, timeout: float = 5.0) -> bool:
        """Poll the API until Traefik reports the last written table; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if await self._serves_written_table():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)

    async def config_errors(self) -> dict[str, tuple[str, ...]]:
        """Traefik's error messages for rollwise's objects (router, middleware or service name ->
        messages); empty when Traefik accepted everything. Raises TrafficUnavailable."""
        return dict((await self._rawdata()).errors)

    async def revision_stats(self) -> dict[tuple[str, int], RevisionStats]:
        """(deployment, revision) -> Traefik's cumulative counters of that revision: every revision of
        the last applied table (zeros until Traefik counts it) and any other Traefik still counts.
        `started` is Traefik's start time, or the time this layer saw the revision's counters restart
        (Traefik drops a service's counters once it is no longer configured and its metrics are read).
        Raises TrafficUnavailable when the API does not answer."""
        async with self._stats_lock:
            text = await self._get_text("/metrics")
            try:
                parsed = cfg.parse_revision_stats(text, cfg.revision_keys(self._services))
            except (ValueError, KeyError) as e:
                raise TrafficUnavailable(f"unreadable traefik metrics: {e}") from e
            return self._note_resets(parsed)

    def _note_resets(self, parsed: Mapping[tuple[str, int], RevisionStats]) -> dict[tuple[str, int], RevisionStats]:
        """Give each revision the `started` since which its counters count, noting the restarts of a
        revision's counters within one Traefik (its counters vanished or went down since the last read)."""
        now = time.time()
        for key, seen in self._stats_seen.items():
            current = parsed.get(key)
            if current is None or (current.started == seen.started and was_reset(seen, current)):
                self._stats_reset_at[key] = now
        self._stats_seen = dict(parsed)
        started = max((s.started for s in parsed.values()), default=0.0)
        self._stats_reset_at = {k: t for k, t in self._stats_reset_at.items() if t > started}
        return {
            key: replace(s, started=max(s.started, self._stats_reset_at.get(key, 0.0)))
            for key, s in parsed.items()
        }

    async def request_counts(self) -> dict[str, dict[int, int]]:
        """Requests served per deployment and HTTP status since Traefik started, from its Prometheus
        metrics (requests answered by a backend; a 503 for a deployment without backends is not
        counted). Raises TrafficUnavailable when the API does not answer."""
        text = await self._get_text("/metrics")
        try:
            return cfg.parse_request_counts(text)
        except ValueError as e:
            raise TrafficUnavailable(f"unreadable traefik metrics: {e}") from e

    async def close(self) -> None:
        """Stop Traefik, started or adopted (SIGTERM, SIGKILL after 5 s), and remove its pid file.
        Idempotent. A clean server stop leaves nothing running."""
        async with self._lifecycle_lock:
            self._supervising = False
            self.down_since = None
            await self._close_client()  # first: an open keep-alive makes Traefik's shutdown wait
            await self._stop_process()

    async def detach(self) -> None:
        """Forget Traefik without stopping it: it keeps serving the last table, and its pid file stays
        for the next server to adopt it (a server that lost the active role calls this)."""
        async with self._lifecycle_lock:
            self._supervising = False
            self.down_since = None
            await self._close_client()
            process, self._process = self._process, None
            if process is not None:
                process.release()

    # -- bringing Traefik up ------------------------------------------------------------------------

    async def _bring_up(self) -> None:
        """Adopt the Traefik of the pid file when possible, else (stop it and) start a new one."""
        await self._forget_process()
        try:
            proc.ensure_private_dir(self.dir)
            proc.tighten_files(self._private_files())
        except OSError as e:
            raise TrafficFailure(f"cannot use {self.dir}: {e}") from e
        record = proc.read_pid_file(self.pid_file)
        found = None if record is None else proc.TraefikProcess.pin(record, self.static_file)
        if found is not None:
            reason = await self._adopt(found)
            if reason is None:
                return
            logger.warning(
                "stopping traefik pid %s left running by a previous server instead of adopting it: %s",
                found.pid,
                reason,
            )
            await found.stop()
        with contextlib.suppress(OSError):
            self.pid_file.unlink()  # names nothing of ours (any more)
        await self._launch()

    async def _adopt(self, found: proc.TraefikProcess) -> str | None:
        """Take over `found` without restarting it. Returns None when adopted, else why not."""
        if not found.identity_verified:
            return "its pid file records no process identity (written by an older rollwise)"
        try:
            running_static: Any = json.loads(self.static_file.read_text())
        except (OSError, ValueError) as e:
            return f"cannot read the static configuration it runs: {e}"
        api_port = self._api_port_requested or cfg.api_port_of(running_static)
        if api_port is None:
            return "its static configuration names no API port"
        differences = cfg.static_differences(running_static, self._static_config(api_port))
        if differences:
            return "its static configuration differs in " + ", ".join(differences)
        self.api_port = api_port
        self._client = self._new_client()
        if not await self._ready(found, ADOPT_TIMEOUT_SECONDS):
            await self._close_client()
            return "its API or proxy port does not answer"
        try:
            async with self._write_lock:
                await asyncio.to_thread(self._take_over_dynamic)
        except OSError as e:
            await self._close_client()
            raise TrafficFailure(f"cannot write {self.dynamic_file}: {e}") from e
        self._process, self.adopted = found, True
        logger.info(
            "adopted traefik pid %s left running by a previous server (proxy %s, API %s)",
            found.pid,
            self.proxy_url,
            self.api_url,
        )
        return None

    async def _launch(self) -> None:
        binary = proc.resolve_binary(self._binary)
        api_port = self._choose_api_port()
        proc.check_port_free(self.host, self.proxy_port, what="proxy")
        proc.check_port_free(self.api_host, api_port, what="traefik API")
        self.api_port = api_port
        try:
            async with self._write_lock:
                # The routing table is in dynamic.yml before Traefik exists, so it never serves less.
                await asyncio.to_thread(self._prepare_files, api_port)
            log_fd = proc.open_append_private(self.log_file)
        except OSError as e:
            raise TrafficFailure(f"cannot write traefik files in {self.dir}: {e}") from e
        try:
            log_offset = os.fstat(log_fd).st_size
            process = proc.TraefikProcess.spawn(
                [str(binary), f"--configFile={self.static_file}"],
                env=self._environment(),
                log_fd=log_fd,
                cwd=self.dir,
            )
        finally:
            os.close(log_fd)
        self._process, self.adopted = process, False
        try:
            proc.write_pid_file(self.pid_file, process.pid, process.identity)
        except OSError as e:
            await self._stop_process()
            raise TrafficFailure(f"cannot write {self.pid_file}: {e}") from e
        self._client = self._new_client()
        if await self._ready(process, START_TIMEOUT_SECONDS, table_loaded=True):
            return
        if process.alive():
            problem = f"traefik did not become ready within {START_TIMEOUT_SECONDS:.0f} s"
        else:
            problem = f"traefik exited at start (code {process.exit_code})"
        await self._close_client()
        await self._stop_process()
        raise TrafficFailure(
            f"{problem}; last lines of {self.log_file}:\n"
            + proc.log_tail(self.log_file, since=log_offset)
        )

    def _choose_api_port(self) -> int:
        if self._api_port_requested is not None:
            return self._api_port_requested
        if self.api_port is not None and proc.port_is_free(self.api_host, self.api_port):
            return self.api_port  # a restart keeps the API where it was
        return proc.pick_free_port(self.api_host)

    def _environment(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env[DATA_DIR_MARKER] = str(self.data_dir)
        return env

    def _static_config(self, api_port: int) -> dict[str, Any]:
        return cfg.compute_static_config(
            proxy_address=proc.join_host_port(self.host, self.proxy_port),
            api_address=proc.join_host_port(self.api_host, api_port),
            dynamic_file=str(self.dynamic_file),
            throttle=self._throttle,
            idle_timeout=cfg.format_duration(self.idle_timeout),
            access_log=str(self.access_log_file) if self._access_log else None,
        )

    def _private_files(self) -> list[Path]:
        return [self.static_file, self.dynamic_file, self.pid_file, self.log_file, self.access_log_file]

    def _prepare_files(self, api_port: int) -> None:
        proc.atomic_write(self.static_file, json.dumps(self._static_config(api_port), indent=2) + "\n")
        proc.write_private_tree(self.dir, plugin.files())  # read by Traefik from its working directory
        if self._access_log:
            os.close(proc.open_append_private(self.access_log_file))  # Traefik would create it 0644
        self._take_over_dynamic()

    def _take_over_dynamic(self) -> None:
        """Make dynamic.yml hold the table this layer answers for: the one of an `apply` made before
        (written unless already there), else the existing file of a previous server (its digest is
        known from its marker), else an empty table."""
        try:
            existing: str | None = self.dynamic_file.read_text()
        except (OSError, UnicodeDecodeError):
            existing = None
        if self._written_text is not None:
            if existing != self._written_text:
                self._write_dynamic(self._written_text)
            return
        digest = None if existing is None else _digest_of(existing)
        if existing is not None and digest is not None:
            self._written_text, self._written_digest = existing, digest
            return
        text, digest = _render({})
        self._write_dynamic(text)
        self._written_text, self._written_digest = text, digest

    def _write_dynamic(self, text: str) -> None:
        proc.ensure_private_dir(self.dir)
        proc.atomic_write(self.dynamic_file, text)

    async def _ready(
        self, process: proc.TraefikProcess, timeout: float, *, table_loaded: bool = False
    ) -> bool:
        """Wait until the API answers and the proxy port accepts connections (and, with
        `table_loaded`, Traefik reports the written table). False when `process` exits or on timeout."""
        deadline = time.monotonic() + timeout
        while process.alive():
            if (
                await self._api_answers()
                and await proc.is_port_open(self.host, self.proxy_port)
                and (not table_loaded or await self._serves_written_table())
            ):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return False

    # -- tearing down -------------------------------------------------------------------------------

    async def _forget_process(self) -> None:
        """Drop what is left of a Traefik that died: its API client, its pid file."""
        await self._close_client()
        process, self._process = self._process, None
        if process is not None:
            proc.remove_pid_file_if(self.pid_file, process.pid)
            process.release()

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            await process.stop()
        finally:
            proc.remove_pid_file_if(self.pid_file, process.pid)
            process.release()

    async def _close_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- API ----------------------------------------------------------------------------------------

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api_url, timeout=API_TIMEOUT_SECONDS, trust_env=False)

    async def _api_answers(self) -> bool:
        try:
            text = await self._get_text("/api/version")
        except TrafficUnavailable:
            return False
        return '"Version"' in text

    async def _serves_written_table(self) -> bool:
        data = await self._rawdata_or_none()
        return data is not None and data.digest is not None and data.digest == self._written_digest

    async def _get_text(self, path: str) -> str:
        if self._client is None:
            raise TrafficUnavailable("traefik is not started")
        try:
            response = await self._client.get(path)
            response.raise_for_status()
        except httpx.HTTPError as e:
            raise TrafficUnavailable(f"traefik API {path}: {e!r}") from e
        return response.text

    async def _rawdata(self) -> cfg.RawData:
        text = await self._get_text("/api/rawdata")
        try:
            raw: Any = json.loads(text)
            return cfg.parse_rawdata(raw)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TrafficUnavailable(f"unreadable traefik /api/rawdata: {e!r}") from e

    async def _rawdata_or_none(self) -> cfg.RawData | None:
        try:
            return await self._rawdata()
        except TrafficUnavailable as e:
            logger.debug("traefik API not answering: %s", e)
            return None


def _render(services: Mapping[str, Sequence[Backend]]) -> tuple[str, str]:
    return cfg.render_dynamic_config(cfg.compute_dynamic_config(services))


def _digest_of(text: str) -> str | None:
    """The marker digest inside a dynamic file written earlier, or None when it has none."""
    try:
        raw = json.loads(text)
        value = raw["http"]["middlewares"][cfg.MARKER_MIDDLEWARE]["headers"]["customRequestHeaders"]
        return str(value[cfg.MARKER_HEADER])
    except (ValueError, KeyError, TypeError):
        return None
