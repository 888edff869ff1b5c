"""Storage faults are clear: when the database refuses writes (here SQLite itself, read-only on the
store's connections, as a full or read-only disk does), the route controller keeps what it learned in
memory, the proxy table and the operations' reads follow it (a gone process is never shown healthy), and
everything is written once the database takes writes again."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from rollwise.model import Health, RouteStatus
from rollwise.store.errors import StoreError

from .harness import Scenario


def set_on_connect(sc: Scenario, statement: str) -> Any:
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()

    event.listen(sc.store.engine.sync_engine, "connect", on_connect)
    return on_connect


async def test_a_crash_seen_while_the_database_refuses_writes(sc: Scenario) -> None:
    await sc.ready(replicas=2)
    victim, other = await sc.alive()
    listener = set_on_connect(sc, "PRAGMA query_only = 1")
    await sc.store.engine.dispose()
    try:
        sc.runtime.crash(victim.id)
        with pytest.raises(StoreError):
            await sc.coord.routes.reconcile()
        # Stored: still running and healthy. Known: gone. Reads show what is known.
        stored = {r.id: r for r in await sc.store.list_routes()}
        assert stored[victim.id].status is RouteStatus.RUNNING and stored[victim.id].health is Health.HEALTHY
        shown = {r.id: r for r in await sc.ops.routes(await sc.dep())}
        assert shown[victim.id].status is RouteStatus.TERMINATED and shown[victim.id].failed
        assert [b.address for b in sc.coord.routes.table.services["svc"]] == [other.address]
        with pytest.raises(StoreError):  # every pass tries again, from what it knows
            await sc.coord.routes.reconcile()
        assert victim.id in sc.coord.routes.unwritten
    finally:
        event.remove(sc.store.engine.sync_engine, "connect", listener)
        await sc.store.engine.dispose()

    await sc.coord.routes.reconcile()
    assert sc.coord.routes.unwritten == {}
    stored = {r.id: r for r in await sc.store.list_routes()}
    assert stored[victim.id].status is RouteStatus.TERMINATED and stored[victim.id].failed
    assert stored[victim.id].detail is not None and "killed by signal 9" in stored[victim.id].detail
