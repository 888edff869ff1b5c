"""`TraefikLayer`: the default traffic layer, a local Traefik process fed through its file provider.

Called by the rollwise server (start/close) and the route controller (apply, confirm_removed); the
REST API's `/metrics` may call `request_counts`. It implements `rollwise.traffic.base.TrafficLayer`.

Files under `data_dir/traefik/`: `traefik.yml` (static configuration), `dynamic.yml` (the routing
table, replaced atomically), `traefik.pid`, `traefik.log` (Traefik's stdout and stderr) and, when
asked for, `access.log`. Traefik serves deployment NAME under `/d/NAME/` on `host:proxy_port`, and its
API, ping and Prometheus metrics on `api_host:api_port` (loopback by default: the API is unauthenticated).
The shape of the dynamic configuration is described in `_traefik_config` and docs/traffic.md.

This module must not import rollwise.runtime, store or control (DESIGN.md, "Layers"), must not leave a
Traefik running after `close()`, and translates OS and HTTP errors into TrafficFailure at its boundary;
`confirm_removed` and `wait_applied` never raise for an unreachable API (they answer False).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from rollwise.traffic import _traefik_config as cfg
from rollwise.traffic import _traefik_process as proc
from rollwise.traffic.base import Backend, TrafficFailure, TrafficUnavailable

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 10.0
API_TIMEOUT_SECONDS = 2.0
POLL_SECONDS = 0.02


class TraefikLayer:
    """A Traefik process owned by this object, and the routing table it serves."""

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
        health_interval: str = "1s",
        health_timeout: str = "1s",
        access_log: bool = False,
    ) -> None:
        """`api_port` None picks a free port at start. `throttle` is Traefik's
        providersThrottleDuration. `health_interval`/`health_timeout` apply to deployments given a
        health path in `apply`."""
        self.dir = Path(data_dir) / "traefik"
        self.static_file = self.dir / "traefik.yml"
        self.dynamic_file = self.dir / "dynamic.yml"
        self.pid_file = self.dir / "traefik.pid"
        self.log_file = self.dir / "traefik.log"
        self.proxy_port = proxy_port
        self.api_port = api_port
        self._api_port_requested = api_port
        self.host = host
        self.api_host = api_host
        self._binary = binary
        self._throttle = throttle
        self._health_interval = health_interval
        self._health_timeout = health_timeout
        self._access_log = access_log
        self._process: subprocess.Popen[bytes] | None = None
        self._client: httpx.AsyncClient | None = None
        self._write_lock = asyncio.Lock()
        self._services: dict[str, tuple[Backend, ...]] = {}
        self._written_text: str | None = None
        self._written_digest: str | None = None

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
        """The pid of the running Traefik started by this layer, or None."""
        p = self._process
        return p.pid if p is not None and p.poll() is None else None

    async def start(self) -> None:
        """Start Traefik and return once its API answers and the proxy port accepts connections.
        Stops a Traefik left running by a previous layer of the same data directory first. Keeps an
        existing dynamic.yml (the previous routing table serves until the first `apply`).
        Idempotent: returns at once while our Traefik runs, and starts a new one if it died (a
        supervisor may simply call `start()` again when `pid` is None)."""
        if self.pid is not None:
            return
        await self.close()  # what is left of a Traefik that died: its client, pid file
        binary = proc.resolve_binary(self._binary)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrafficFailure(f"cannot create {self.dir}: {e}") from e
        stale = await proc.stop_stale(self.pid_file, self.static_file)
        if stale is not None:
            logger.warning("stopped traefik pid %s left running by a previous server", stale)
        api_port = self._api_port_requested
        if api_port is None:
            api_port = proc.pick_free_port(self.api_host)
        self.api_port = api_port
        proc.check_port_free(self.host, self.proxy_port, what="proxy")
        proc.check_port_free(self.api_host, api_port, what="traefik API")
        try:
            async with self._write_lock:
                await asyncio.to_thread(self._prepare_files)
        except OSError as e:
            raise TrafficFailure(f"cannot write traefik configuration in {self.dir}: {e}") from e
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        try:
            with self.log_file.open("ab") as log:
                self._process = subprocess.Popen(
                    [str(binary), f"--configFile={self.static_file}"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            proc.write_pid_file(self.pid_file, self._process.pid)
        except OSError as e:
            await self._stop_process()
            raise TrafficFailure(f"cannot start traefik ({binary}): {e}") from e
        self._client = httpx.AsyncClient(
            base_url=self.api_url, timeout=API_TIMEOUT_SECONDS, trust_env=False
        )
        try:
            await self._wait_ready(log_offset)
        except BaseException:
            await self.close()
            raise

    async def apply(
        self,
        services: Mapping[str, Sequence[Backend]],
        *,
        health_paths: Mapping[str, str] | None = None,
    ) -> None:
        """Replace the whole routing table and return once the file is written (not yet loaded: see
        `wait_applied`). `health_paths` maps a deployment to the path Traefik should probe on each of
        its backends; deployments without one get no health check. Rewrites nothing when unchanged.
        Raises ValidationFailed for a bad deployment name or weight (then nothing is written)."""
        paths = dict(health_paths or {})
        table = {k: tuple(v) for k, v in services.items()}
        async with self._write_lock:  # renders too, so concurrent applies land in call order
            # Off the event loop: 1,000 deployments take about 50 ms to build and render.
            text, digest = await asyncio.to_thread(self._render, table, paths)
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
            data = await self._rawdata_or_none()
            if data is not None and data.digest is not None and data.digest == self._written_digest:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)

    async def config_errors(self) -> dict[str, tuple[str, ...]]:
        """Traefik's error messages for rollwise's objects (router, middleware or service name ->
        messages); empty when Traefik accepted everything. Raises TrafficUnavailable."""
        return dict((await self._rawdata()).errors)

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
        """Stop Traefik (SIGTERM, SIGKILL after 5 s) and remove its pid file. Idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        await self._stop_process()

    # -- internals ----------------------------------------------------------------------------------

    def _render(
        self, services: Mapping[str, Sequence[Backend]], health_paths: Mapping[str, str]
    ) -> tuple[str, str]:
        config = cfg.compute_dynamic_config(
            services,
            health_paths=health_paths,
            health_interval=self._health_interval,
            health_timeout=self._health_timeout,
        )
        return cfg.render_dynamic_config(config)

    def _prepare_files(self) -> None:
        static = cfg.compute_static_config(
            proxy_address=proc.join_host_port(self.host, self.proxy_port),
            api_address=proc.join_host_port(self.api_host, self.api_port or 0),
            dynamic_file=str(self.dynamic_file),
            throttle=self._throttle,
            access_log=str(self.dir / "access.log") if self._access_log else None,
        )
        self._atomic_write(self.static_file, json.dumps(static, indent=2) + "\n")
        if self._written_text is not None:
            self._write_dynamic(self._written_text)
            return
        try:
            existing = self.dynamic_file.read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            existing = None  # none, or not ours: start from an empty table
        if existing is not None:
            # A previous server's table: keep serving it until the first apply, and know its digest.
            self._written_text = existing
            self._written_digest = _digest_of(existing)
            return
        text, digest = self._render({}, {})
        self._write_dynamic(text)
        self._written_text, self._written_digest = text, digest

    def _write_dynamic(self, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._atomic_write(self.dynamic_file, text)

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        # Same directory, so os.replace is an atomic rename; Traefik never sees a half-written file.
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    async def _wait_ready(self, log_offset: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise TrafficFailure(
                    f"traefik exited at start (code {code}); last lines of {self.log_file}:\n"
                    + proc.log_tail(self.log_file, since=log_offset)
                )
            if await self._api_answers() and await proc.is_port_open(self.host, self.proxy_port):
                return
            if time.monotonic() >= deadline:
                raise TrafficFailure(
                    f"traefik did not become ready within {START_TIMEOUT_SECONDS:.0f} s; last lines of "
                    f"{self.log_file}:\n" + proc.log_tail(self.log_file, since=log_offset)
                )
            await asyncio.sleep(POLL_SECONDS)

    async def _api_answers(self) -> bool:
        try:
            text = await self._get_text("/api/version")
        except TrafficUnavailable:
            return False
        return '"Version"' in text

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            if not await _wait_exit(process, proc.STOP_GRACE_SECONDS):
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await _wait_exit(process, proc.STOP_GRACE_SECONDS)
        proc.remove_pid_file_if(self.pid_file, process.pid)

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


async def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)
    return True


def _digest_of(text: str) -> str | None:
    """The marker digest inside a dynamic file written earlier, or None when it has none."""
    try:
        raw = json.loads(text)
        value = raw["http"]["middlewares"][cfg.MARKER_MIDDLEWARE]["headers"]["customRequestHeaders"]
        return str(value[cfg.MARKER_HEADER])
    except (ValueError, KeyError, TypeError):
        return None
