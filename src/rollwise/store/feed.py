"""Which deployments this process's writes touched since a reader last asked: a feed per reader.

A reader that keeps a copy of some rows in memory (the route controller keeps every live route; the
coordinator evaluates only the deployments something happened to) asks the `Store` for a `WriteFeed`
and, before each read, `take()`s the ids of the deployments whose row or routes were written since its
last `take()`. It then re-reads only those. The store adds ids to every feed after the transaction that
wrote them committed, so a reader that takes the ids and then reads sees at least those writes; a write
that commits between the take and the read is seen now and read again next time (harmless).

What the feed cannot see: writes by another process on the same database (an operator's sqlite3, an
old server that lost its leadership). Readers therefore also read everything now and then (the route
controller: on its first pass and every `full_read_seconds`); `take()` answers None ("read everything")
after a write whose deployments are not known.

Called by store.repository (adds) and by its readers (take). Must not: do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable


class WriteFeed:
    """The deployment ids written since the last `take()` (see the module docstring)."""

    __slots__ = ("_everything", "_ids", "__weakref__")

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._everything = True  # a new reader has read nothing yet

    def take(self) -> set[int] | None:
        """The deployment ids written since the last call, or None: read everything."""
        if self._everything:
            self._everything = False
            self._ids = set()
            return None
        ids, self._ids = self._ids, set()
        return ids

    def add(self, ids: Iterable[int | None]) -> None:
        """Record writes to these deployments (None: a deployment not known, so everything)."""
        for i in ids:
            if i is None:
                self._everything = True
            else:
                self._ids.add(i)

