"""`create_app`: the FastAPI application of one rollwise server.

    GET /healthz        liveness, role and the proxy's state, no auth ("degraded" while the proxy is down)
    GET /metrics        Prometheus text, no auth (api.metrics)
    GET /openapi.json   the schema of everything below, no auth
    GET /docs           the API's Swagger UI page, its assets served from the package (api.docs), no auth
    GET /ui/            the dashboard: static files (api/ui/), no auth; its data comes from /v1 with the token
    /v1/...             the deployment endpoints (api.endpoints), bearer token required (api.auth)

The app holds no state of its own beyond its metrics: every request goes through the `Operations` it is
given. Errors leave as `{"error", "message"}` (api.errors, the one status table).

Called by `rollwise.cli.serve.run_server` and by tests. Must not: start or stop the coordinator (the
server owns it; the app only observes its cycles for metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from rollwise import __version__
from rollwise.api.auth import BearerAuth
from rollwise.api.errors import install_error_handlers
from rollwise.api.limits import BodyLimit
from rollwise.api.metrics import CONTENT_TYPE, ApiMetrics, ProxyProcess, proxy_request_counts
from rollwise.api.docs import install_docs
from rollwise.api.endpoints import build_router
from rollwise.api.schemas import HealthOut
from rollwise.control.coordinator import Coordinator
from rollwise.control.operations import Operations

DESCRIPTION = """Zero-downtime rollouts (rolling, blue-green, recreate) for model-serving deployments.

Every `/v1` endpoint needs `Authorization: Bearer <token>` (the token `rollwise server` prints the location
of). Errors are always `{"error": "<code>", "message": "<one line>"}`: 400 malformed JSON, 401 missing or
wrong token, 404 unknown deployment or revision, 409 refused in the current state (the message says why),
413 body over 1 MiB, 422 invalid body (the message names the field), 503 temporarily unavailable.
"""


UI_DIR = Path(__file__).with_name("ui")
UI_HEADERS = {
    # Our own files only: no inline script or style, no other origin; the page holds the token.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class DashboardFiles(StaticFiles):
    """The dashboard's static files (docs/dashboard.md), each answer with UI_HEADERS."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(UI_HEADERS)
        return response


def create_app(
    ops: Operations,
    *,
    token: str,
    role: Callable[[], str] = lambda: "active",
    coordinator: Coordinator | None = None,
    proxy: ProxyProcess | None = None,
) -> FastAPI:
    """`proxy`: the traffic layer whose process `/healthz` and the metrics report (None: no proxy)."""
    app = FastAPI(
        title="rollwise",
        version=__version__,
        description=DESCRIPTION,
        redoc_url=None,
        docs_url=None,  # served by api.docs from the package's own files, not a CDN
        # One schema per model: the policy's canary steps serialize as they validate (no -Input/-Output).
        separate_input_output_schemas=False,
    )
    metrics = ApiMetrics(
        ops, request_counts=proxy_request_counts(coordinator) if coordinator else None, proxy=proxy
    )
    if coordinator is not None:
        coordinator.observers.append(metrics.observe_cycle)
    ops.rollout_observers.append(metrics.observe_rollout_started)
    app.state.metrics = metrics
    app.state.ops = ops

    install_error_handlers(app)
    app.add_middleware(BearerAuth, token=token)
    app.add_middleware(BodyLimit)  # added last: outermost, before auth reads anything
    app.include_router(build_router(ops))
    install_docs(app, title=app.title)
    app.mount("/ui", DashboardFiles(directory=UI_DIR, html=True), name="ui")

    @app.get("/healthz", response_model=HealthOut, tags=["server"], summary="Liveness and role (no auth)")
    async def healthz() -> HealthOut:
        now = role()
        # Only an active server runs the proxy; a starting one is still adopting or starting it.
        state = None if proxy is None or now != "active" else ("up" if proxy.running else "down")
        return HealthOut(status="degraded" if state == "down" else "ok", role=now, proxy=state)

    @app.get(
        "/metrics", tags=["server"], summary="Prometheus metrics (no auth)", response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                         "description": "Prometheus text exposition format"}},
    )
    async def prometheus_metrics() -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    return app
