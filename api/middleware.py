"""ASGI middleware: the request body limit and the last-resort 500 answer.

Both are plain ASGI (no ``BaseHTTPMiddleware``), so streamed bodies and responses pass
through untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


class _ResponseTracker:
    """Wraps ``send`` to tell whether the response has started (then no error body can follow)."""

    def __init__(self, send: Send):
        self._send = send
        self.started = False

    async def send(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class BodyTooLargeError(HTTPException):
    """The body grew past the limit while streaming (answered 413 by the error handlers)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")


class BodySizeLimitMiddleware:
    """Answer 413 to bodies over ``max_bytes``: by ``Content-Length``, or counted as streamed.

    Args:
        app: The wrapped app.
        max_bytes: Largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the streamed bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lengths = [v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"]
        if lengths:
            try:
                declared = int(lengths[0])
            except ValueError:
                declared = -1
            if declared < 0:
                await error_response(400, "bad_request", "invalid Content-Length")(
                    scope, receive, send
                )
                return
            if declared > self.max_bytes:
                message = f"request body larger than {self.max_bytes} bytes"
                await error_response(413, "payload_too_large", message)(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        tracked = _ResponseTracker(send)
        try:
            await self.app(scope, counting_receive, tracked.send)
        except BodyTooLargeError as e:  # raised where no route handler turned it into a 413
            if tracked.started:
                raise
            await error_response(413, "payload_too_large", str(e.detail))(scope, receive, send)


class CatchAllMiddleware:
    """Answer any unexpected exception with 500 ``{"error": "internal"}``; log the traceback.

    Args:
        app: The wrapped app.
        on_error: Called once per unexpected exception (counts ``errors_total{kind=internal}``).
    """

    def __init__(self, app: ASGIApp, on_error: Callable[[], None] | None = None):
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; answer 500 if it raises before responding."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _ResponseTracker(send)
        try:
            await self.app(scope, receive, tracked.send)
        except Exception:
            logger.exception("unhandled error on {} {}", scope.get("method"), scope.get("path"))
            if self.on_error is not None:
                self.on_error()
            if tracked.started:
                raise
            await error_response(500, "internal", "internal error")(scope, receive, send)


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        b"form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
"""Headers on every response: the page loads only its own script, style and media, no page
may frame it, no content type is sniffed, and no URL leaks in a ``Referer`` (OWASP Secure
Headers, https://owasp.org/www-project-secure-headers/)."""


CSP = b"content-security-policy"
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response that does not set them itself.

    Args:
        app: The ASGI app.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # The docs pages (served only with VOXTUTOR_OPS_PUBLIC) load Swagger/ReDoc from a CDN
        # with inline script: no CSP there, the other headers still.
        docs = scope.get("path", "").startswith(DOCS_PATHS)
        extra = [(k, v) for k, v in SECURITY_HEADERS if not (docs and k == CSP)]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra if k not in have]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
