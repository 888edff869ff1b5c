"""The body of a Ray route actor: one child process on the actor's node (private to `runtime.ray`).

`runtime.ray` wraps `RouteProcess` with `ray.remote` and creates one detached, named actor per route; the
actor's methods run on the route's node, in a Ray worker process. This module imports Ray only inside the
methods that ask Ray about the node (so it is importable, and its pure parts testable, without a cluster).

What the actor does: `launch` picks a free port (and one per extra port) on the node's IP, reserved for a
while in a node-wide file (`PortBook`) so that two routes starting at once on one node, in two actor
processes, are never given the same port between "bound and let go" and the program binding it; builds the
route's environment as the local runtime does (`_launch.route_environment`: the allowlisted variables of
the actor's own environment, the revision's env, PORT/PORT_<NAME>, CUDA_VISIBLE_DEVICES and
ROLLWISE_RESOURCES from the GPUs Ray gave the actor, the markers) and starts the command in a new
session, with the parent-death signal set to SIGKILL (Linux `prctl(PR_SET_PDEATHSIG)`): if the actor's
worker process dies (its raylet crashed, the actor was killed without `stop`), the command dies with it
instead of holding its port and GPU as an orphan nobody tracks. The child is started from a thread that
lives exactly as long as the child (it waits on it), because Linux sends that signal when the *thread*
that forked the child exits. A thread keeps its last output lines. `status` says whether it runs and how
it ended; `stop` sends SIGTERM to its process group, then SIGKILL after the grace period. The actor never
exits by itself: the runtime kills it once the route is stopped, and that frees the resources it reserved.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
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
PORT_HOLD_SECONDS = 120.0
"""How long a port handed to a route stays out of the node-wide book's offers (the program binds it by then)."""
_PR_SET_PDEATHSIG = 1


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


class PortBook:
    """Ports recently handed to routes on this node, shared by every actor process of the namespace through
    one small JSON file under an exclusive `flock` ({port: until}, expired entries dropped on each use).
    `take(host, n)` returns n ports free on `host` now and in nobody's recent hand."""

    def __init__(self, path: Path, hold_seconds: float = PORT_HOLD_SECONDS) -> None:
        self.path = path
        self.hold_seconds = hold_seconds

    @classmethod
    def for_namespace(cls, namespace: str) -> PortBook:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in namespace)
        return cls(Path(tempfile.gettempdir()) / f"rollwise-ray-ports-{safe}.json")

    def take(self, host: str, count: int) -> list[int]:
        now = time.time()
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            try:
                held = {int(k): float(v) for k, v in json.loads(f.read() or "{}").items() if float(v) > now}
            except (ValueError, AttributeError):
                held = {}  # a damaged book only loses its holds
            taken = set(held)
            ports = [free_port(host, taken) for _ in range(count)]
            held.update((port, now + self.hold_seconds) for port in ports)
            f.seek(0)
            f.truncate()
            f.write(json.dumps({str(k): v for k, v in sorted(held.items())}))
            return ports


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when the thread that forked it goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


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
                main, *others = PortBook.for_namespace(namespace).take(ip, 1 + len(ports))
                extra = dict(zip(ports, others))
                argv = [substitute(arg, main, extra) for arg in command]
                total = {GPU: len(gpus)} if gpus else {}
                child_env = route_environment(
                    os.environ, env, main_port=main, ports=extra, route_id=route_id,
                    data_dir=f"ray:{namespace}", device_variables=device_env(devices, total),
                )
            except (UnknownPort, ValueError) as e:
                raise LaunchError(str(e)) from None
            proc = self._spawn(argv, child_env)
            self._proc = proc
            assert proc.stdout is not None
            threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()
            self._info = {
                "token": token, "pid": proc.pid, "ip": ip, "port": main, "ports": extra,
                "node": context.get_node_id(), "devices": {k: list(v) for k, v in devices.items()},
            }
            return dict(self._info)

    @staticmethod
    def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start the child from a thread that then waits on it (module docstring: the parent-death signal)."""
        started: dict[str, Any] = {}
        ready = threading.Event()

        def keeper() -> None:
            try:
                started["proc"] = subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, preexec_fn=_die_with_parent,
                )
            except OSError as e:
                started["error"] = e
                return
            finally:
                ready.set()
            started["proc"].wait()

        threading.Thread(target=keeper, name="route-child", daemon=True).start()
        ready.wait()
        if "error" in started:
            e = started["error"]
            raise LaunchError(f"cannot run {argv[0]!r}: {e.strerror or e}")
        proc: subprocess.Popen[bytes] = started["proc"]
        return proc

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
