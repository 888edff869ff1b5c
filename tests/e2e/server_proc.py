"""A real `rollwise server` subprocess for crash and takeover tests, and process-table helpers.

`ServerProcess` starts `rollwise server` with its own ports and data directory, waits for /healthz, and
can be killed with SIGKILL (as a crash) or stopped with SIGTERM. `route_processes(data_dir)` lists the
processes whose environment carries that data directory's marker: every route process rollwise started
for it, so a test can prove none is orphaned or duplicated.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROLLWISE = str(Path(sys.executable).with_name("rollwise"))


class ServerProcess:
    def __init__(
        self, data_dir: Path, *, api_port: int, proxy_port: int, token: str = "crash-test-token",
        database: str | None = None, log_name: str = "server.log", token_in_env: bool = False,
        env: dict[str, str] | None = None, extra_args: tuple[str, ...] = (),
    ) -> None:
        """`token_in_env`: pass the token as ROLLWISE_TOKEN instead of --token; `env`: more variables for
        the server's environment (secrets its route processes must not see); `extra_args`: more options of
        `rollwise server` (e.g. `--resources gpu=4`)."""
        self.data_dir = data_dir
        self.api_port = api_port
        self.proxy_port = proxy_port
        self.token = token
        self.database = database
        self.log_path = data_dir.parent / log_name
        self.token_in_env = token_in_env
        self.env = dict(env or {})
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, *, wait: bool = True, role: str | None = "active") -> None:
        args = [ROLLWISE, "server", "--data-dir", str(self.data_dir), "--api-port", str(self.api_port),
                "--proxy-port", str(self.proxy_port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLWISE_")} | self.env
        if self.token_in_env:
            env["ROLLWISE_TOKEN"] = self.token
        else:
            args += ["--token", self.token]
        if self.database:
            args += ["--database", self.database]
        args += self.extra_args
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        log.close()
        if wait:
            self.wait_healthy(role=role)

    def wait_healthy(self, timeout: float = 30.0, role: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                body = httpx.get(f"{self.url}/healthz", timeout=1).json()
                # role None: any settled role ("starting" answers come from a server still adopting);
                # "any": the first answer at all.
                if body.get("role") == role or role == "any" or (role is None and body.get("role") != "starting"):
                    return body
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not healthy: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def wait_for(what: str, check: Callable[[], Any], server: ServerProcess, timeout: float = 60.0,
             every: float = 0.1) -> Any:
    """Poll `check` (API errors count as "not yet") until it returns something truthy; on timeout the
    error names `what`, the last answer and the server's log tail."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}\nserver log:\n{server.log_tail()}")
        time.sleep(every)


class BackgroundLoad:
    """`LoadGenerator` traffic from a thread of its own, for tests that block on server processes:
    `with BackgroundLoad(url) as load: ...`, then `load.stats`."""

    def __init__(self, url: str, *, rate: float = 100.0) -> None:
        self.url = url
        self.rate = rate
        self.stats: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from rollwise.cli.loadgen import LoadGenerator

        async with LoadGenerator(self.url, rate=self.rate) as load:
            self.stats = load.stats
            while not self._stop.is_set():
                await asyncio.sleep(0.05)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def traefik_pid(data_dir: Path) -> int | None:
    """The pid in the data directory's Traefik pid file (JSON {"pid": ...}), or None."""
    try:
        return int(json.loads((data_dir / "traefik" / "traefik.pid").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item)


def route_processes(data_dir: Path) -> set[int]:
    """Pids of live route processes started by rollwise for `data_dir` (both markers in their environment;
    Traefik carries the data directory marker only)."""
    marker = f"ROLLWISE_DATA_DIR={Path(data_dir).resolve()}\0".encode()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        is_route = env.startswith(b"ROLLWISE_ROUTE_ID=") or b"\0ROLLWISE_ROUTE_ID=" in env
        if state != "Z" and is_route and (env.startswith(marker) or b"\0" + marker in env):
            pids.add(int(entry))
    return pids
