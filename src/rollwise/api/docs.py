"""`/docs`: the Swagger UI page of the API, served whole by the server itself (no CDN: GPU clusters are
often offline, and a page whose scripts come from the internet is blank there).

    GET /docs                       the page (FastAPI's Swagger UI HTML, pointed at the URLs below)
    GET /docs/assets/<file>         swagger-ui-bundle.js, swagger-ui.css, favicon.png

The assets are the files of the `fastapi-offline` package (a maintained PyPI package that ships the
Swagger UI distribution; only its files are used, not its FastAPI subclass). No token is needed, like
/openapi.json (api.auth protects /v1 only).

Called by api.app.create_app (`install_docs`, after FastAPI's own docs route was switched off with
`docs_url=None`). Must not: fetch anything from the network, or serve files outside the package's
static directory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def assets_dir() -> Path:
    """The directory of the Swagger UI files shipped by `fastapi-offline`."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI, *, title: str) -> None:
    """Serve the Swagger UI page at /docs and its assets under /docs/assets."""
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )
