"""The body of a Ray route actor: one child process on the actor's node (private to `runtime.ray`).

`runtime.ray` wraps `RouteProcess` with `ray.remote` and creates one detached, named actor per route; the
actor's methods run on the route's node, in a Ray worker process. This module imports Ray only inside the
methods that ask Ray about the node (so it is importable, and its pure parts testable, without a cluster).

What the actor does: `launch` picks a free port (and one per extra port) on the node's IP, builds the
route's environment as the local runtime does (`_launch.route_environment`: the allowlisted variables of
the actor's own environment, the revision's env, PORT/PORT_<NAME>, CUDA_VISIBLE_DEVICES and
ROLLWISE_RESOURCES from the GPUs Ray gave the actor, the markers) and starts the command in a new
session; a thread keeps its last output lines. `status` says whether it runs and how it ended; `stop`
sends SIGTERM to its process group, then SIGKILL after the grace period. The actor never exits by itself:
the runtime kills it once the route is stopped, and that frees the resources it reserved.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rollwise.runtime._launch import UnknownPort, check_port_names, route_environment, substitute
from rollwise.runtime.devices import GPU, device_env

TAIL_LINES = 50
"""Output lines a route actor keeps."""
LINE_CHARS = 200
"""A kept line is cut to this many characters."""
KILL_WAIT_SECONDS = 5.0
"""How long `stop` waits for the process after SIGKILL."""


class LaunchError(Exception):
    """The command could not be started (one line for people); the runtime turns it into RuntimeFailure."""


def free_port(host: str, taken: set[int]) -> int:
    """A TCP port free on `host` now and not in `taken` (bound and let go: the program binds it next)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port
    raise LaunchError(f"no free port on {host}")


def clean_line(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n").split("\r")[-1]
    return "".join(c for c in text if c.isprintable())[:LINE_CHARS]


class RouteProcess:
    """One route's process on this node (module docstring). Thread-safe: the actor is created with
    `max_concurrency` > 1 so `status` answers while a `stop` waits out its grace period."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._info: dict[str, Any] = {}

    def launch(
        self,
        route_id: str,
        token: str,
        command: Sequence[str],
        env: Mapping[str, str],
        ports: Sequence[str],
        namespace: str,
    ) -> dict[str, Any]:
        """Start the route's command; returns its facts (pid, ip, port, ports, node, devices, token)."""
        import ray

        with self._lock:
            if self._proc is not None:
                return dict(self._info)
            api: Any = ray  # partly untyped
            context = api.get_runtime_context()
            ip = str(api.util.get_node_ip_address())
            gpus = tuple(sorted(int(i) for i in ray.get_gpu_ids()))
            devices = {GPU: gpus} if gpus else {}
            try:
                check_port_names(ports)
                taken: set[int] = set()
                main = free_port(ip, taken)
                extra = {name: free_port(ip, taken) for name in ports}
                argv = [substitute(arg, main, extra) for arg in command]
                total = {GPU: len(gpus)} if gpus else {}
                child_env = route_environment(
                    os.environ, env, main_port=main, ports=extra, route_id=route_id,
                    data_dir=f"ray:{namespace}", device_variables=device_env(devices, total),
                )
            except (UnknownPort, ValueError) as e:
                raise LaunchError(str(e)) from None
            try:
                proc = subprocess.Popen(
                    argv, env=child_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )
            except OSError as e:
                raise LaunchError(f"cannot run {argv[0]!r}: {e.strerror or e}") from None
            self._proc = proc
            assert proc.stdout is not None
            threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()
            self._info = {
                "token": token, "pid": proc.pid, "ip": ip, "port": main, "ports": extra,
                "node": context.get_node_id(), "devices": {k: list(v) for k, v in devices.items()},
            }
            return dict(self._info)

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = clean_line(raw)
            if line.strip():
                self._tail.append(line)
        stream.close()

    def status(self, lines: int = 5) -> dict[str, Any]:
        """{"token", "running", "code" (None while running; -N for signal N), "tail", and the launch facts}."""
        proc = self._proc
        code = None if proc is None else proc.poll()
        tail = list(self._tail)[-lines:] if lines > 0 else []
        return {**self._info, "running": proc is not None and code is None, "code": code, "tail": tail}

    def stop(self, grace_seconds: float) -> int | None:
        """SIGTERM to the process group, SIGKILL after `grace_seconds`; the exit code (None: unknown)."""
        proc = self._proc
        if proc is None:
            return None
        for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, KILL_WAIT_SECONDS)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)  # its own session: pgid == pid, pinned while it is unreaped
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=max(wait, 0.0))
            except subprocess.TimeoutExpired:
                continue
        return proc.poll()
