"""The API's error boundary: every failure leaves as JSON `{"error": "<code>", "message": "<one line>"}`,
and this module is the ONE place that maps rollwise error codes to HTTP statuses.

    code                  status  raised by
    invalid               422     ValidationFailed (operations, model) and request-body validation
    malformed             400     a body that is not JSON at all
    unauthorized          401     auth middleware: missing or wrong bearer token
    not_found             404     NotFound (deployment, revision, rollout), unknown path
    method_not_allowed    405     a path that exists, with another method
    conflict              409     AlreadyExists, store Conflict
    body.too_large        413     a request body over 1 MiB (api.limits)
    rollout.in_progress   409     RolloutInProgress
    verb.not_applicable   409     NotApplicable (the message says why)
    server.standby        503     NotActive
    store.unavailable     503     StoreError (transient)
    traffic.unavailable   503     TrafficUnavailable (transient)
    internal              500     anything else: a bug; logged with its traceback, never shown

Request validation errors of FastAPI/Pydantic are turned into the same one-line form as the rest of
rollwise (`replicas: Input should be ...`, naming the field), so a client never sees FastAPI's list.

Called by `api.app.create_app` (installs the handlers) and the auth middleware (`error_response`).
Must not: decide anything about deployments; it only translates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rollwise.model.errors import RollwiseError
from rollwise.model.policy import field_path

log = logging.getLogger("rollwise.api")

STATUS_OF_CODE: dict[str, int] = {
    "invalid": 422,
    "malformed": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "body.too_large": 413,
    "rollout.in_progress": 409,
    "verb.not_applicable": 409,
    "server.standby": 503,
    "store.unavailable": 503,
    "traffic.unavailable": 503,
    "internal": 500,
}
"""rollwise error code -> HTTP status. Codes not listed: 503 when the error is transient, else 500."""

CODE_OF_HTTP_STATUS: dict[int, str] = {
    400: "malformed",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
}
"""Starlette's own HTTP errors (unknown path, wrong method) -> rollwise code."""


class ErrorBody(BaseModel):
    """Every error response of the API."""

    error: str = Field(..., description='Machine code, e.g. "not_found", "rollout.in_progress", "invalid"')
    message: str = Field(..., description="One line for people, naming the field or saying why")


def status_for(error: RollwiseError) -> int:
    status = STATUS_OF_CODE.get(error.code)
    if status is not None:
        return status
    return 503 if error.transient else 500


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_response(code: str, message: str, *, status: int | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if code == "unauthorized" else None
    return JSONResponse(
        {"error": code, "message": one_line(message)},
        status_code=status if status is not None else STATUS_OF_CODE.get(code, 500),
        headers=headers,
    )


def describe_validation_errors(errors: Sequence[Any]) -> tuple[str, str]:
    """(code, one line) for FastAPI's request validation errors: the first error, its field path
    (without the leading "body"), and how many more there were."""
    if not errors:
        return "invalid", "invalid request"
    first = errors[0]
    raw_loc = list(first.get("loc", ()))
    loc = [str(p) for p in raw_loc]
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        position = loc[1] if len(loc) > 1 else "?"
        return "malformed", f"body: malformed JSON ({ctx.get('error', 'cannot be decoded')} at position {position})"
    if loc and loc[0] == "body" and len(loc) > 1:
        raw_loc = raw_loc[1:]
    path = field_path(raw_loc) or "body"  # list indices in brackets: policy.steps[1].set_weight
    msg = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    if kind == "missing":
        msg = "is required"
    elif kind == "extra_forbidden":
        msg = "is not a known field"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return "invalid", f"{path}: {msg}{more}"


async def _rollwise_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RollwiseError)
    status = status_for(exc)
    if status >= 500:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, exc.code, exc.message)
    return error_response(exc.code, exc.message, status=status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    code, message = describe_validation_errors(exc.errors())
    return error_response(code, message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = CODE_OF_HTTP_STATUS.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid")
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 400:
        # FastAPI's answer for a body json.loads could not take (not UTF-8, nested too deeply, ...).
        message = "body: malformed JSON (cannot be decoded)"
    else:
        message = str(exc.detail)
    return error_response(code, message, status=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return error_response("internal", "internal error (logged by the server)", status=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RollwiseError, _rollwise_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token"},
    404: {"model": ErrorBody, "description": "No such deployment (or revision)"},
    409: {"model": ErrorBody, "description": "Refused in the deployment's current state; the message says why"},
    422: {"model": ErrorBody, "description": "Invalid request; the message names the field"},
    400: {"model": ErrorBody, "description": "The body is not JSON"},
    413: {"model": ErrorBody, "description": "The body is over 1 MiB"},
    503: {"model": ErrorBody, "description": "Temporarily unavailable (database busy, standby server)"},
}
"""OpenAPI `responses` shared by the /v1 endpoints (each picks the statuses it can answer)."""


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: ERROR_RESPONSES[s] for s in statuses}
