"""Harness for loopback provider fakes: a FastAPI app served by uvicorn on 127.0.0.1.

Each fake (``testkit/providers/<provider>_fake.py``) builds a FastAPI app speaking one provider's
wire protocol and subclasses :class:`FakeProvider`. Tests and benchmarks point the real Pipecat
service at ``fake.http_url`` / ``fake.ws_url`` through its ``base_url``/``url`` setting.

Faults are queued per route key with :meth:`FakeProvider.inject` and consumed by the next
matching request, so a test says "the next TTS request hangs" and the one after works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

import uvicorn
from fastapi import FastAPI, Request


class WireFault(StrEnum):
    """A fault a fake can inject into one request.

    ``HTTP_5XX`` / ``HTTP_429`` answer with that status before any payload. ``HANG`` accepts
    the request and sends nothing (the client's timeout must fire). ``DISCONNECT`` sends part of
    the payload (``after`` chunks), then drops the connection. ``GARBAGE`` sends a payload that
    is not the provider's format (non-JSON text, truncated JSON, or bytes where text belongs).
    ``PROVIDER_ERROR`` sends the provider's own in-band error message (e.g. Cartesia's
    ``{"type": "error"}``) after ``after`` chunks, where the protocol has one.
    """

    HTTP_5XX = "http_5xx"
    HTTP_429 = "http_429"
    HANG = "hang"
    DISCONNECT = "disconnect"
    GARBAGE = "garbage"
    PROVIDER_ERROR = "provider_error"


@dataclass
class Injected:
    """A queued fault: what, and after how many payload chunks it strikes (``after``)."""

    fault: WireFault
    after: int = 0


@dataclass
class Recorded:
    """One request the fake served (for assertions on what the client sent)."""

    route: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)


CLIENT_GONE = 499
"""Status a handler returns once the client has hung up (nginx's "client closed request");
nothing is delivered, it only ends the handler."""


class AbortConnection(Exception):
    """Raise from a streaming response body to drop the connection mid-response.

    When the app raises after the response has started, uvicorn closes the TCP transport, so
    the client sees a truncated body (for a chunked response: an incomplete chunked read),
    never a clean end of stream. The harness keeps uvicorn from logging it as an app error.
    """


def _is_abort(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, wraps or groups an :class:`AbortConnection`."""
    if exc is None:
        return False
    if isinstance(exc, AbortConnection):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_abort(e) for e in exc.exceptions)
    return _is_abort(exc.__cause__) or _is_abort(exc.__context__)


class _QuietAbort(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record for a deliberate abort."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_abort(record.exc_info[1]))


_QUIET_ABORT = _QuietAbort()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeProvider:
    """Base of all provider fakes: serves ``self.app`` on loopback; fault queue; request log.

    Use as ``async with OpenAIFake() as fake: ...``. Subclasses build routes on ``self.app``
    in ``__init__`` and call :meth:`take_fault` / :meth:`record` from their handlers.

    Attributes:
        app: The FastAPI app; subclasses add routes.
        port: Loopback port (chosen at start).
        requests: Every request served, in order.
        hang_s: How long a ``HANG`` fault holds the request open (seconds).
    """

    name = "fake"

    def __init__(self) -> None:
        self.app = FastAPI(title=f"{self.name} fake")
        self.port = 0
        self.requests: list[Recorded] = []
        self.hang_s = 60.0
        self._faults: dict[str, deque[Injected]] = defaultdict(deque)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>`` (no trailing slash)."""
        return f"ws://127.0.0.1:{self.port}"

    def inject(self, route: str, fault: WireFault | str, *, after: int = 0, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests on ``route`` (a subclass's route key).

        Args:
            route: The fake's name for an endpoint, e.g. ``"chat"`` or ``"speak"``.
            fault: What goes wrong.
            after: Payload chunks sent before the fault strikes (``DISCONNECT``/``GARBAGE``).
            times: How many consecutive requests get it.
        """
        for _ in range(times):
            self._faults[route].append(Injected(WireFault(fault), after))

    def take_fault(self, route: str) -> Injected | None:
        """Pop the next queued fault for ``route``, or ``None`` (the request works)."""
        queue = self._faults.get(route)
        return queue.popleft() if queue else None

    def record(self, route: str, **kwargs: Any) -> Recorded:
        """Log a request; returns the record so handlers can add to it."""
        rec = Recorded(route=route, **kwargs)
        self.requests.append(rec)
        return rec

    def served(self, route: str) -> list[Recorded]:
        """The requests served on ``route``, in order."""
        return [r for r in self.requests if r.route == route]

    async def hold(self, request: Request) -> bool:
        """Hold ``request`` open for ``hang_s`` seconds (the ``HANG`` fault), sending nothing.

        Returns:
            True if the client is still connected afterwards (the handler then carries on, as a
            slow provider would), False as soon as the client has gone away.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hang_s
        while (left := deadline - loop.time()) > 0:
            if await request.is_disconnected():
                return False
            await asyncio.sleep(min(0.05, left))
        return not await request.is_disconnected()

    async def faulty_stream(
        self,
        request: Request,
        fault: Injected | None,
        parts: list[bytes],
        *,
        garbage: bytes,
        provider_error: bytes | None = None,
        head: tuple[bytes, ...] = (),
        tail: tuple[bytes, ...] = (),
    ) -> AsyncIterator[bytes]:
        """Body of a streamed HTTP response: ``head``, ``parts``, ``tail``, with ``fault`` applied.

        A mid-stream fault strikes before part ``min(after, len(parts))``: ``DISCONNECT`` drops
        the connection, ``GARBAGE`` / ``PROVIDER_ERROR`` send ``garbage`` / ``provider_error``
        and end the body, ``HANG`` (``after`` > 0 only; a handler holds ``after=0`` hangs before
        the response starts) holds for ``hang_s`` and carries on. ``HTTP_*`` faults are the
        handler's to answer before streaming.

        Raises:
            AbortConnection: For ``DISCONNECT`` (uvicorn then drops the connection).
            ValueError: ``PROVIDER_ERROR`` on a route whose protocol has no in-band error.
        """
        for chunk in head:
            yield chunk
        for i in range(len(parts) + 1):
            if fault and i == min(fault.after, len(parts)):
                if fault.fault is WireFault.DISCONNECT:
                    raise AbortConnection
                if fault.fault is WireFault.GARBAGE:
                    yield garbage
                    return
                if fault.fault is WireFault.PROVIDER_ERROR:
                    if provider_error is None:
                        raise ValueError(f"{self.name}: this route has no in-band error")
                    yield provider_error
                    return
                if (
                    fault.fault is WireFault.HANG
                    and fault.after > 0
                    and not await self.hold(request)
                ):
                    return
            if i < len(parts):
                yield parts[i]
        for chunk in tail:
            yield chunk

    async def start(self) -> None:
        """Bind a free loopback port and serve until :meth:`stop`."""
        logging.getLogger("uvicorn.error").addFilter(_QUIET_ABORT)
        self.port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError(f"{self.name} fake did not start on port {self.port}")

    async def stop(self) -> None:
        """Stop serving (open connections are closed)."""
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        self._server = self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
