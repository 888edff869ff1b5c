"""Linux process facts for the local runtime: identities, environment markers, pinned signalling, spawn.

Private to `rollwise.runtime.local`, which is the only caller. Everything here is synchronous and quick
(reads under /proc, one posix_spawn); `local` runs the whole-/proc scans in a worker thread.

Identity scheme. A process is named by `"proc1:<boot id>:<start time>"`: the kernel's boot id
(/proc/sys/kernel/random/boot_id) and the process start time in clock ticks since boot (field 22 of
/proc/<pid>/stat). A pid reused by another process has another start time, and a pid from before a
reboot has another boot id; `exec` keeps the start time, so a wrapper that execs its program keeps its
identity. A route's process is also the leader of its own session (the runtime starts it with setsid,
and a session leader cannot leave its session).

Route processes carry two environment markers, set by the runtime at launch and inherited by their
children: ROLLWISE_ROUTE_ID and ROLLWISE_DATA_DIR. A marker naming another route or data directory
contradicts an identity; absent markers do not (a program may re-execute itself with a cleared
environment). The markers also let the runtime find processes of a route that no handle or registry
file names: a crash between spawn and the registry write, or children that left the process group.

Signals never hit a reused pid: a process is signalled through a pidfd (`Pinned`) opened *before* its
identity is checked, so the number cannot be recycled while it is held; a process group is signalled
only while its leader is pinned (a group id is its leader's pid).

This module must not know about routes' ports, registry files or asyncio: that is `local`'s business.
"""

from __future__ import annotations

import errno
import os
import select
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from shutil import which

ROUTE_ID_VAR = "ROLLWISE_ROUTE_ID"
DATA_DIR_VAR = "ROLLWISE_DATA_DIR"
IDENTITY_SCHEME = "proc1"

_PROC = Path("/proc")


def is_supported() -> bool:
    """True on a system with the Linux /proc this module reads."""
    return (_PROC / "self" / "stat").is_file()


@cache
def boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the runtime needs."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start_ticks: int

    @property
    def has_exited(self) -> bool:
        """A zombie (exited, not yet reaped by its parent) or dead task no longer runs anything."""
        return self.state in ("Z", "X", "x")

    @property
    def identity(self) -> str:
        return f"{IDENTITY_SCHEME}:{boot_id()}:{self.start_ticks}"


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or None when there is no such process (any more)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may itself contain spaces and parentheses.
    fields = raw[raw.rindex(b")") + 2 :].split()
    try:
        return ProcStat(
            pid=pid,
            state=fields[0].decode(),
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            sid=int(fields[3]),
            start_ticks=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def exec_visible(pid: int) -> bool:
    """True once the process's program image (argv and environment) is visible in /proc.

    Right after posix_spawn returns, the child may still be inside exec with neither laid out yet.
    """
    try:
        with open(_PROC / str(pid) / "cmdline", "rb") as f:
            return bool(f.read(1))
    except OSError:
        return False


def read_markers(pid: int) -> dict[str, str] | None:
    """ROLLWISE_* variables of the process's initial environment; None when it cannot be read."""
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    markers: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        if entry.startswith(b"ROLLWISE_"):
            name, _, value = entry.partition(b"=")
            markers[name.decode(errors="replace")] = value.decode(errors="replace")
    return markers


def markers_allow(pid: int, *, route_id: str, data_dir: str) -> bool:
    """False when the process's environment names another route or another data directory.

    Absent markers or an unreadable environment do not contradict: a program may re-execute itself
    with a cleared environment, and its start time is the proof of identity anyway.
    """
    markers = read_markers(pid)
    if markers is None:
        return True
    return markers.get(ROUTE_ID_VAR, route_id) == route_id and markers.get(DATA_DIR_VAR, data_dir) == data_dir


def verify(pid: int, identity: str, *, route_id: str, data_dir: str) -> bool:
    """True when `pid` is a live session leader with `identity` whose markers do not contradict."""
    stat = read_stat(pid)
    if stat is None or stat.has_exited or stat.identity != identity or stat.sid != pid:
        return False
    return markers_allow(pid, route_id=route_id, data_dir=data_dir)


@dataclass(frozen=True, slots=True)
class MarkedProcess:
    pid: int
    route_id: str
    stat: ProcStat


def scan_marked(data_dir: str, *, route_id: str | None = None) -> list[MarkedProcess]:
    """Live processes of this user whose environment says they belong to `data_dir` (and `route_id`).

    Reads /proc/*/environ of the current user's processes only; O(number of processes).
    """
    uid = os.getuid()
    found: list[MarkedProcess] = []
    for pid in _pids():
        try:
            if os.stat(_PROC / str(pid)).st_uid != uid:
                continue
        except OSError:
            continue
        markers = read_markers(pid)
        if not markers or markers.get(DATA_DIR_VAR) != data_dir:
            continue
        marked_route = markers.get(ROUTE_ID_VAR)
        if marked_route is None or (route_id is not None and marked_route != route_id):
            continue
        stat = read_stat(pid)
        if stat is not None and not stat.has_exited:
            found.append(MarkedProcess(pid, marked_route, stat))
    return found


def live_group_members(pgid: int) -> list[int]:
    """Pids of processes in group `pgid` that have not exited (zombies excluded)."""
    members = []
    for pid in _pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgid == pgid and not stat.has_exited:
            members.append(pid)
    return members


def _pids() -> Iterator[int]:
    try:
        names = os.listdir(_PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


class Pinned:
    """A process held by a pidfd and verified to have a given start time: safe to signal.

    Without pidfd support (kernels before 5.3) the pid is re-verified right before each signal, which
    leaves only a tiny reuse window. Close it (or use it as a context manager) when done.
    """

    __slots__ = ("pid", "pgid", "start_ticks", "identity", "_fd")

    def __init__(self, stat: ProcStat, fd: int | None) -> None:
        self.pid = stat.pid
        self.pgid = stat.pgid
        self.start_ticks = stat.start_ticks
        self.identity = stat.identity
        self._fd = fd

    @classmethod
    def open(cls, pid: int, *, identity: str | None = None, start_ticks: int | None = None) -> Pinned | None:
        """Pin `pid` if it still is the process with that identity (or start time); else None."""
        fd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return None
            except OSError as e:
                if e.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                    return None
        stat = read_stat(pid)  # read after pinning: it now describes the pinned process
        matches = stat is not None and (
            (identity is None or stat.identity == identity)
            and (start_ticks is None or stat.start_ticks == start_ticks)
        )
        if stat is None or not matches:
            if fd is not None:
                os.close(fd)
            return None
        return cls(stat, fd)

    def __enter__(self) -> Pinned:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def is_group_leader(self) -> bool:
        return self.pgid == self.pid

    def has_exited(self) -> bool:
        """True once the process has terminated (zombie or reaped)."""
        if self._fd is not None:
            poller = select.poll()  # not select(): pidfds of a busy server may exceed FD_SETSIZE
            poller.register(self._fd, select.POLLIN)
            return bool(poller.poll(0))
        stat = read_stat(self.pid)
        return stat is None or stat.has_exited or stat.start_ticks != self.start_ticks

    def signal(self, sig: int) -> bool:
        """Send `sig` to this process; False when it is already gone."""
        try:
            if self._fd is not None:
                signal.pidfd_send_signal(self._fd, sig)
            else:
                if self.has_exited():
                    return False
                os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    def signal_group(self, sig: int) -> bool:
        """Send `sig` to this leader's whole process group; False when the group is empty.

        Safe even after the leader has exited: while it is pinned, no new process can take its pid,
        hence no new group can take its group id.
        """
        if not self.is_group_leader:
            return self.signal(sig)
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def group_is_empty(self) -> bool:
        """No live member left in this leader's group (zombies awaiting their parent do not count)."""
        if not self.has_exited():
            return False
        if self.signal_group(0) is False:
            return True
        return not live_group_members(self.pid)


def reap(pid: int) -> int | None:
    """Collect `pid`'s exit status if it is an exited child of this process; its exit code, or None.

    The exit code follows subprocess: the status for a normal exit, minus the signal number when killed.
    """
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def resolve_executable(program: str, env: Mapping[str, str]) -> str | None:
    """The path `program` would run with `env`'s PATH (like execvp), or None when there is none."""
    if os.sep in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return which(program, path=env.get("PATH", os.defpath))


def spawn(path: str, argv: Sequence[str], env: Mapping[str, str], *, output_fd: int) -> int:
    """Start `path` with `argv` and `env` in a new session (own process group); return its pid.

    stdout and stderr go to `output_fd`, stdin is /dev/null. Signal dispositions Python changed (it
    ignores SIGPIPE) are reset and no signal is blocked, like subprocess does. Raises OSError/ValueError.
    """
    return os.posix_spawn(
        path,
        list(argv),
        dict(env),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, output_fd, 1),
            (os.POSIX_SPAWN_DUP2, output_fd, 2),
        ],
        setsid=True,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        setsigmask=(),
    )
