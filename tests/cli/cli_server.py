"""A real `rollwise server` subprocess for the CLI tests (imported as `cli_server`): free ports, an
environment without the test process's ROLLWISE_* variables, and a context manager that starts the server,
waits until it has taken its role (not the `starting` answer of its first second), and stops it even when
the test fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROLLWISE = str(Path(sys.executable).with_name("rollwise"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROLLWISE_")} | {
        "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}


def settled(url: str) -> bool:
    """True once /healthz answers with a role other than "starting"."""
    try:
        answer = httpx.get(f"{url}/healthz", timeout=1)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.json().get("role") != "starting"


@contextmanager
def rollwise_server(data: Path, *args: str, runtime: str = "simulated",
                    stdout: int = subprocess.DEVNULL) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """(API URL, process) of `rollwise server --runtime RUNTIME --no-proxy` on `data`, stopped at exit."""
    port = free_port()
    proc = subprocess.Popen(
        [ROLLWISE, "server", "--runtime", runtime, "--no-proxy", "--api-port", str(port), "--data-dir", str(data),
         *args],
        stdout=stdout, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not settled(url):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
