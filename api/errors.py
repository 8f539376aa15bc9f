"""The API's one error shape, ``{"error": code, "message": text}``, and its exception handlers.

Every error the API answers (validation, auth, not found, limits, unexpected exceptions) uses
:class:`ErrorBody`; no handler ever returns a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    402: "payment_required",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}
"""Default error code per HTTP status (routes raise more specific codes)."""

MAX_MESSAGE_CHARS = 1000


class ErrorBody(BaseModel):
    """Every error response.

    Attributes:
        error: Stable machine-readable code (``unauthorized``, ``session_not_found``, …).
        message: Human-readable explanation; never a traceback or a secret.
    """

    error: str
    message: str


class QuotaErrorBody(ErrorBody):
    """A refused request because a tier quota is used up (HTTP 402 ``quota_exceeded``).

    Attributes:
        quota: Which limit: ``sessions_per_month`` or ``tts_chars_per_month``.
        limit: The tier's limit.
        used: What the learner has used this calendar month (UTC).
        upgrade_url: Where to upgrade: ``VOXTUTOR_UPGRADE_URL``, else the learner's Stripe
            checkout route, else ``/api/v1/plans`` (:func:`api.billing.upgrade_url`).
    """

    quota: str
    limit: int
    used: int
    upgrade_url: str


class ApiError(Exception):
    """Raised by routes and dependencies; answered as :class:`ErrorBody` with ``status``.

    Args:
        status: HTTP status code.
        code: The ``error`` field.
        message: The ``message`` field.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
        extra: Extra body fields next to ``error`` and ``message`` (e.g. a quota's ``limit``,
            ``used`` and ``upgrade_url``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """Return an :class:`ErrorBody` JSON response (plus ``extra`` fields, if any)."""
    body = {**(extra or {}), "error": code, "message": message[:MAX_MESSAGE_CHARS]}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


_DESCRIPTIONS = {
    400: "The session process rejected the request (e.g. malformed SDP).",
    401: "Missing, unknown or revoked credentials.",
    402: "A quota of the tier is used up (body: quota, limit, used, upgrade_url).",
    403: "Wrong session token.",
    404: "No such resource for this API key.",
    409: "Conflict with the resource's state.",
    413: "Request body larger than the configured limit.",
    422: "Malformed JSON, wrong types, unknown fields or invalid values.",
    429: "All session slots are busy; retry after the Retry-After seconds.",
    500: "Unexpected error (logged; never a traceback).",
    502: "A provider (carrier, payment processor) refused or failed the request.",
    503: "A dependency or the session runtime is unavailable.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting :class:`ErrorBody` for ``statuses``."""
    return {
        s: {
            "model": QuotaErrorBody if s == 402 else ErrorBody,
            "description": _DESCRIPTIONS.get(s, STATUS_CODES.get(s, "Error")),
        }
        for s in statuses
    }


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "invalid JSON")
            parts.append(f"malformed JSON: {detail}")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every known exception into an :class:`ErrorBody`.

    Unexpected exceptions are answered by ``api.middleware.CatchAllMiddleware`` (500).
    """

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.extra)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", _describe_validation(exc))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's "error parsing the body": bytes that are not UTF-8 JSON.
            return error_response(422, "invalid_request", "malformed JSON: not valid UTF-8")
        code = STATUS_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        logger.opt(exception=exc).error("database error on {} {}", request.method, request.url.path)
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.error("database")
        return error_response(503, "database_unavailable", "the database is unavailable")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(OperationalError, database_error)
