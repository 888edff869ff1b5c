"""Property-based requests over the whole OpenAPI schema (schemathesis, Python API): valid and invalid
inputs for every operation, against the ASGI app on a real plane; no answer may be a 5xx.

Schemathesis calls ASGI apps from its own event-loop thread, so the plane is built there: `PlaneApp`
builds it in the ASGI lifespan, which schemathesis starts before the first request and stops when
`shutdown_lifespans()` is called. Bounded: a few examples per operation and mode (a few seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi

from .helpers import AUTH, deployment_body, drive, is_ready, open_api

MAX_EXAMPLES = 6
SEEDED = "seeded"


class PlaneApp:
    """An ASGI app that opens a plane + API in its lifespan startup and closes it at shutdown."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.inner: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.inner(scope, receive, send)
            return
        cm = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                cm, plane, client = await open_api(self.data_dir)
                await client.post("/v1/deployments", json=deployment_body(SEEDED, policy={"strategy": "blue_green"}))
                await drive(plane, client, SEEDED, is_ready)
                self.inner = client._transport.app  # type: ignore[attr-defined]
                await client.aclose()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if cm is not None:
                    await cm.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture
def schema(tmp_path: Path) -> Any:
    app = PlaneApp(tmp_path)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        schemathesis_asgi.shutdown_lifespans()


@pytest.mark.timeout(120)
def test_no_input_makes_the_server_fail(schema: Any) -> None:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    statuses: dict[int, int] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # Random names (mostly 404) and, for valid inputs, the seeded deployment (real state changes).
            for path_parameters in (None, {"name": SEEDED}):
                if path_parameters and ("{name}" not in operation.path or mode is GenerationMode.NEGATIVE):
                    continue
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

                @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def run(case: Any) -> None:
                    response = case.call(headers=AUTH)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    case.validate_response(response, checks=[not_a_server_error])

                try:
                    run()
                except Unsatisfiable:
                    # Nothing to make invalid (an operation without parameters or body).
                    assert mode is GenerationMode.NEGATIVE, operation.label
    assert not any(status >= 500 for status in statuses), statuses
    assert {200, 201, 202, 404, 422} <= set(statuses), statuses
