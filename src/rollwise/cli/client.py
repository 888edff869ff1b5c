"""The CLI's HTTP client for a rollwise server's REST API, and the options every API command shares:
`--server`, `--token`, `--data-dir`.

Where the command talks to, and with which token:

    server   --server URL, else env ROLLWISE_SERVER, else http://127.0.0.1:8700
    token    --token, else env ROLLWISE_TOKEN, else the file `token` in the data directory
             (--data-dir, else env ROLLWISE_DATA_DIR, else ~/.rollwise) that `rollwise server` wrote

Every failure becomes a `CliError` for `cli.errors` (one red line, an exit code): the server's
`{"error", "message"}` keeps its code (so "invalid" exits 2, the rest 1); a server that cannot be reached
is `server.unreachable`. No socket or http.client exception leaves this module.

It speaks HTTP/1.1 with the standard library's `http.client`, one connection per request, straight to
the server (HTTP proxy variables are not used). The API needs no more, and a command's start-up time is
mostly imports: httpx would cost more to import than everything else a command like `apply` needs
(it imports its own command-line tool, click, rich and pygments, on import).

Called by the API commands (apply, get, describe, rollout, history, plan NAME). Must not: print; import
rollwise.model, rollwise.api or anything heavy (see tests/cli/test_cli_imports.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

import typer

from rollwise.cli.errors import CliError

DEFAULT_SERVER = "http://127.0.0.1:8700"
SERVER_ENV = "ROLLWISE_SERVER"
TOKEN_ENV = "ROLLWISE_TOKEN"
TOKEN_FILE = "token"
"""The file `rollwise server` writes its token to (rollwise.api.auth, not imported: it pulls pydantic)."""
TIMEOUT_SECONDS = 15.0
NEXT_CURSOR_HEADER = "x-next-cursor"
"""The header of a list page that names the next one (rollwise.api.paging, not imported: it pulls FastAPI)."""
PAGE_SIZE = 1000
"""Items per request when a command reads a whole paged list (the API's largest page)."""

ServerOption = Annotated[
    str | None,
    typer.Option("--server", help=f"API URL [env {SERVER_ENV}; default {DEFAULT_SERVER}]", show_default=False),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help=f"API token [env {TOKEN_ENV}; default: the token file in the data dir]",
                 show_default=False),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the server keeps its token [env ROLLWISE_DATA_DIR; default ~/.rollwise]",
                 show_default=False, file_okay=False),
]


class ApiError(CliError):
    """An error answer of the server, with the server's code (e.g. "not_found", "invalid")."""

    def __init__(self, code: str, message: str, *, status: int) -> None:
        super().__init__(message, code=code)
        self.status = status


class Unreachable(CliError):
    """The server did not answer: not running, wrong URL, or timed out."""

    code = "server.unreachable"
    transient = True


@dataclass(frozen=True)
class Target:
    server: str
    token: str | None
    token_source: str


def resolve_target(server: str | None, token: str | None, data_dir: Path | None) -> Target:
    url = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
    if token:
        return Target(url, token, "--token")
    env = os.environ.get(TOKEN_ENV)
    if env:
        return Target(url, env.strip(), TOKEN_ENV)
    # Inside a route process ROLLWISE_DATA_DIR is the runtime's marker, not a setting (as in cli.serve).
    configured = None if os.environ.get("ROLLWISE_ROUTE_ID") else os.environ.get("ROLLWISE_DATA_DIR")
    directory = data_dir or Path(configured or Path.home() / ".rollwise")
    from_file = read_token_file(directory)
    return Target(url, from_file, f"{directory}/{TOKEN_FILE}" if from_file else "")


def read_token_file(data_dir: Path) -> str | None:
    """The token in `data_dir/token` (as rollwise.api.auth.read_token_file reads it), or None."""
    try:
        text = (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


class Client:
    """A synchronous API client; use as a context manager (or call `close`)."""

    def __init__(self, target: Target, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.target = target
        self.timeout = timeout
        parts = urlsplit(target.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"server URL {target.server!r} (--server or {SERVER_ENV}) is not an http:// or "
                           "https:// URL", code="invalid")
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Accept": "application/json", "User-Agent": "rollwise-cli"}
        if target.token:
            self._headers["Authorization"] = f"Bearer {target.token}"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: every request has its own connection."""

    # --- verbs ----------------------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return self._request("GET", path + (f"?{query}" if query else ""))

    def post(self, path: str, body: Any = None) -> Any:
        return self._request("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def get_all(self, path: str, **params: Any) -> list[Any]:
        """Every item of a paged list (GET /v1/deployments): the pages in order, each request with the
        `X-Next-Cursor` of the page before, until a page has none (docs/api.md, "Paging")."""
        query = {k: v for k, v in params.items() if v is not None}
        items: list[Any] = []
        while True:
            page, headers = self._exchange("GET", path + "?" + urlencode(query, doseq=True))
            items.extend(page or [])
            cursor = headers.get(NEXT_CURSOR_HEADER)
            if not cursor:
                return items
            query["cursor"] = cursor

    def get_or_none(self, path: str) -> Any:
        """GET path; None when the server answers 404."""
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    # --- plumbing -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        return self._exchange(method, path, body)[0]

    def _exchange(self, method: str, path: str, body: Any = None) -> tuple[Any, Mapping[str, str]]:
        """(the answer's JSON, its headers)."""
        import http.client  # with its email parser, only once a request is made

        url = self.target.server + path
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        try:
            connection = connection_class(self._netloc, timeout=self.timeout)
        except http.client.InvalidURL as e:
            raise CliError(f"server URL {self.target.server!r} (--server or {SERVER_ENV}): {_reason(e)}",
                           code="invalid") from e
        try:
            try:
                connection.request(method, self._prefix + path, body=payload, headers=headers)
            except TimeoutError as e:
                raise Unreachable(f"{method} {url}: the server did not answer in time") from e
            except OSError as e:  # refused, unknown host, no route, TLS handshake
                raise Unreachable(
                    f"cannot reach the rollwise server at {self.target.server} ({_reason(e)}); is `rollwise "
                    f"server` running? (--server or {SERVER_ENV})"
                ) from e
            except http.client.HTTPException as e:
                raise Unreachable(f"{method} {url}: {_reason(e)}") from e
            try:
                response = connection.getresponse()
                status, reason, content = response.status, response.reason, response.read()
                headers = {key.lower(): value for key, value in response.getheaders()}
            except TimeoutError as e:
                raise Unreachable(f"{method} {url}: the server did not answer in time") from e
            except (http.client.HTTPException, OSError) as e:
                raise Unreachable(f"{method} {url}: {_reason(e)}") from e
        finally:
            connection.close()
        if 200 <= status < 300:
            if not content:
                return None, headers
            try:
                return json.loads(content), headers
            except ValueError as e:
                raise ApiError("server.error", f"{method} {url}: the answer is not JSON", status=status) from e
        raise self._error_of(status, reason, content)

    def _error_of(self, status: int, reason: str, content: bytes) -> ApiError:
        try:
            body = json.loads(content)
            code, message = str(body["error"]), str(body["message"])
        except (ValueError, KeyError, TypeError):
            code = "server.error"
            message = f"the server answered HTTP {status} ({reason})"
        if status == 401:
            source = f" (token from {self.target.token_source})" if self.target.token else ""
            message = (f"{message}{source}: pass --token, set {TOKEN_ENV}, or point --data-dir at the "
                       "server's data directory")
        return ApiError(code, message, status=status)


def connect(server: str | None, token: str | None, data_dir: Path | None) -> Client:
    return Client(resolve_target(server, token, data_dir))


def deployment_path(name: str, *rest: str) -> str:
    """/v1/deployments/NAME[/rest...], with NAME percent-encoded (a name is never trusted to be a label)."""
    return "/".join(["/v1/deployments", quote(str(name), safe="")] + list(rest))


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
