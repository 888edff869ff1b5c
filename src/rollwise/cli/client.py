"""The CLI's HTTP client for a rollwise server's REST API (httpx), and the options every API command
shares: `--server`, `--token`, `--data-dir`.

Where the command talks to, and with which token:

    server   --server URL, else env ROLLWISE_SERVER, else http://127.0.0.1:8700
    token    --token, else env ROLLWISE_TOKEN, else the file `token` in the data directory
             (--data-dir, else env ROLLWISE_DATA_DIR, else ~/.rollwise) that `rollwise server` wrote

Every failure becomes a RollwiseError for `cli.errors` (one red line, an exit code): the server's
`{"error", "message"}` keeps its code (so "invalid" exits 2, the rest 1); a server that cannot be reached
is `server.unreachable`. No httpx exception leaves this module.

Called by the API commands (apply, get, describe, rollout, history, plan NAME). Must not: print.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from rollwise.api.auth import read_token_file
from rollwise.model.errors import RollwiseError

DEFAULT_SERVER = "http://127.0.0.1:8700"
SERVER_ENV = "ROLLWISE_SERVER"
TIMEOUT_SECONDS = 15.0

ServerOption = Annotated[
    str | None,
    typer.Option("--server", help=f"API URL [env {SERVER_ENV}; default {DEFAULT_SERVER}]", show_default=False),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="API token [env ROLLWISE_TOKEN; default: the token file in the data dir]",
                 show_default=False),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the server keeps its token [env ROLLWISE_DATA_DIR; default ~/.rollwise]",
                 show_default=False, file_okay=False),
]


class ApiError(RollwiseError):
    """An error answer of the server, with the server's code (e.g. "not_found", "invalid")."""

    def __init__(self, code: str, message: str, *, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Unreachable(RollwiseError):
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
    env = os.environ.get("ROLLWISE_TOKEN")
    if env:
        return Target(url, env.strip(), "ROLLWISE_TOKEN")
    # Inside a route process ROLLWISE_DATA_DIR is the runtime's marker, not a setting (as in cli.serve).
    configured = None if os.environ.get("ROLLWISE_ROUTE_ID") else os.environ.get("ROLLWISE_DATA_DIR")
    directory = data_dir or Path(configured or Path.home() / ".rollwise")
    from_file = read_token_file(directory)
    return Target(url, from_file, f"{directory}/token" if from_file else "")


class Client:
    """A synchronous API client; use as a context manager (or call `close`)."""

    def __init__(self, target: Target, *, timeout: float = TIMEOUT_SECONDS,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.target = target
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        self._http = httpx.Client(base_url=target.server, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- verbs ----------------------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self._request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self._request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def get_or_none(self, path: str) -> Any:
        """GET path; None when the server answers 404."""
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    # --- plumbing -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.target.server + path
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as e:
            raise Unreachable(
                f"cannot reach the rollwise server at {self.target.server} ({_reason(e)}); is `rollwise server` "
                f"running? (--server or {SERVER_ENV})"
            ) from e
        except httpx.TimeoutException as e:
            raise Unreachable(f"{method} {url}: the server did not answer in time") from e
        except httpx.HTTPError as e:
            raise Unreachable(f"{method} {url}: {_reason(e)}") from e
        if response.is_success:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError as e:
                raise ApiError("server.error", f"{method} {url}: the answer is not JSON",
                               status=response.status_code) from e
        raise self._error_of(response)

    def _error_of(self, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
            code, message = str(body["error"]), str(body["message"])
        except (ValueError, KeyError, TypeError):
            code = "server.error"
            message = f"the server answered HTTP {response.status_code} ({response.reason_phrase})"
        if response.status_code == 401:
            source = f" (token from {self.target.token_source})" if self.target.token else ""
            message = (f"{message}{source}: pass --token, set ROLLWISE_TOKEN, or point --data-dir at the "
                       "server's data directory")
        return ApiError(code, message, status=response.status_code)


def connect(server: str | None, token: str | None, data_dir: Path | None) -> Client:
    return Client(resolve_target(server, token, data_dir))


def deployment_path(name: str, *rest: str) -> str:
    """/v1/deployments/NAME[/rest...], with NAME percent-encoded (a name is never trusted to be a label)."""
    from urllib.parse import quote

    return "/".join(["/v1/deployments", quote(name, safe="")] + list(rest))


def _reason(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
