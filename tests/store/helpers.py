"""Helpers of the store tests (imported by conftest.py and the test modules).

`count_statements(store)` records every statement the driver executes (a `before_cursor_execute`
listener on `engine.sync_engine`; an executemany counts once); `make_deployments` creates deployments
through the Store API; `update_one` writes one guarded update through `Store.apply`; `Database` names
one fresh database of one backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event

from rollwise.model import Policy
from rollwise.store import ChangeSet, DeploymentRecord, DeploymentUpdate, RevisionSpec, Store

PG_URL = os.environ.get("ROLLWISE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)

@dataclass(frozen=True)
class Database:
    backend: str
    url: str
    schema: str | None

    async def open(self, **kwargs: Any) -> Store:
        return await Store.open(self.url, schema=self.schema, **kwargs)


@contextmanager
def count_statements(store: Store) -> Iterator[list[str]]:
    """Every SQL statement the driver executes inside the block (an executemany counts once)."""
    seen: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", on_execute)


def spec(label: str | None = None, **kwargs: Any) -> RevisionSpec:
    return RevisionSpec(command=("python", "-m", "server", "--port", "{port}"), label=label, **kwargs)


async def make_deployments(store: Store, n: int, *, prefix: str = "d", replicas: int = 2) -> list[DeploymentRecord]:
    return [
        await store.create_deployment(name=f"{prefix}{i}", replicas=replicas, policy=Policy(), revision=spec("v1"), now=NOW)
        for i in range(n)
    ]


async def update_one(store: Store, update: DeploymentUpdate, now: datetime) -> DeploymentRecord | None:
    """One guarded update through the public path (`Store.apply` of a one-update ChangeSet, as a request
    writes), then the deployment as stored now; None when the guard failed or the deployment is gone."""
    result = await store.apply(ChangeSet(deployments=[update]), now)
    if update.deployment_id in result.skipped:
        return None
    return next(d for d in await store.list_deployments() if d.id == update.deployment_id)
