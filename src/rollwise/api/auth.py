"""Bearer-token auth of the REST API: where the token comes from, and the check on every /v1 request.

`load_or_create_token(data_dir, given)` picks the server's token: `given` (from `--token`) wins, else the
environment variable ROLLWISE_TOKEN, else the file `data_dir/token`, created with a fresh
`secrets.token_urlsafe(32)` (mode 0600) when missing. It returns the token and the file's path when the
token came from the file (the server prints where to find it; the CLI reads the same file).

`BearerAuth` is a small ASGI middleware: every path under /v1 needs `Authorization: Bearer <token>`,
compared in constant time (`hmac.compare_digest`). It runs before routing and body parsing, so an
unauthenticated request learns nothing (a malformed body or an unknown deployment still answers 401).
/healthz, /metrics, /openapi.json and the docs need no token.

Called by `rollwise.cli.serve.run_server` and `api.app.create_app`; `read_token_file` by the CLI.
Must not: log or print the token.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollwise.model.errors import ValidationFailed

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "ROLLWISE_TOKEN"
TOKEN_FILE = "token"
PROTECTED_PREFIX = "/v1"


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def read_token_file(data_dir: Path) -> str | None:
    """The token stored in `data_dir/token`, or None when there is no readable, non-empty file."""
    try:
        text = token_path(data_dir).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def load_or_create_token(data_dir: Path, given: str | None) -> tuple[str, Path | None]:
    """The API token and, when it lives in a file, that file's path (see module docstring)."""
    if given is not None:
        return _checked(given, "--token"), None
    env = os.environ.get(TOKEN_ENV)
    if env:
        return _checked(env, TOKEN_ENV), None
    path = token_path(data_dir)
    existing = read_token_file(data_dir)
    if existing is not None:
        return existing, path
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL: two servers starting at once on one data dir must not overwrite each other's token.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = read_token_file(data_dir)
        if existing is None:
            raise ValidationFailed(f"{path}: the token file exists but is empty or unreadable") from None
        return existing, path
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token, path


def _checked(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise ValidationFailed(f"{source}: the token is empty")
    return token


def is_authorized(header: str | None, token: str) -> bool:
    """True when `header` is `Bearer <token>` (scheme case-insensitive), compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


class BearerAuth:
    """ASGI middleware: 401 `{"error": "unauthorized", ...}` for /v1 requests without the right token."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Imported here so that the CLI, which reads token files through this module, does not pay for
        # importing FastAPI.
        from rollwise.api.errors import error_response

        if scope["type"] == "http" and _is_protected(scope.get("path", "")):
            header = _header(scope, b"authorization")
            if header is None:
                await error_response("unauthorized", "missing bearer token (Authorization: Bearer <token>)")(
                    scope, receive, send
                )
                return
            if header.partition(" ")[0].lower() != "bearer":
                await error_response("unauthorized", "the Authorization header must be 'Bearer <token>'")(
                    scope, receive, send
                )
                return
            if not is_authorized(header, self.token):
                await error_response("unauthorized", "wrong bearer token")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_protected(path: str) -> bool:
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Any = scope.get("headers") or []
    for key, value in headers:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
