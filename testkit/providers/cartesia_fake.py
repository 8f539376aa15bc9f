"""Loopback fake of Cartesia's streaming text-to-speech websocket.

Follows Cartesia's API reference, https://docs.cartesia.ai/api-reference/tts/websocket
(``wss://api.cartesia.ai/tts/websocket``; auth by ``X-API-Key`` + ``Cartesia-Version`` headers, or
``api_key`` + ``cartesia_version`` query parameters; client sends generation requests
``{"context_id", "transcript", "continue", "model_id", "voice": {"mode": "id", "id"},
"output_format": {"container", "encoding", "sample_rate"}, "language", "add_timestamps", ...}``
and cancels with ``{"context_id", "cancel": true}``; server sends ``chunk`` (base64 audio),
``timestamps`` (``word_timestamps``: ``words``, ``start``, ``end`` in seconds), ``done`` and
``error`` messages, each tagged with its ``context_id``).

Deterministic rules:

- Every request with a non-empty ``transcript`` is synthesized at once (as Cartesia does with
  ``max_buffer_delay_ms: 0``, which Pipecat sends in sentence mode): ``ms_per_char`` (default
  50 ms) of the tone from ``ws_faults`` per character, ``pcm_s16le`` at the request's
  ``sample_rate``, in ``chunk`` messages of ``chunk_ms`` (default 40 ms). With
  ``add_timestamps`` a ``timestamps`` message precedes the audio: word *i* of the transcript
  starts at (characters before it in the context) × ``ms_per_char``.
- A request with ``continue: false`` ends the context: after its audio the fake sends
  ``{"type": "done", "done": true}``. ``cancel`` stops the context's audio; nothing is answered.
- Characters are counted per context as ``len(transcript)`` summed over its requests.
- Only ``container: raw`` + ``encoding: pcm_s16le`` is produced; anything else, or a request
  without ``model_id`` / ``voice.id``, gets an in-band ``error`` (status 400), as Cartesia does.

Faults (route key ``"tts"``): ``HTTP_5XX`` / ``HTTP_429`` refuse the handshake with 503 / 429;
``HANG`` accepts and stays silent for ``hang_s``, then closes with 1011. ``DISCONNECT``,
``GARBAGE`` and ``PROVIDER_ERROR`` replace the connection's ``after``-th + 1 ``chunk`` message:
``DISCONNECT`` closes with 1011; ``GARBAGE`` sends an HTML page as a text frame and drops the
rest of that context; ``PROVIDER_ERROR`` sends Cartesia's ``{"type": "error", "status_code": 500,
"done": true}`` for the context and drops the rest of it (the connection stays open).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket

from testkit.providers import ws_faults
from testkit.providers.base import FakeProvider, Injected, WireFault


@dataclass
class CartesiaContext:
    """One ``context_id`` on a connection: what was asked and what the fake sent.

    Attributes:
        context_id: The client's context id.
        transcripts: Every non-empty ``transcript``, in order.
        requests: Every request message (as parsed JSON), in order.
        audio_bytes: PCM bytes sent in ``chunk`` messages.
        done: Whether ``done`` was sent.
        cancelled: Whether the client cancelled it.
        error: Whether an ``error`` was sent for it.
    """

    context_id: str
    transcripts: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    done: bool = False
    cancelled: bool = False
    error: bool = False

    @property
    def characters(self) -> int:
        """Characters of transcript received for this context (what Cartesia bills)."""
        return sum(len(t) for t in self.transcripts)


@dataclass
class CartesiaSession:
    """One websocket connection: handshake headers/query, its contexts, its fault."""

    headers: dict[str, str]
    query: dict[str, str]
    contexts: dict[str, CartesiaContext] = field(default_factory=dict)
    chunks_sent: int = 0
    fault: Injected | None = None
    struck: bool = False


class _Closed(Exception):
    """The fake dropped the connection (``DISCONNECT``)."""


class CartesiaFake(FakeProvider):
    """Cartesia TTS websocket on loopback (rules in the module docstring).

    Pass :attr:`url` as ``CartesiaTTSService(url=...)``.

    Attributes:
        ms_per_char: Milliseconds of audio per transcript character.
        chunk_ms: Milliseconds of audio per ``chunk`` message.
        chunk_delay_s: Pause between ``chunk`` messages, in seconds.
    """

    name = "cartesia"

    def __init__(self) -> None:
        super().__init__()
        self.ms_per_char = 50
        self.chunk_ms = 40
        self.chunk_delay_s = 0.0
        self.app.add_api_websocket_route("/tts/websocket", self._tts)

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/tts/websocket``: the ``url`` for ``CartesiaTTSService``."""
        return f"{self.ws_url}/tts/websocket"

    @property
    def sessions(self) -> list[CartesiaSession]:
        """Every connection accepted, in order."""
        return [r.body for r in self.served("tts") if isinstance(r.body, CartesiaSession)]

    @property
    def contexts(self) -> list[CartesiaContext]:
        """Every context of every connection, in order of first request."""
        return [c for s in self.sessions for c in s.contexts.values()]

    def samples(self, text: str, sample_rate: int) -> int:
        """Samples sent for ``text``: ``len(text)`` × ``ms_per_char`` ms at ``sample_rate`` Hz."""
        return len(text) * sample_rate * self.ms_per_char // 1000

    async def _tts(self, ws: WebSocket) -> None:
        fault = self.take_fault("tts")
        headers = {k.lower(): v for k, v in ws.headers.items()}
        query = dict(ws.query_params)
        key = headers.get("x-api-key") or query.get("api_key")
        version = headers.get("cartesia-version") or query.get("cartesia_version")
        status = 401 if not key else 400 if not version else ws_faults.refusal_status(fault)
        if status is not None:
            self.record("tts", headers=headers, query=query)
            body = {"error": f"fake Cartesia refusal ({status})", "status_code": status}
            await ws_faults.deny(ws, status, body=body)
            return
        await ws.accept()
        if fault is not None and fault.fault is WireFault.HANG:
            self.record("tts", headers=headers, query=query)
            await ws_faults.hang(ws, self.hang_s)
            return
        session = CartesiaSession(headers=headers, query=query, fault=fault)
        self.record("tts", body=session, headers=headers, query=query)
        jobs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sender = asyncio.create_task(self._sender(ws, session, jobs))

        async def handle(request: dict[str, Any]) -> None:
            ctx_id = str(request.get("context_id", ""))
            context = session.contexts.setdefault(ctx_id, CartesiaContext(ctx_id))
            context.requests.append(request)
            if request.get("cancel"):
                context.cancelled = True
                return
            if request.get("transcript"):
                context.transcripts.append(str(request["transcript"]))
            await jobs.put(request)

        await ws_faults.serve(ws, sender, handle)

    async def _sender(
        self, ws: WebSocket, session: CartesiaSession, jobs: asyncio.Queue[dict[str, Any]]
    ) -> None:
        """Answer requests in arrival order (one connection multiplexes contexts)."""
        offsets: dict[str, int] = {}
        try:
            while True:
                request = await jobs.get()
                context = session.contexts[str(request.get("context_id", ""))]
                if context.cancelled or context.error:
                    continue
                problem = self._problem(request)
                if problem:
                    await self._error(ws, context, 400, problem)
                    continue
                text = str(request.get("transcript") or "")
                start = offsets.get(context.context_id, 0)
                offsets[context.context_id] = start + len(text)
                if text and request.get("add_timestamps"):
                    await ws.send_json(self._timestamps(context.context_id, text, start))
                if text:
                    await self._audio(ws, session, context, text, request)
                if not request.get("continue", True) and not (context.cancelled or context.error):
                    context.done = True
                    done = {"type": "done", "done": True, "status_code": 206}
                    await ws.send_json(done | {"context_id": context.context_id})
        except _Closed:
            return

    async def _audio(
        self,
        ws: WebSocket,
        session: CartesiaSession,
        context: CartesiaContext,
        text: str,
        request: dict[str, Any],
    ) -> None:
        """Send ``text``'s audio as ``chunk`` messages, unless cancelled or a fault strikes."""
        rate = int(request["output_format"]["sample_rate"])
        audio = ws_faults.tone_pcm16(self.samples(text, rate), rate)
        for chunk in ws_faults.chunks(audio, 2 * rate * self.chunk_ms // 1000):
            if context.cancelled or context.error:
                return
            fault = session.fault
            if fault is not None and not session.struck and session.chunks_sent >= fault.after:
                session.struck = True
                if fault.fault is WireFault.DISCONNECT:
                    await ws_faults.drop(ws)
                    raise _Closed
                if fault.fault is WireFault.GARBAGE:
                    await ws.send_text(ws_faults.GARBAGE_TEXT)
                else:
                    await self._error(ws, context, 500, "fake provider error")
                context.error = True
                return
            await ws.send_json(
                {
                    "type": "chunk",
                    "data": base64.b64encode(chunk).decode(),
                    "done": False,
                    "status_code": 206,
                    "step_time": self.chunk_ms,
                    "context_id": context.context_id,
                }
            )
            session.chunks_sent += 1
            context.audio_bytes += len(chunk)
            await asyncio.sleep(self.chunk_delay_s)

    def _timestamps(self, context_id: str, text: str, start_chars: int) -> dict[str, Any]:
        """Word timestamps for ``text``, which starts ``start_chars`` into the context."""
        words, starts, ends = [], [], []
        pos = 0
        for word in text.split():
            pos = text.index(word, pos)
            words.append(word)
            starts.append((start_chars + pos) * self.ms_per_char / 1000)
            ends.append((start_chars + pos + len(word)) * self.ms_per_char / 1000)
            pos += len(word)
        return {
            "type": "timestamps",
            "done": False,
            "status_code": 206,
            "context_id": context_id,
            "word_timestamps": {"words": words, "start": starts, "end": ends},
        }

    @staticmethod
    def _problem(request: dict[str, Any]) -> str | None:
        """What Cartesia would reject in a generation request, or None."""
        fmt = request.get("output_format") or {}
        if not request.get("model_id"):
            return "model_id is required"
        if not (request.get("voice") or {}).get("id"):
            return "voice.id is required"
        if fmt.get("container") != "raw" or fmt.get("encoding") != "pcm_s16le":
            return "fake supports container=raw, encoding=pcm_s16le only"
        if not isinstance(fmt.get("sample_rate"), int) or fmt["sample_rate"] <= 0:
            return "output_format.sample_rate must be a positive integer"
        return None

    @staticmethod
    async def _error(ws: WebSocket, context: CartesiaContext, status: int, message: str) -> None:
        """Cartesia's in-band error for one context; the connection stays open."""
        context.error = True
        await ws.send_json(
            {
                "type": "error",
                "done": True,
                "status_code": status,
                "error": message,
                "context_id": context.context_id,
            }
        )
