"""Helpers of the example model server's tests: start it as a real process, wait for it, talk raw HTTP.

Imported by the test modules of tests/examples and their conftest (fixtures that stop every process).
Waits are on conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

HTTP_MODES = ("stdlib", "uvicorn")
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROLLWISE_RESOURCES")
"""What a route is given of its devices; unset in a server started here unless the test sets them."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def is_listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll `condition` until true; the seconds it took. AssertionError naming `what` after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: still not the case after {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def catches_sigterm(pid: int) -> bool:
    """True once the process has installed a SIGTERM handler (Linux: SigCgt in /proc/PID/status).

    Before that, a SIGTERM kills a Python program with -15 instead of reaching its handler.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


class Server:
    """`python -m rollwise.examples.model_server --port P ARGS...` with stderr captured; `env` is added to
    this process's environment, from which the device variables are removed (the test's machine may set
    CUDA_VISIBLE_DEVICES)."""

    def __init__(self, *args: str, python_options: tuple[str, ...] = (), env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, *python_options, "-m", "rollwise.examples.model_server", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in DEVICE_VARIABLES} | dict(env or {}),
        )

    def wait_listening(self, *, timeout: float = 10.0) -> None:
        """Until it listens; fails at once (with its stderr) if it exits first."""
        wait_until(
            lambda: self.process.poll() is not None or is_listening(self.port),
            timeout=timeout,
            what=f"the model server listens on {self.port}",
        )
        if self.process.poll() is not None:
            raise AssertionError(f"the model server exited {self.process.returncode}: {self.stop()[1]}")

    def stop(self) -> tuple[int, str]:
        """SIGTERM, wait; (exit code, stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=10)
        return self.process.returncode, err

    def kill(self) -> None:
        """The finalizer's way out: whatever state the test left the process in, it ends."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=10)


def raw_request(path: str, body: bytes = b"") -> bytes:
    method = "POST" if body else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    return head + body


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """Read `count` responses off a keep-alive connection (they all carry Content-Length)."""
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))[15:])
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            rest += chunk
        responses.append(head + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    return responses
