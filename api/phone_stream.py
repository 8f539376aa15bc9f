"""A call's media stream: checked message by message, relayed to its session process.

The carrier opens ``/api/v1/phone/<carrier>/stream/<token>``. The relay checks the stream's
order and shape before anything reaches a session: ``connected``, then ``start`` (the call the
token was issued for, G.711 μ-law at 8 kHz, one channel), then ``media`` / ``dtmf`` / ``mark``
/ ``stop`` (well-formed, base64 audio, this stream's id). Then it passes the carrier's text
frames to the session's loopback socket (:mod:`transports.phone`) and the session's frames
(bot audio, ``clear``) back, unchanged.

Anything else closes the carrier's socket with a WebSocket close code and a reason, and is
logged: 1008 for an unknown or expired token, a stream of another call or messages out of
order; 1007 for malformed messages; 1003 for a wrong codec or binary frames; 1009 for an
oversized message. Message formats: Twilio
https://www.twilio.com/docs/voice/media-streams/websocket-messages, Telnyx
https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import websockets
from loguru import logger
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

HANDSHAKE_TIMEOUT_S = 10.0
"""Longest wait for ``connected`` and ``start`` after the socket opens, seconds."""
MAX_MESSAGE_CHARS = 16 * 1024
"""Largest text frame accepted, characters (a 20 ms media message is ~300)."""
MAX_AUDIO_BYTES = 8000
"""Largest audio payload of one ``media`` message, bytes (1 s of 8 kHz μ-law)."""
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class StreamError(Exception):
    """The carrier broke the protocol; its socket is closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class StreamStart:
    """What ``start`` said: the stream's and the call's ids."""

    stream_id: str
    call_id: str


@dataclass(frozen=True)
class _Shape:
    """Where a carrier puts things (Twilio camelCase, Telnyx snake_case)."""

    stream_key: str  # top-level stream id key of start/media messages
    call_key: str  # call id inside "start"
    format_key: str  # media format inside "start"
    rate_key: str
    encoding: str  # the μ-law name in the media format
    stream_in_start: bool  # Twilio repeats the stream id inside "start"


SHAPES = {
    "twilio": _Shape("streamSid", "callSid", "mediaFormat", "sampleRate", "audio/x-mulaw", True),
    "telnyx": _Shape("stream_id", "call_control_id", "media_format", "sample_rate", "PCMU", False),
}


def parse(text: str) -> dict[str, Any]:
    """Decode one text frame into a message with an ``event``.

    Raises:
        StreamError: 1009 if too long; 1007 if not a JSON object with a string ``event``.
    """
    if len(text) > MAX_MESSAGE_CHARS:
        raise StreamError(1009, f"message larger than {MAX_MESSAGE_CHARS} characters")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        raise StreamError(1007, "malformed message: not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise StreamError(1007, "malformed message: not an object with an event")
    return msg


def _text(obj: Any, key: str) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value else ""


def check_start(carrier: str, msg: dict[str, Any], call_id: str) -> StreamStart:
    """Check the ``start`` message against the call the token was issued for.

    Raises:
        StreamError: 1008 if it is not ``start`` or belongs to another call; 1007 if ids
            are missing; 1003 for a codec other than μ-law at 8000 Hz, one channel.
    """
    shape = SHAPES[carrier]
    if msg["event"] != "start":
        raise StreamError(1008, f"out of order: {msg['event']!r} before 'start'")
    start = msg.get("start")
    holder = start if shape.stream_in_start else msg
    stream_id, call = _text(holder, shape.stream_key), _text(start, shape.call_key)
    if not stream_id or not call:
        raise StreamError(1007, "malformed start: no stream or call id")
    if call != call_id:
        raise StreamError(1008, "the stream belongs to another call")
    fmt = start.get(shape.format_key) if isinstance(start, dict) else None
    fmt = fmt if isinstance(fmt, dict) else {}
    got = (fmt.get("encoding"), fmt.get(shape.rate_key), fmt.get("channels", 1))
    if got != (shape.encoding, 8000, 1):
        raise StreamError(1003, f"unsupported codec {got[0]!r} at {got[1]!r} Hz; need mu-law 8 kHz")
    return StreamStart(stream_id, call)


def check_message(carrier: str, msg: dict[str, Any], start: StreamStart) -> str | None:
    """Check a message after ``start``; return its event, or ``None`` to drop it.

    Unknown events are dropped (carriers add events); ``connected``/``start`` again are out
    of order.

    Raises:
        StreamError: 1008 out of order or another stream's id; 1007 malformed media or DTMF.
    """
    event: str = msg["event"]
    stream_id = msg.get(SHAPES[carrier].stream_key)
    if event in ("connected", "start"):
        raise StreamError(1008, f"out of order: {event!r} after the stream started")
    if event not in ("media", "dtmf", "mark", "stop"):
        logger.debug(f"dropping {carrier} stream event {event!r}")
        return None
    if stream_id is not None and stream_id != start.stream_id:
        raise StreamError(1008, f"{event!r} for another stream")
    if event == "media":
        try:
            audio = base64.b64decode(_text(msg.get("media"), "payload"), validate=True)
        except (binascii.Error, ValueError):
            audio = b""
        if not 0 < len(audio) <= MAX_AUDIO_BYTES:
            raise StreamError(1007, "malformed media: payload is not base64 audio")
    elif event == "dtmf" and _text(msg.get("dtmf"), "digit") not in DTMF_DIGITS:
        raise StreamError(1007, "malformed dtmf: no digit")
    return event


class CarrierGone(Exception):
    """The carrier closed its socket."""


async def receive(websocket: WebSocket) -> str:
    """The next text frame from the carrier.

    Raises:
        CarrierGone: The socket closed.
        StreamError: 1003 for a binary frame.
    """
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise CarrierGone
    if message.get("text") is None:
        raise StreamError(1003, "binary frames are not part of the media stream protocol")
    text: str = message["text"]
    return text


async def close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close the carrier's socket (quietly if it is already gone)."""
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(code=code, reason=reason[:120])


async def relay(
    websocket: WebSocket,
    carrier: str,
    call_id: str,
    session_url: str,
    end_session: Callable[[str], Awaitable[None]],
    hang_up: Callable[[], Awaitable[object]] | None = None,
    connect: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
) -> str:
    """Check the carrier's handshake, then relay both ways until either side ends.

    Args:
        websocket: The carrier's socket, accepted.
        carrier: ``twilio`` or ``telnyx``.
        call_id: The call the stream's token was issued for.
        session_url: The session process's loopback websocket.
        end_session: Awaited with a reason when the stream is refused (or the caller hangs
            up before it started), before the session's socket closes, so the session
            records why.
        hang_up: Awaited when the session ended first, before the carrier's socket is
            closed (the server's REST hang-up, :mod:`api.phone_hangup`).
        connect: Opens the session's side instead of a WebSocket to ``session_url``: on
            an API replica, a relay over NATS to the host running the session
            (:func:`runtime.cluster.media.open_relay`); it raises ``OSError`` when it fails.

    Returns:
        Why the relay ended (also logged by the caller).
    """
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            hello = await receive(websocket)
            if (event := parse(hello)["event"]) != "connected":
                raise StreamError(1008, f"out of order: {event!r} before 'connected'")
            start_text = await receive(websocket)
            start = check_start(carrier, parse(start_text), call_id)
    except TimeoutError:
        return await _refuse(websocket, end_session, StreamError(1008, "no start message"))
    except StreamError as e:
        return await _refuse(websocket, end_session, e)
    except (CarrierGone, WebSocketDisconnect):
        await end_session("the caller hung up before the stream started")
        return "caller hung up"
    try:
        opened = (
            connect()
            if connect is not None
            else websockets.connect(session_url, open_timeout=5, max_size=None)
        )
        async with opened as session:
            await session.send(hello)
            await session.send(start_text)
            return await _pump(websocket, session, carrier, start, end_session, hang_up)
    except (OSError, websockets.WebSocketException) as e:
        await end_session(f"the session's phone socket failed: {type(e).__name__}")
        await close(websocket, 1011, "the session is unavailable")
        return "session unavailable"


async def _refuse(
    websocket: WebSocket, end_session: Callable[[str], Awaitable[None]], e: StreamError
) -> str:
    await end_session(f"media stream refused: {e.reason}")
    await close(websocket, e.code, e.reason)
    return f"refused ({e.code}): {e.reason}"


async def _pump(
    websocket: WebSocket,
    session: Any,
    carrier: str,
    start: StreamStart,
    end_session: Callable[[str], Awaitable[None]],
    hang_up: Callable[[], Awaitable[object]] | None = None,
) -> str:
    async def upstream() -> str:
        while True:
            text = await receive(websocket)
            event = check_message(carrier, parse(text), start)
            if event is not None:
                await session.send(text)
            if event == "stop":
                return "caller hung up"

    async def downstream() -> str:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in session:
                if isinstance(data, str):
                    await websocket.send_text(data)
        return "session ended"

    up = asyncio.create_task(upstream())
    down = asyncio.create_task(downstream())
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(up, down, return_exceptions=True)
    try:
        outcome = done.pop().result()
    except StreamError as e:
        return await _refuse(websocket, end_session, e)
    except websockets.ConnectionClosed:  # relaying to a session that just ended
        outcome = "session ended"
    except Exception:  # the carrier's socket failed, receiving or sending
        outcome = "caller hung up"
    # Either the session ended (the socket closing hangs the call up), or the caller did
    # (the session's socket closes as this returns, and the session ends: client disconnected).
    if outcome == "session ended" and hang_up is not None:
        with contextlib.suppress(Exception):  # the socket's close ends the call anyway
            await hang_up()
    await close(websocket, 1000, outcome)
    return outcome
