"""Loopback fake of Deepgram's streaming speech-to-text and text-to-speech websockets.

Follows Deepgram's API reference:

- Listen: https://developers.deepgram.com/reference/speech-to-text-api/listen-streaming
  (``GET /v1/listen`` upgraded to a websocket; query ``model``, ``language``, ``encoding``,
  ``sample_rate``, ``channels``, repeated ``keyterm``, ...; header ``Authorization: Token KEY``;
  client sends binary audio and ``KeepAlive`` / ``Finalize`` / ``CloseStream`` JSON; server sends
  ``Results`` and, on ``CloseStream``, ``Metadata`` before closing).
- Speak: https://developers.deepgram.com/reference/text-to-speech-api/speak-streaming
  (``/v1/speak?model=&encoding=&sample_rate=``; client sends ``Speak`` / ``Flush`` / ``Clear`` /
  ``Close``; server sends ``Metadata`` on open, binary audio, ``Flushed`` and ``Cleared``).
- Refused handshakes carry the reason in the ``dg-error`` response header, as Deepgram does.

Deterministic rules (what tests and usage checks can count on):

- Listen: audio is 16-bit PCM at the query's ``sample_rate``; a received binary message is
  *speech* if its RMS level is at least ``speech_rms`` (default 300), else *silence*. The fake
  answers one final ``Results`` (``is_final`` and ``speech_final`` true, transcript
  :attr:`DeepgramFake.transcript`) when the utterance so far holds at least ``min_speech_ms`` of
  speech and either (a) the client sends ``Finalize`` (``from_finalize`` true; this is what
  Pipecat sends on ``VADUserStoppedSpeakingFrame``), or (b) ``endpoint_ms`` (default 300 ms) of
  silence audio has followed the speech (Deepgram's endpointing, counted in audio, not wall
  time). ``Finalize`` with no speech pending answers an empty ``from_finalize`` result. No
  interim results are sent. ``CloseStream`` sends any pending result, then ``Metadata`` whose
  ``duration`` is the audio received (bytes / (2 × channels × sample_rate) seconds), then closes.
- Speak: ``Speak`` texts accumulate; ``Flush`` answers ``ms_per_char`` (default 50 ms) of the
  tone from ``ws_faults`` per character, as linear16 at the query's sample rate, in binary
  messages of ``chunk_ms`` (default 40 ms), then ``{"type": "Flushed", "sequence_id": n}``.
  ``Clear`` drops unsent text and audio and answers ``Cleared``. Only ``linear16`` is produced.

Faults (route keys ``"listen"`` and ``"speak"``): ``HTTP_5XX`` / ``HTTP_429`` refuse the
handshake with 503 / 429 and a ``dg-error`` header; ``HANG`` accepts and stays silent for
``hang_s``, then closes with 1011; ``DISCONNECT``, ``GARBAGE`` and ``PROVIDER_ERROR`` replace a
payload message, counted by ``after``: on listen the ``after``-th + 1 ``Results`` message, on speak
the ``after``-th + 1 audio chunk of the connection. ``DISCONNECT`` closes with 1011; ``GARBAGE``
sends an HTML page as a text frame and drops the rest of that answer (the connection stays
open); ``PROVIDER_ERROR`` sends Deepgram's error JSON and closes with 1011.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from testkit.providers import ws_faults
from testkit.providers.base import FakeProvider, Injected, WireFault

MODEL_UUID = "00000000-0000-4000-8000-00000000f4ce"
LISTEN_ERROR = {"type": "Error", "variant": "fake", "description": "fake provider error"}
SPEAK_ERROR = {"type": "Error", "err_code": "FAKE", "err_msg": "fake provider error"}


@dataclass
class ListenSession:
    """One accepted ``/v1/listen`` connection as the fake saw it.

    Attributes:
        query: Every query parameter, as a list of values (``keyterm`` repeats).
        headers: Handshake headers (lower-case names).
        audio_bytes: Binary audio received, in bytes.
        audio_messages: Binary (audio) messages received.
        transcripts: The transcript of every ``Results`` sent, in order (``""`` = empty).
        finalizes: ``Finalize`` messages received.
        finalized_at: ``audio_bytes`` when each ``Finalize`` arrived.
        keepalives: ``KeepAlive`` messages received.
        closed_stream: Whether the client sent ``CloseStream``.
        fault: The payload fault this connection carries (``DISCONNECT``/``GARBAGE``/...).
        struck: Whether that fault has fired.
        utterance_start: ``audio_bytes`` when the current utterance began.
        speech_ms: Speech in the current utterance, in ms.
        silence_ms: Silence since the current utterance's last speech, in ms.
    """

    query: dict[str, list[str]]
    headers: dict[str, str]
    audio_bytes: int = 0
    audio_messages: int = 0
    transcripts: list[str] = field(default_factory=list)
    finalizes: int = 0
    finalized_at: list[int] = field(default_factory=list)
    keepalives: int = 0
    closed_stream: bool = False
    fault: Injected | None = None
    struck: bool = False
    utterance_start: int = 0
    speech_ms: float = 0.0
    silence_ms: float = 0.0

    def param(self, name: str, default: str = "") -> str:
        """The last value of query parameter ``name``, or ``default``."""
        return self.query.get(name, [default])[-1]

    @property
    def keyterms(self) -> list[str]:
        """The ``keyterm`` values, in order."""
        return self.query.get("keyterm", [])

    @property
    def sample_rate(self) -> int:
        """``sample_rate`` from the query, in Hz."""
        return int(self.param("sample_rate"))

    @property
    def channels(self) -> int:
        """``channels`` from the query (1 if absent)."""
        return int(self.param("channels", "1"))

    def seconds(self, n_bytes: int) -> float:
        """Duration of ``n_bytes`` of this connection's 16-bit PCM, in seconds."""
        return n_bytes / (2 * self.channels * self.sample_rate)

    @property
    def audio_seconds(self) -> float:
        """Audio received, in seconds."""
        return self.seconds(self.audio_bytes)


@dataclass
class SpeakFlush:
    """One ``Flush`` on ``/v1/speak``: the text it covered and what the fake sent for it."""

    text: str
    sequence_id: int
    audio_bytes: int = 0
    flushed: bool = False
    cleared: bool = False

    @property
    def characters(self) -> int:
        """Characters of ``Speak`` text in this flush (what Deepgram bills)."""
        return len(self.text)


@dataclass
class SpeakSession:
    """One accepted ``/v1/speak`` connection: query, headers, flushes, its fault and if it fired."""

    query: dict[str, list[str]]
    headers: dict[str, str]
    flushes: list[SpeakFlush] = field(default_factory=list)
    clears: int = 0
    chunks_sent: int = 0
    fault: Injected | None = None
    struck: bool = False


class _Strike(Exception):
    """A connection-ending fault fired; the handler stops serving."""


class DeepgramFake(FakeProvider):
    """Deepgram listen + speak websockets on loopback (rules in the module docstring).

    Pass :attr:`base_url` as ``base_url`` to both ``DeepgramSTTService`` (which derives its
    ws/http pair from it and appends ``/v1/listen``) and ``DeepgramTTSService`` (which appends
    ``/v1/speak``). Refused and hung connections are in ``served(route)`` but not in
    :attr:`listen_sessions` / :attr:`speak_sessions`.

    Attributes:
        transcript: Text of every non-empty final result.
        ms_per_char: Milliseconds of audio per character of ``Speak`` text.
        chunk_ms: Milliseconds of audio per binary message on speak.
        chunk_delay_s: Pause between speak audio messages, in seconds.
        speech_rms: Listen: RMS level (of 32767) at or above which a message counts as speech.
        min_speech_ms: Listen: speech needed before a transcript is given.
        endpoint_ms: Listen: silence after speech that ends an utterance without ``Finalize``.
    """

    name = "deepgram"

    def __init__(self, transcript: str = "Cleared for takeoff, runway two seven.") -> None:
        super().__init__()
        self.transcript = transcript
        self.ms_per_char = 50
        self.chunk_ms = 40
        self.chunk_delay_s = 0.0
        self.speech_rms = 300.0
        self.min_speech_ms = 100.0
        self.endpoint_ms = 300.0
        self.app.add_api_websocket_route("/v1/listen", self._listen)
        self.app.add_api_websocket_route("/v1/speak", self._speak)

    @property
    def base_url(self) -> str:
        """``ws://127.0.0.1:<port>``: the ``base_url`` for both Deepgram services."""
        return self.ws_url

    @property
    def listen_sessions(self) -> list[ListenSession]:
        """Every listen connection accepted and served, in order."""
        return [r.body for r in self.served("listen") if isinstance(r.body, ListenSession)]

    @property
    def speak_sessions(self) -> list[SpeakSession]:
        """Every speak connection accepted and served, in order."""
        return [r.body for r in self.served("speak") if isinstance(r.body, SpeakSession)]

    def speak_samples(self, text: str, sample_rate: int) -> int:
        """Samples sent for ``text``: ``len(text)`` × ``ms_per_char`` ms at ``sample_rate`` Hz."""
        return len(text) * sample_rate * self.ms_per_char // 1000

    async def _open(
        self, ws: WebSocket, route: str
    ) -> tuple[Injected | None, dict[str, list[str]], dict[str, str]] | None:
        """Take the route's fault; refuse, hang or accept. ``None`` unless accepted to serve."""
        fault = self.take_fault(route)
        query: dict[str, list[str]] = {}
        for key, value in ws.query_params.multi_items():
            query.setdefault(key, []).append(value)
        headers = {k.lower(): v for k, v in ws.headers.items()}
        refusal = _check_request(route, query, headers)
        status = ws_faults.refusal_status(fault)
        if refusal is None and status is not None:
            refusal = status, "Too many requests." if status == 429 else "Service unavailable."
        if refusal is not None or fault is not None and fault.fault is WireFault.HANG:
            self.record(route, headers=headers, query=query)
        if refusal is not None:
            status, reason = refusal
            body = {"err_code": "FAKE", "err_msg": reason, "request_id": str(uuid.uuid4())}
            await ws_faults.deny(ws, status, body=body, headers={"dg-error": reason})
            return None
        await ws.accept(headers=[(b"dg-request-id", str(uuid.uuid4()).encode())])
        if fault is not None and fault.fault is WireFault.HANG:
            await ws_faults.hang(ws, self.hang_s)
            return None
        return fault, query, headers

    async def _strike(
        self, ws: WebSocket, session: ListenSession | SpeakSession, sent: int, error: dict[str, Any]
    ) -> bool:
        """Fire the connection's payload fault if ``sent`` payload messages have gone out.

        Returns:
            True if the payload message must not be sent (``GARBAGE`` replaced it).

        Raises:
            _Strike: The connection was closed (``DISCONNECT``, ``PROVIDER_ERROR``).
        """
        fault = session.fault
        if fault is None or session.struck or sent < fault.after:
            return False
        session.struck = True
        if fault.fault is WireFault.GARBAGE:
            await ws.send_text(ws_faults.GARBAGE_TEXT)
            return True
        if fault.fault is WireFault.PROVIDER_ERROR:
            await ws.send_json(error)
        await ws_faults.drop(ws, f"fake {fault.fault}")
        raise _Strike

    # --- listen ---------------------------------------------------------------------------

    async def _listen(self, ws: WebSocket) -> None:
        opened = await self._open(ws, "listen")
        if opened is None:
            return
        fault, query, headers = opened
        session = ListenSession(query=query, headers=headers, fault=fault)
        self.record("listen", body=session, headers=headers, query=query)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    if self._endpointed(session, message["bytes"]):
                        await self._result(ws, session, from_finalize=False)
                    continue
                kind = json.loads(message.get("text") or "{}").get("type")
                if kind == "Finalize":
                    session.finalizes += 1
                    session.finalized_at.append(session.audio_bytes)
                    await self._result(ws, session, from_finalize=True)
                elif kind == "KeepAlive":
                    session.keepalives += 1
                elif kind == "CloseStream":
                    session.closed_stream = True
                    if session.speech_ms >= self.min_speech_ms:
                        await self._result(ws, session, from_finalize=False)
                    await ws.send_json(_metadata(session))
                    await ws.close(1000)
                    return
        except (_Strike, WebSocketDisconnect):
            return

    def _endpointed(self, session: ListenSession, data: bytes) -> bool:
        """Account one audio message; True once speech is followed by ``endpoint_ms`` silence."""
        session.audio_bytes += len(data)
        session.audio_messages += 1
        ms = 1000 * session.seconds(len(data))
        if ws_faults.rms_pcm16(data) >= self.speech_rms:
            session.speech_ms += ms
            session.silence_ms = 0.0
            return False
        session.silence_ms += ms
        return session.speech_ms > 0 and session.silence_ms >= self.endpoint_ms

    async def _result(self, ws: WebSocket, session: ListenSession, *, from_finalize: bool) -> None:
        """End the utterance: send its final ``Results``, or the fault standing in for it.

        Speech shorter than ``min_speech_ms`` ends silently on endpointing and answers an empty
        transcript to ``Finalize``.
        """
        heard = session.speech_ms >= self.min_speech_ms
        start = session.seconds(session.utterance_start)
        duration = session.seconds(session.audio_bytes - session.utterance_start)
        session.utterance_start = session.audio_bytes
        session.speech_ms = session.silence_ms = 0.0
        if not heard and not from_finalize:
            return
        if await self._strike(ws, session, len(session.transcripts), LISTEN_ERROR):
            return
        transcript = self.transcript if heard else ""
        session.transcripts.append(transcript)
        words = transcript.split()
        step = duration / max(len(words), 1)
        timed = [
            {"word": w.strip(".,?!").lower(), "punctuated_word": w, "confidence": 0.99}
            | {"start": start + i * step, "end": start + (i + 1) * step}
            for i, w in enumerate(words)
        ]
        await ws.send_json(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "start": start,
                "duration": duration,
                "is_final": True,
                "speech_final": True,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [{"transcript": transcript, "confidence": 0.99, "words": timed}]
                },
                "metadata": {
                    "request_id": str(uuid.uuid4()),
                    "model_info": {"name": session.param("model"), "version": "fake", "arch": "x"},
                    "model_uuid": MODEL_UUID,
                },
            }
        )

    # --- speak ----------------------------------------------------------------------------

    async def _speak(self, ws: WebSocket) -> None:
        opened = await self._open(ws, "speak")
        if opened is None:
            return
        fault, query, headers = opened
        session = SpeakSession(query=query, headers=headers, fault=fault)
        self.record("speak", body=session, headers=headers, query=query)
        model = query.get("model", [""])[-1]
        await ws.send_json(
            {"type": "Metadata", "request_id": str(uuid.uuid4()), "model_name": model}
            | {"model_version": "fake", "model_uuid": MODEL_UUID}
        )
        jobs: asyncio.Queue[SpeakFlush | str] = asyncio.Queue()
        rate = int(query.get("sample_rate", ["24000"])[-1])
        sender = asyncio.create_task(self._speak_sender(ws, session, jobs, rate))
        pending: list[str] = []

        async def handle(msg: dict[str, Any]) -> None:
            kind = msg.get("type")
            if kind == "Speak":
                pending.append(str(msg.get("text", "")))
            elif kind == "Flush":
                flush = SpeakFlush("".join(pending), sequence_id=len(session.flushes))
                pending.clear()
                session.flushes.append(flush)
                await jobs.put(flush)
            elif kind == "Clear":
                pending.clear()
                session.clears += 1
                for f in session.flushes:
                    f.cleared = f.cleared or not f.flushed
                await jobs.put("Cleared")
            elif kind == "Close":
                await jobs.put("Close")

        await ws_faults.serve(ws, sender, handle)

    async def _speak_sender(
        self, ws: WebSocket, session: SpeakSession, jobs: asyncio.Queue[SpeakFlush | str], rate: int
    ) -> None:
        """Send each flush's audio then ``Flushed``; answer ``Clear``/``Close`` in order."""
        chunk_bytes = 2 * rate * self.chunk_ms // 1000
        while True:
            job = await jobs.get()
            if job == "Close":
                await ws.close(1000)
                return
            if job == "Cleared":
                await ws.send_json({"type": "Cleared", "sequence_id": len(session.flushes) - 1})
                continue
            assert isinstance(job, SpeakFlush)
            audio = ws_faults.tone_pcm16(self.speak_samples(job.text, rate), rate)
            garbled = False
            for chunk in ws_faults.chunks(audio, chunk_bytes):
                if job.cleared:
                    break
                try:
                    garbled = await self._strike(ws, session, session.chunks_sent, SPEAK_ERROR)
                except _Strike:
                    return
                if garbled:
                    break
                await ws.send_bytes(chunk)
                session.chunks_sent += 1
                job.audio_bytes += len(chunk)
                await asyncio.sleep(self.chunk_delay_s)
            if not job.cleared and not garbled:
                job.flushed = True
                await ws.send_json({"type": "Flushed", "sequence_id": job.sequence_id})


def _check_request(
    route: str, query: dict[str, list[str]], headers: dict[str, str]
) -> tuple[int, str] | None:
    """Deepgram's handshake checks the fake enforces: a key, linear16, a listen sample rate."""
    auth = headers.get("authorization", "")
    if not auth.startswith(("Token ", "Bearer ")) or not auth.split(" ", 1)[1].strip():
        return 401, "Invalid credentials."
    encoding = query.get("encoding", ["linear16"])[-1]
    if encoding != "linear16":
        return 400, f"Fake supports encoding=linear16 only, got {encoding}."
    if route == "listen" and "sample_rate" not in query:
        return 400, "sample_rate is required for raw audio."
    return None


def _metadata(session: ListenSession) -> dict[str, Any]:
    """The ``Metadata`` message Deepgram sends after ``CloseStream``."""
    return {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": str(uuid.uuid4()),
        "sha256": "0" * 64,
        "created": datetime.now(UTC).isoformat(),
        "duration": session.audio_seconds,
        "channels": session.channels,
        "models": [MODEL_UUID],
        "model_info": {MODEL_UUID: {"name": session.param("model"), "version": "fake"}},
    }
