"""Websocket pieces shared by the streaming provider fakes: refused handshakes, hangs, test tone.

A refused handshake is a real HTTP response to the upgrade request (ASGI "Websocket Denial
Response" extension, which uvicorn implements): the client's ``websockets`` library raises
``InvalidStatus`` / ``InvalidStatusCode`` carrying that status. Closing a websocket before
accepting it would instead always read as HTTP 403, which Pipecat classifies as a permanent
authorization error, so it cannot stand in for a 5xx or a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from array import array
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from testkit.providers.base import Injected, WireFault

GARBAGE_TEXT = "<html><body><h1>502 Bad Gateway</h1></body></html>"
"""What a fake sends for ``WireFault.GARBAGE``: a proxy's HTML error page, not JSON."""

CLOSE_INTERNAL_ERROR = 1011
"""Websocket close code for a server-side failure (RFC 6455 §7.4.1); the client library raises
``ConnectionClosedError`` for it, unlike 1000/1001 (``ConnectionClosedOK``)."""

TONE_HZ = 440.0
TONE_AMPLITUDE = 1000
"""The fakes' synthetic speech: a 440 Hz sine at amplitude 1000 of 32767 (about -30 dBFS)."""


def refusal_status(injected: Injected | None, status_5xx: int = 503) -> int | None:
    """The HTTP status a handshake gets for ``injected``: 429, ``status_5xx``, or None (no refusal).

    Args:
        injected: The fault taken for this request, if any.
        status_5xx: Status used for ``HTTP_5XX`` (503 Service Unavailable by default).
    """
    if injected is None:
        return None
    if injected.fault is WireFault.HTTP_429:
        return 429
    return status_5xx if injected.fault is WireFault.HTTP_5XX else None


class _DeniedHandshakeNote(logging.Filter):
    """Drops uvicorn's "returned without completing handshake" error after a denial response.

    uvicorn 0.54's websockets-sansio protocol sends the denial response but never marks the
    handshake complete, so it logs that error once per denial although the client got the
    response. Each :func:`deny` suppresses exactly one such record; any other still logs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pending and "without completing handshake" in record.getMessage():
            self.pending -= 1
            return False
        return True


_DENIED = _DeniedHandshakeNote()


async def deny(
    ws: WebSocket,
    status: int,
    *,
    body: Mapping[str, object],
    headers: dict[str, str] | None = None,
) -> None:
    """Answer the upgrade request with HTTP ``status`` and a JSON ``body`` instead of accepting.

    Args:
        ws: The not-yet-accepted websocket.
        status: HTTP status code.
        body: JSON body of the error response.
        headers: Extra response headers (e.g. Deepgram's ``dg-error``).
    """
    logger = logging.getLogger("uvicorn.error")
    if _DENIED not in logger.filters:
        logger.addFilter(_DENIED)
    _DENIED.pending += 1
    await ws.send_denial_response(JSONResponse(dict(body), status, headers=headers))


async def hang(ws: WebSocket, seconds: float) -> None:
    """Read and drop everything for ``seconds`` without answering, then close with 1011.

    Args:
        ws: The accepted websocket.
        seconds: How long the connection stays silent before the fake gives up on it.
    """
    with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError):
        async with asyncio.timeout(seconds):
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.close(CLOSE_INTERNAL_ERROR, "fake hang timed out")


async def drop(ws: WebSocket, reason: str = "fake disconnect") -> None:
    """Close the connection from the server side with 1011 (a mid-stream failure)."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.close(CLOSE_INTERNAL_ERROR, reason)


async def serve(
    ws: WebSocket, sender: asyncio.Task[None], handle: Callable[[Any], Awaitable[None]]
) -> None:
    """Pass each received text message, parsed as JSON, to ``handle`` until the connection ends.

    Ends when the client disconnects or ``sender`` (the task writing the answers) finishes, e.g.
    after closing the socket; ``sender`` is then cancelled and awaited.

    Args:
        ws: The accepted websocket.
        sender: The connection's writing task.
        handle: Called with each parsed message, in order.
    """
    try:
        while True:
            receive = asyncio.ensure_future(ws.receive())
            await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done():
                receive.cancel()
                return
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                return
            await handle(json.loads(message.get("text") or "{}"))
    except WebSocketDisconnect:
        return
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


def tone_pcm16(n_samples: int, sample_rate: int) -> bytes:
    """Return ``n_samples`` of the fakes' tone as 16-bit little-endian mono PCM.

    Args:
        n_samples: Number of samples (bytes returned = 2 × ``n_samples``).
        sample_rate: Sample rate in Hz.
    """
    step = 2 * math.pi * TONE_HZ / sample_rate
    samples = array("h", (int(TONE_AMPLITUDE * math.sin(step * i)) for i in range(n_samples)))
    return samples.tobytes()


def chunks(data: bytes, size: int) -> list[bytes]:
    """Split ``data`` into pieces of ``size`` bytes (the last may be shorter)."""
    return [data[i : i + size] for i in range(0, len(data), max(size, 1))]


def rms_pcm16(data: bytes) -> float:
    """Root-mean-square level of 16-bit little-endian PCM (0 for empty input)."""
    samples = array("h")
    samples.frombytes(data[: len(data) - len(data) % 2])
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))
