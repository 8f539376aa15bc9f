"""Phone calls inside a session process: the carrier's media stream as a Pipecat transport.

A phone session's process serves one websocket of its own on loopback
(:class:`PhoneEndpoint`); the main server checks the carrier's stream and relays it there
(``api.phone_stream``). The pipeline then runs on Pipecat's ``FastAPIWebsocketTransport`` with
the carrier's serializer (``TwilioFrameSerializer`` / ``TelnyxFrameSerializer``).

Sample rates. The wire carries 8 kHz μ-law both ways. The bot's audio leaves the output
transport at 8 kHz (``audio_out_sample_rate=8000`` on the transport), so the serializer only
encodes and never resamples: its stream resampler would hold back the end of each utterance
(~40 ms from 24 kHz, ~105 ms from 16 kHz) and drop it after 0.2 s of silence
(``tests/phone/test_phone_protocol.py`` measures it). The output
transport's own resampler flushes its tail at the end of every utterance. The pipeline's rates
stay those of every session (16 kHz in, 24 kHz out): Whisper only takes 16 kHz (the serializer
upsamples the caller; a continuous stream loses nothing), and some tiers' TTS only speak
24 kHz (OpenAI), so each TTS is asked for the rate it is built for.

Barge-in. A phone caller's speech interrupts the bot at voice onset (the session process
passes :func:`pipelines.turn_taking.phone_turn_strategies`) and the serializer's ``clear``
empties the carrier's playout buffer, within 500 ms of the caller speaking over the bot.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.runner.types import CallData
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pydantic import SecretStr

from config.settings import Settings
from services.loopback import LoopbackServer, serve_loopback

CARRIERS = ("twilio", "telnyx")
"""Transports of :class:`runtime.protocol.SessionSpec` that are phone calls."""
WIRE_SAMPLE_RATE = 8000
"""Sample rate of the carriers' media streams in Hz (G.711 μ-law, one channel)."""
HANDSHAKE_TIMEOUT_S = 10.0
"""Longest wait for the relayed ``connected``/``start`` messages on the local socket."""


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def phone_serializer(carrier: str, call: CallData, settings: Settings) -> FrameSerializer:
    """The carrier's Pipecat serializer for one call.

    It does not hang up: the call ends when the media stream closes (``<Connect>`` has no
    next verb), and the server also hangs it up over REST (:mod:`api.phone_hangup`).

    Args:
        carrier: ``twilio`` or ``telnyx``.
        call: What ``parse_telephony_websocket`` read from the stream's ``start`` message.
        settings: Unused (kept for the callers' signature).

    Raises:
        ValueError: Unknown carrier, or the ``start`` message lacked the stream id.
    """
    if not call.stream_id:
        raise ValueError("the media stream's start message has no stream id")
    # The server hangs the call up over REST when the session ends (api.phone_hangup): the
    # carrier's credentials never reach this process.
    if carrier == "twilio":
        return TwilioFrameSerializer(
            stream_sid=call.stream_id,
            call_sid=call.call_id,
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
    if carrier == "telnyx":
        return TelnyxFrameSerializer(
            stream_id=call.stream_id,
            outbound_encoding=str(call.get("outbound_encoding") or "PCMU"),
            inbound_encoding="PCMU",
            call_control_id=call.call_id,
            params=TelnyxFrameSerializer.InputParams(auto_hang_up=False),
        )
    raise ValueError(f"unknown carrier {carrier!r}")


def phone_transport(websocket: WebSocket, serializer: FrameSerializer) -> FastAPIWebsocketTransport:
    """A websocket transport speaking the carrier's protocol; the bot leaves it at 8 kHz."""
    return FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_sample_rate=WIRE_SAMPLE_RATE,
            add_wav_header=False,
            serializer=serializer,
        ),
    )


class PhoneEndpoint:
    """The session process's loopback websocket that the server relays one call to.

    It accepts one connection on a secret path, reads the carrier's ``connected`` and
    ``start`` messages, builds the transport and hands it to ``on_call``; the connection is
    then held open until :meth:`close`.

    Args:
        carrier: ``twilio`` or ``telnyx``; a stream of another carrier is refused.
        settings: Carrier credentials (REST hang-up).
        on_call: Awaited with the call's transport; it builds and starts the pipeline.
    """

    def __init__(
        self,
        carrier: str,
        settings: Settings,
        on_call: Callable[[BaseTransport], Awaitable[None]],
    ):
        self.carrier = carrier
        self.settings = settings
        self._on_call = on_call
        self._secret = secrets.token_urlsafe(24)
        self._taken = False
        self._done = asyncio.Event()
        self._server: LoopbackServer | None = None
        self.url = ""
        """``ws://127.0.0.1:<port>/<secret>`` once started."""

    async def start(self) -> str:
        """Serve on a free loopback port; return the URL (also :attr:`url`).

        Raises:
            RuntimeError: The server did not start within 10 s.
        """
        app = FastAPI()
        app.add_api_websocket_route("/{secret}", self._serve)
        self._server = await serve_loopback(app, "phone-endpoint")
        self.url = f"ws://127.0.0.1:{self._server.port}/{self._secret}"
        return self.url

    async def _serve(self, websocket: WebSocket, secret: str) -> None:
        if self._taken or not secrets.compare_digest(secret, self._secret):
            await websocket.close(code=1008, reason="not this session's call")
            return
        self._taken = True
        await websocket.accept()
        try:
            carrier, call = await asyncio.wait_for(
                parse_telephony_websocket(websocket), HANDSHAKE_TIMEOUT_S
            )
            if carrier != self.carrier:
                raise ValueError(f"expected a {self.carrier} stream, got {carrier}")
            serializer = phone_serializer(carrier, call, self.settings)
        except (TimeoutError, ValueError) as e:
            logger.warning(f"phone stream refused: {e}")
            await websocket.close(code=1008, reason=str(e)[:120])
            return
        logger.info(f"{carrier} call {call.call_id} connected (stream {call.stream_id})")
        await self._on_call(phone_transport(websocket, serializer))
        await self._done.wait()

    async def close(self) -> None:
        """Release the held connection and stop serving."""
        self._done.set()
        if self._server is not None:
            await self._server.stop()


async def start_phone_endpoint(
    carrier: str,
    strategies: UserTurnStrategies,
    settings: Settings,
    on_connection: Callable[..., Awaitable[None]],
) -> PhoneEndpoint:
    """Serve a phone session's loopback socket; each call starts the pipeline.

    Args:
        carrier: ``twilio`` or ``telnyx``.
        strategies: The call's turn strategies
            (:func:`pipelines.turn_taking.phone_turn_strategies`).
        settings: Turn-taking knobs and carrier credentials.
        on_connection: The session process's pipeline starter, awaited as
            ``on_connection(transport, user_turn_strategies=..., rtvi=False)`` (a phone
            has no RTVI client to send transcripts to).

    Raises:
        RuntimeError: The endpoint did not start.
    """

    async def on_call(transport: BaseTransport) -> None:
        await on_connection(transport, user_turn_strategies=strategies, rtvi=False)

    endpoint = PhoneEndpoint(carrier, settings, on_call)
    await endpoint.start()
    return endpoint
