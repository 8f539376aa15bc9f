"""What one connection to the OpenAI Realtime fake holds, and the objects it sends back.

Used by ``testkit/providers/openai_realtime_fake.py`` (the protocol and its rules live there).
The session object follows the GA ``session.created`` example of
https://platform.openai.com/docs/api-reference/realtime-server-events/session/created and the
usage object that of ``response.done``
(https://platform.openai.com/docs/api-reference/realtime-server-events/response/done).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket

from testkit.providers.base import Injected
from testkit.providers.openai_fake import text_chunks

SAMPLE_RATE = 24_000
"""Hz; the Realtime API's ``audio/pcm`` format is 24 kHz 16-bit mono little-endian."""


@dataclass
class RealtimeResponse:
    """One response: what the fake was to say and what it sent before it ended.

    Attributes:
        id: ``response.id``.
        item_id: The id of its one output item (assistant message or function call).
        text: What it was to say (empty for a function call).
        call: ``{"call_id", "name", "arguments"}`` for a function call.
        status: ``in_progress``, ``completed``, ``cancelled`` or ``fault:<kind>``.
        audio_bytes: PCM bytes sent in audio deltas.
        transcript: Text sent in transcript deltas.
        usage: The ``usage`` object sent with ``response.done``.
    """

    id: str
    item_id: str
    text: str
    call: dict[str, Any] | None = None
    status: str = "in_progress"
    audio_bytes: int = 0
    transcript: str = ""
    usage: dict[str, Any] | None = None


@dataclass
class RealtimeConnection:
    """One websocket: the session it was configured with and everything the client sent.

    Attributes:
        ws: The accepted websocket.
        query: Query parameters of the handshake (``model``).
        headers: Handshake headers, lower-cased.
        fault: The fault this connection carries, if any.
        session: The session as configured so far (``session.update`` merged in).
        session_updates: Each ``session.update``'s ``session``, in order.
        client_events: The ``type`` of every client event, in order.
        items: Items the client created, in order.
        audio_bytes: Learner audio appended, bytes.
        committed_bytes: Learner audio committed into turns, bytes.
        turns: Item id of each learner turn the server VAD detected.
        responses: Every response, in order.
        truncations: Each ``conversation.item.truncate``: ``item_id``, ``content_index``,
            ``audio_end_ms``.
    """

    ws: WebSocket
    query: dict[str, str]
    headers: dict[str, str]
    fault: Injected | None = None
    session: dict[str, Any] = field(default_factory=dict)
    session_updates: list[dict[str, Any]] = field(default_factory=list)
    client_events: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    committed_bytes: int = 0
    turns: list[str] = field(default_factory=list)
    responses: list[RealtimeResponse] = field(default_factory=list)
    truncations: list[dict[str, Any]] = field(default_factory=list)
    # Working state: faults, server VAD, the response in flight.
    deltas_sent: int = 0
    struck: bool = False
    pending: bytearray = field(default_factory=bytearray)
    windows: int = 0
    speaking: bool = False
    silence_ms: int = 0
    buffer_bytes: int = 0
    reply_owed: bool = False
    active: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def send(self, kind: str, **body: Any) -> None:
        """Send one server event of type ``kind`` (an ``event_id`` is added)."""
        async with self.lock:
            event_id = f"event_fake{next(self.ids):04d}"
            await self.ws.send_text(json.dumps({"type": kind, "event_id": event_id, **body}))

    def responding(self) -> bool:
        """Whether a response is still streaming."""
        return self.active is not None and not self.active.done()

    @property
    def audio_seconds(self) -> float:
        """Seconds of learner audio appended (24 kHz 16-bit mono)."""
        return self.audio_bytes / 2 / SAMPLE_RATE

    @property
    def tool_names(self) -> list[str]:
        """Names of the functions the session declares."""
        return [t.get("name", "") for t in self.session.get("tools") or []]

    def turn_detection(self) -> dict[str, Any] | None:
        """The session's turn detection, ``None`` when the client switched it off."""
        td = (self.session.get("audio") or {}).get("input", {}).get("turn_detection")
        return td if isinstance(td, dict) else None

    def transcribes(self) -> bool:
        """Whether the session enabled input audio transcription."""
        return bool((self.session.get("audio") or {}).get("input", {}).get("transcription"))

    def update(self, session: dict[str, Any]) -> None:
        """Merge a ``session.update`` into :attr:`session` (nested objects key by key)."""
        self.session_updates.append(session)
        _merge(self.session, session)


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def default_session(model: str) -> dict[str, Any]:
    """The session a new connection starts with: server VAD on, no transcription, no tools."""
    pcm = {"type": "audio/pcm", "rate": SAMPLE_RATE}
    vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300}
    vad |= {"silence_duration_ms": 500, "create_response": True, "interrupt_response": True}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_fake",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {"format": pcm, "transcription": None, "turn_detection": vad},
            "output": {"format": pcm, "voice": "alloy", "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    }


def _words(item: dict[str, Any]) -> int:
    parts = item.get("content") or []
    text = " ".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))
    return len(text.split()) + len(str(item.get("output") or "").split())


def usage(conn: RealtimeConnection, resp: RealtimeResponse) -> dict[str, Any]:
    """The ``response.done`` usage of ``resp`` (the fake's counting rules, see the fake).

    Input text tokens: words in the instructions and in every text item the client created;
    input audio tokens: committed learner audio / 100 ms, rounded up; output text tokens:
    transcript chunks sent (words of the arguments for a call); output audio tokens: audio
    sent / 50 ms, rounded up. Nothing is cached.
    """
    text_in = len(str(conn.session.get("instructions") or "").split())
    text_in += sum(_words(item) for item in conn.items)
    audio_in = math.ceil(conn.committed_bytes / 2 / SAMPLE_RATE * 10)
    if resp.call:
        text_out = len(resp.call["arguments"].split())
    else:
        text_out = len(text_chunks(resp.transcript))
    audio_out = math.ceil(resp.audio_bytes / 2 / SAMPLE_RATE * 20)
    cached = {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": cached,
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }
