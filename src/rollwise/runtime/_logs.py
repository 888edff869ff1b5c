"""Route log files of the local runtime: opening, marker lines, copy-truncate rotation, tails, retention.

Private to `rollwise.runtime.local`, the only caller. Everything here is synchronous file work:
`local` runs rotation and retention (`scan`, `rotate`, `remove_route_logs`) in a worker thread, and
calls `read_tail` (one read of at most TAIL_BYTES per file) directly. Functions raise OSError; `local`
translates or logs. This module knows nothing of processes, ports or registry files.

Layout. A route's output goes to `<logs>/<route>.log`; rotation keeps `<route>.log.1` (newest) up to
`<route>.log.<backups>`. The runtime's own lines start with MARKER_PREFIX ("--- rollwise "); a route
start writes one ending in ") starting: <argv>", which tells a tail reader where the last run began.

Why copy-truncate and not a pipe. A route must outlive a crashed server (kill -9), so its stdout and
stderr cannot be a pipe the server reads: the pipe would close with the server and the route would die
of SIGPIPE or block. The route therefore writes straight into the file through a descriptor opened
with O_APPEND, and rotation copies the file's content to `.1` and then truncates the file to zero;
O_APPEND makes every later write land at the new end (no hole, no overwrite). The price: lines written
between the end of the copy and the truncation are lost. The copy reads to the end of the file just
before truncating, so the window is the time of one truncate call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
"""Logs and registry files hold commands and output: readable by the server's user only."""

MARKER_PREFIX = "--- rollwise "
_START_SUFFIX = ") starting: "

TAIL_BYTES = 16 * 1024
"""A tail never reads more than this much of a file (exit reports must be cheap)."""
LINE_CHARS = 200
"""Tail lines are cut to this many characters (they end up in one-line details)."""
MARKER_COMMAND_CHARS = 2000
"""The start marker shows at most this much of the command (an argv may be huge)."""
_COPY_CHUNK = 1024 * 1024

_LOG_NAME = re.compile(r"(?P<route>.+)\.log(?:\.(?P<backup>[1-9][0-9]{0,5}))?\Z")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")


def backup_path(live: Path, number: int) -> Path:
    return live.with_name(f"{live.name}.{number}")


def marker_line(message: str) -> bytes:
    """One line of the runtime's own: control characters (a newline in an argv) are escaped, so a
    reader sees one marker line and never takes the rest of a command for the route's output."""
    return f"{MARKER_PREFIX}{_now()}: {_CONTROL_OR_NEWLINE.sub(_escape, message)}\n".encode()


def _escape(match: re.Match[str]) -> str:
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(match[0], f"\\x{ord(match[0]):02x}")


def start_message(route_id: str, deployment: str, revision: int, command: str) -> str:
    if len(command) > MARKER_COMMAND_CHARS:
        command = command[:MARKER_COMMAND_CHARS] + f"... ({len(command)} characters)"
    return f"route {route_id} (deployment {deployment}, revision {revision}{_START_SUFFIX}{command}"


def open_for_append(path: Path) -> int:
    """A write descriptor at the file's end (O_APPEND), created private; the caller closes it.

    O_APPEND is what makes copy-truncate rotation safe: a descriptor shared with a route writes at the
    current end of file, wherever that is after a truncation.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a file left by an older version may be world-readable
    except OSError:
        os.close(fd)
        raise
    return fd


def append_marker(path: Path, message: str) -> None:
    fd = open_for_append(path)
    try:
        os.write(fd, marker_line(message))
    finally:
        os.close(fd)


def make_private(directory: Path, patterns: Iterable[str]) -> list[tuple[Path, OSError]]:
    """Create `directory` (and parents) if needed; set it DIR_MODE and its matching files FILE_MODE.

    Raises OSError for the directory; returns the files it could not fix (one foreign file must not
    stop the runtime from starting).
    """
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(directory, DIR_MODE)
    failed = []
    for pattern in patterns:
        for path in directory.glob(pattern):
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != FILE_MODE:
                    os.chmod(path, FILE_MODE)
            except OSError as e:
                failed.append((path, e))
    return failed


# Scanning -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogFile:
    path: Path
    size: int
    mtime: float
    mode: int


@dataclass(slots=True)
class RouteLogs:
    """The files of one route under the logs directory."""

    live: LogFile | None = None
    backups: dict[int, LogFile] = field(default_factory=dict)

    def files(self) -> list[LogFile]:
        return ([self.live] if self.live else []) + list(self.backups.values())

    def newest_mtime(self) -> float:
        return max(f.mtime for f in self.files())


def scan(logs_dir: Path) -> dict[str, RouteLogs]:
    """Every route log file and backup under `logs_dir`, by route id (other files are ignored)."""
    found: dict[str, RouteLogs] = {}
    with os.scandir(logs_dir) as entries:
        for entry in entries:
            match = _LOG_NAME.match(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile
            file = LogFile(Path(entry.path), stat.st_size, stat.st_mtime, stat.st_mode & 0o777)
            logs = found.setdefault(match["route"], RouteLogs())
            if match["backup"] is None:
                logs.live = file
            else:
                logs.backups[int(match["backup"])] = file
    return found


# Rotation -------------------------------------------------------------------------------------------


def rotate(live: Path, *, backups: int, keep_bytes: int) -> None:
    """Copy-truncate `live`: shift `.1`..`.n-1` up by one, copy it to `.1`, truncate it to zero.

    Backups numbered above `backups` are removed (the setting may have been lowered). The copy keeps at
    most the last `keep_bytes` (from a line start), so one burst of output cannot make a backup huge.
    With `backups` 0 the content is dropped. When the copy fails (a full disk, typically) the file is
    truncated all the same: bounding the disk use is the point of rotating.
    """
    for number in sorted(_backup_numbers(live), reverse=True):
        if number >= backups:
            # The oldest kept backup is overwritten by the shift below; ones above the limit go.
            if number > backups:
                backup_path(live, number).unlink(missing_ok=True)
            continue
        os.replace(backup_path(live, number), backup_path(live, number + 1))
    if backups > 0:
        first = backup_path(live, 1)
        try:
            _copy_tail(live, first, keep_bytes)
        except OSError:
            first.unlink(missing_ok=True)
            os.truncate(live, 0)
            raise
    os.truncate(live, 0)


def _backup_numbers(live: Path) -> list[int]:
    numbers = []
    for path in live.parent.glob(f"{glob_escape(live.name)}.*"):
        suffix = path.name[len(live.name) + 1 :]
        if suffix.isdigit() and not suffix.startswith("0"):
            numbers.append(int(suffix))
    return numbers


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _copy_tail(source: Path, target: Path, keep_bytes: int) -> None:
    with open(source, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        start = max(0, size - keep_bytes)
        src.seek(start)
        if start > 0:
            start += len(src.readline(keep_bytes))  # begin at a line start if there is one
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            if start > 0:
                os.write(fd, marker_line(f"log rotation dropped the first {start} bytes of this part"))
            # Read to the current end (not just `size`): what the route wrote during the copy belongs
            # in the backup too. Bounded, so a route writing faster than we copy cannot keep us here.
            budget = keep_bytes + _COPY_CHUNK
            while budget > 0:
                chunk = src.read(min(_COPY_CHUNK, budget))
                if not chunk:
                    break
                _write_all(fd, chunk)
                budget -= len(chunk)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Retention ------------------------------------------------------------------------------------------


def remove_route_logs(logs_dir: Path, route_id: str, *, unchanged_since: float) -> bool:
    """Remove the route's log and backups if none was modified after `unchanged_since`; True if removed.

    The modification times are read again here (callers hold the lock that route starts take), so a
    route that started meanwhile keeps its log.
    """
    logs = scan_route(logs_dir, route_id)
    if not logs.files() or logs.newest_mtime() > unchanged_since:
        return False
    for file in logs.files():
        file.path.unlink(missing_ok=True)
    return True


def scan_route(logs_dir: Path, route_id: str) -> RouteLogs:
    logs = RouteLogs()
    live = logs_dir / f"{route_id}.log"
    for path in [live, *(backup_path(live, n) for n in _backup_numbers(live))]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        file = LogFile(path, stat.st_size, stat.st_mtime, stat.st_mode & 0o777)
        if path == live:
            logs.live = file
        else:
            logs.backups[int(path.name.rsplit(".", 1)[1])] = file
    return logs


# Tails ----------------------------------------------------------------------------------------------


def read_tail(live: Path, lines: int) -> tuple[str, ...]:
    """The last `lines` lines the route wrote in its last run, oldest first; () when there are none.

    Reads at most TAIL_BYTES of the live file, and of `.1` only when the live file holds neither a
    line of the route nor the start of its run (it was just rotated). Missing files give ().
    """
    if lines <= 0:
        return ()
    own, started = _last_run(live)
    if not own and not started:
        own, _ = _last_run(backup_path(live, 1))
    return tuple(own[-lines:])


def _last_run(path: Path) -> tuple[list[str], bool]:
    """Route lines after the last start marker in the file's tail; and whether a start marker was seen."""
    try:
        with open(path, "rb") as f:
            start = max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES)
            f.seek(start)
            data = f.read(TAIL_BYTES)
    except OSError:
        return [], False
    raw_lines = data.split(b"\n")
    if start > 0:
        raw_lines = raw_lines[1:]  # most likely the end of a line cut by the window
    own: list[str] = []
    started = False
    for raw in raw_lines:
        line = _readable(raw)
        if line.startswith(MARKER_PREFIX):
            if _START_SUFFIX in line:
                own.clear()  # an earlier run of the same route id
                started = True
            continue
        if line.strip():
            own.append(line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…")
    return own, started


def _readable(raw: bytes) -> str:
    """One output line as a terminal would end up showing it, without escapes or control characters."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    text = text.rsplit("\r", 1)[-1]  # progress bars redraw the line with carriage returns
    text = _ANSI.sub("", text).replace("\t", " ")
    return _CONTROL.sub("", text).rstrip()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
