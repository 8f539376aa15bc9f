"""Harness for loopback provider fakes: a FastAPI app served by uvicorn on 127.0.0.1.

Each fake (``tests/providers/<provider>_fake.py``) builds a FastAPI app speaking one provider's
wire protocol and subclasses :class:`FakeProvider`. Tests point the real Pipecat service at
``fake.http_url`` / ``fake.ws_url`` through the service's ``base_url``/``url`` setting.

Faults are queued per route key with :meth:`FakeProvider.inject` and consumed by the next
matching request, so a test says "the next TTS request hangs" and the one after works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import defaultdict, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import uvicorn
from fastapi import FastAPI


class Fault(StrEnum):
    """A fault a fake can inject into one request.

    ``HTTP_5XX`` / ``HTTP_429`` answer with that status before any payload. ``HANG`` accepts
    the request and sends nothing (the client's timeout must fire). ``DISCONNECT`` sends part of
    the payload (``after`` chunks), then drops the connection. ``GARBAGE`` sends a payload that
    is not the provider's format (non-JSON text, truncated JSON, or bytes where text belongs).
    """

    HTTP_5XX = "http_5xx"
    HTTP_429 = "http_429"
    HANG = "hang"
    DISCONNECT = "disconnect"
    GARBAGE = "garbage"


@dataclass
class Injected:
    """A queued fault: what, and after how many payload chunks it strikes (``after``)."""

    fault: Fault
    after: int = 0


@dataclass
class Recorded:
    """One request the fake served (for assertions on what the client sent)."""

    route: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)


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

    def inject(self, route: str, fault: Fault | str, *, after: int = 0, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests on ``route`` (a subclass's route key).

        Args:
            route: The fake's name for an endpoint, e.g. ``"chat"`` or ``"speak"``.
            fault: What goes wrong.
            after: Payload chunks sent before the fault strikes (``DISCONNECT``/``GARBAGE``).
            times: How many consecutive requests get it.
        """
        for _ in range(times):
            self._faults[route].append(Injected(Fault(fault), after))

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

    async def start(self) -> None:
        """Bind a free loopback port and serve until :meth:`stop`."""
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

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
