"""rollwise.store: the database of rollwise (SQLAlchemy 2 Core, async; SQLite or PostgreSQL).

    from rollwise.store import Store, ChangeSet, DeploymentUpdate, ...
    store = await Store.open("sqlite+aiosqlite:///data/rollwise.db")   # migrates to head

Public: `Store` (repository.py), the records it returns (records.py), the commands it takes
(commands.py), the errors (errors.py) and
the migration helpers (`rollwise.store.migrate`). docs/storage.md describes tables, the apply
transaction and its guard, chunking and migrations.

Imports only rollwise.model (and SQLAlchemy, Alembic, the drivers); never control, runtime or traffic.
"""

from rollwise.store.errors import Conflict, IntegrityFailed, NotFound, StoreError, StoreFailed
from rollwise.store.commands import (
    UNSET,
    ApplyResult,
    ChangeSet,
    DeploymentChange,
    DeploymentUpdate,
    NewHistory,
    NewRollout,
    NewRoute,
    RevisionSpec,
    RolloutUpdate,
    RouteUpdate,
    new_route_id,
)
from rollwise.store.records import (
    DeploymentRecord,
    HistoryRecord,
    RevisionRecord,
    RolloutMark,
    RolloutRecord,
    RouteRecord,
    TimelineSample,
)
from rollwise.store.repository import Store

__all__ = [
    "UNSET",
    "ApplyResult",
    "ChangeSet",
    "Conflict",
    "DeploymentChange",
    "DeploymentRecord",
    "DeploymentUpdate",
    "HistoryRecord",
    "IntegrityFailed",
    "NewHistory",
    "NewRollout",
    "NewRoute",
    "NotFound",
    "RevisionRecord",
    "RevisionSpec",
    "RolloutMark",
    "RolloutRecord",
    "RolloutUpdate",
    "RouteRecord",
    "RouteUpdate",
    "Store",
    "StoreError",
    "StoreFailed",
    "TimelineSample",
    "new_route_id",
]
