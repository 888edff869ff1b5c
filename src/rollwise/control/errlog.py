"""One log line per distinct error per minute, for loops that retry forever (the coordinator, the proxy
supervisor): a full disk must not write a 119-line traceback every round and fill that disk faster.

rollwise's own errors (`RollwiseError`: the database is unavailable, the proxy cannot start...) are
expected faults: they are logged as one line, `<code>: <message>`. Anything else is a bug: its first
occurrence is logged with the traceback, repeats are counted. An error seen again within `period`
seconds is not logged; the next line for it says how many were held back.

Called by control.coordinator and control.supervisor. Must not: raise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rollwise.model.errors import RollwiseError


class ErrorLog:
    def __init__(
        self, logger: logging.Logger, *, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self._period = period
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def report(self, what: str, error: BaseException) -> bool:
        """Log `error` (while doing `what`) unless the same error was logged within the period; True
        when a line was written."""
        if isinstance(error, RollwiseError):
            key, line, trace = f"{what}|{error.code}|{error.message}", f"{what}: {error.code}: {error.message}", False
        else:
            key, line, trace = f"{what}|{type(error).__qualname__}|{error}", f"{what}: {type(error).__name__}: {error}", True
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._period:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last = {k: t for k, t in self._last.items() if now - t < self._period}
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            line += f" (and {held} more times since the last report)"
        if trace and last is None:
            self._log.error(line, exc_info=error)
        else:
            self._log.error(line)
        return True
