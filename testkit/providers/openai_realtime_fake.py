"""Loopback fake of the OpenAI Realtime API websocket (the GA interface Pipecat 1.14 speaks).

Provider documents followed:

- Connecting: https://platform.openai.com/docs/guides/realtime-websocket
  (``wss://api.openai.com/v1/realtime?model=<model>``, ``Authorization: Bearer <key>``).
- Client events: https://platform.openai.com/docs/api-reference/realtime-client-events
  (``session.update``, ``input_audio_buffer.append/commit/clear``, ``conversation.item.create``,
  ``conversation.item.truncate``, ``response.create``, ``response.cancel``).
- Server events: https://platform.openai.com/docs/api-reference/realtime-server-events
  (``session.created/updated``, ``input_audio_buffer.speech_started/speech_stopped/committed``,
  ``conversation.item.added/done/truncated``,
  ``conversation.item.input_audio_transcription.completed``, ``response.created``,
  ``response.output_item.added/done``, ``response.content_part.added/done``,
  ``response.output_audio.delta/done``, ``response.output_audio_transcript.delta/done``,
  ``response.function_call_arguments.delta/done``, ``response.done`` with ``usage``, ``error``).
- Conversation flow, server VAD, function calling and truncation:
  https://platform.openai.com/docs/guides/realtime-conversations and
  https://platform.openai.com/docs/guides/realtime-vad.

Deterministic rules (the fake's, not OpenAI's models):

- Audio is 24 kHz 16-bit mono PCM both ways (``audio/pcm``, the format Pipecat uses).
- Server VAD, unless the session sets ``audio.input.turn_detection`` to false/null: appended
  audio is cut into 20 ms windows (480 samples); a window is speech when its RMS is at least
  ``speech_rms`` (300, about -41 dBFS). ``speech_started`` comes at the first speech window
  (``audio_start_ms`` minus ``prefix_padding_ms``); ``speech_stopped`` once
  ``silence_duration_ms`` (session value, default 500) of non-speech windows followed. Then the
  buffer is committed, the transcript is sent when the session enabled input transcription
  (attribute ``transcript``), and a response is created unless ``create_response`` is false.
  Speech starting while a response is still streaming cancels it (``interrupt_response``).
- A response speaks ``reply`` after a learner turn or a function result, ``opening`` when the
  client asks with ``response.create`` otherwise (the greeting). Its audio is ``ms_per_char``
  ms (50) of a 440 Hz tone per character, in ``response.output_audio.delta`` messages of
  ``chunk_ms`` (100 ms); the text goes out word by word in
  ``response.output_audio_transcript.delta`` messages, spread over the audio deltas.
- With ``call_tool = (name, arguments)`` and ``name`` among the session's tools, the response
  to a learner turn is that function call instead; the reply follows the client's
  ``function_call_output`` and ``response.create``.
- ``response.done`` usage: input text tokens = words in the instructions plus words in every
  text the client put into the conversation; input audio tokens = committed learner audio / 100
  ms (rounded up); output text tokens = transcript chunks sent (or words of a call's arguments);
  output audio tokens = audio sent / 50 ms (rounded up); no cached tokens.

Faults (route key ``"realtime"``): ``HTTP_5XX`` / ``HTTP_429`` refuse the handshake with 503 /
429 (a missing bearer token gets 401); ``HANG`` accepts, never sends ``session.created``, drops
everything it reads for ``hang_s`` and closes with 1011. ``DISCONNECT``, ``GARBAGE`` and
``PROVIDER_ERROR`` replace the connection's ``after``-th + 1 audio delta (counted over all its
responses): ``DISCONNECT`` closes with 1011;
``GARBAGE`` sends an HTML page as a text frame; ``PROVIDER_ERROR`` sends an in-band ``error``
event (``server_error``). After the last two the response is abandoned (no ``response.done``)
and the connection stays open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from testkit.providers import ws_faults
from testkit.providers.base import FakeProvider, WireFault
from testkit.providers.openai_fake import text_chunks
from testkit.providers.openai_realtime_state import (
    SAMPLE_RATE,
    RealtimeConnection,
    RealtimeResponse,
    default_session,
    usage,
)

WINDOW_BYTES = 2 * SAMPLE_RATE // 50
"""The fake VAD's 20 ms window, in bytes."""
_SESSION_CLOSED = (WebSocketDisconnect, RuntimeError, OSError)


class OpenAIRealtimeFake(FakeProvider):
    """The OpenAI Realtime websocket on loopback (rules in the module docstring).

    Pass :attr:`url` as ``OpenAIRealtimeLLMService(base_url=...)``; the service appends
    ``?model=...``.

    Attributes:
        transcript: What the learner's committed audio is transcribed as.
        reply: What the model says after a learner turn or a function result.
        opening: What the model says when asked with ``response.create`` otherwise.
        call_tool: ``(name, arguments)`` to call instead of the first reply, or ``None``.
        ms_per_char: Milliseconds of reply audio per character.
        chunk_ms: Milliseconds of audio per ``response.output_audio.delta``.
        delta_delay_s: Pause after each audio delta, seconds (0: as fast as possible).
        speech_rms: RMS (of 32767) at which a 20 ms window counts as speech.
    """

    name = "openai-realtime"

    def __init__(
        self,
        transcript: str = "What does the CTAF frequency do?",
        reply: str = "It is the common traffic advisory frequency. Who uses it?",
        opening: str = "Hello! Let's begin.",
    ) -> None:
        super().__init__()
        self.transcript = transcript
        self.reply = reply
        self.opening = opening
        self.call_tool: tuple[str, dict[str, Any]] | None = None
        self.ms_per_char = 50
        self.chunk_ms = 100
        self.delta_delay_s = 0.0
        self.speech_rms = 300.0
        self._ids = itertools.count(1)
        self.app.add_api_websocket_route("/v1/realtime", self._realtime)

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/v1/realtime``: the service's ``base_url``."""
        return f"{self.ws_url}/v1/realtime"

    @property
    def connections(self) -> list[RealtimeConnection]:
        """Every accepted connection, in order."""
        return [r.body for r in self.served("realtime") if isinstance(r.body, RealtimeConnection)]

    def samples(self, text: str) -> int:
        """Samples of reply audio for ``text`` at 24 kHz."""
        return len(text) * SAMPLE_RATE * self.ms_per_char // 1000

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):04d}"

    # -- connection ---------------------------------------------------------------------

    async def _realtime(self, ws: WebSocket) -> None:
        fault = self.take_fault("realtime")
        headers = {k.lower(): v for k, v in ws.headers.items()}
        query = dict(ws.query_params)
        bearer = headers.get("authorization", "").startswith("Bearer ")
        status = ws_faults.refusal_status(fault) if bearer else 401
        if status is not None:
            self.record("realtime", headers=headers, query=query)
            kind = "invalid_request_error" if status == 401 else "server_error"
            error = {"message": f"fake refusal ({status})", "type": kind, "code": None}
            await ws_faults.deny(ws, status, body={"error": error})
            return
        await ws.accept()
        if fault is not None and fault.fault is WireFault.HANG:
            self.record("realtime", headers=headers, query=query)
            await ws_faults.hang(ws, self.hang_s)
            return
        conn = RealtimeConnection(ws, query=query, headers=headers, fault=fault)
        conn.session = default_session(query.get("model", ""))
        self.record("realtime", body=conn, headers=headers, query=query)
        try:
            await conn.send("session.created", session=conn.session)
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await self._handle(conn, json.loads(message.get("text") or "{}"))
        except _SESSION_CLOSED:
            return
        finally:
            if conn.active is not None:
                conn.active.cancel()
                await asyncio.gather(conn.active, return_exceptions=True)

    async def _handle(self, conn: RealtimeConnection, event: dict[str, Any]) -> None:
        kind = str(event.get("type"))
        conn.client_events.append(kind)
        if kind == "session.update":
            conn.update(event.get("session") or {})
            await conn.send("session.updated", session=conn.session)
        elif kind == "input_audio_buffer.append":
            await self._append(conn, base64.b64decode(event.get("audio") or ""))
        elif kind == "input_audio_buffer.commit":
            await self._commit(conn)
        elif kind == "input_audio_buffer.clear":
            conn.buffer_bytes, conn.speaking = 0, False
            await conn.send("input_audio_buffer.cleared")
        elif kind == "conversation.item.create":
            item = {**(event.get("item") or {}), "status": "completed"}
            item.setdefault("id", self._id("item"))
            previous = conn.items[-1]["id"] if conn.items else None
            conn.items.append(item)
            conn.reply_owed |= item.get("type") == "function_call_output"
            await conn.send("conversation.item.added", previous_item_id=previous, item=item)
            await conn.send("conversation.item.done", previous_item_id=previous, item=item)
        elif kind == "conversation.item.truncate":
            keys = ("item_id", "content_index", "audio_end_ms")
            conn.truncations.append({k: event.get(k) for k in keys})
            await conn.send("conversation.item.truncated", **conn.truncations[-1])
        elif kind == "response.create":
            text, conn.reply_owed = (self.reply if conn.reply_owed else self.opening), False
            await self._start_response(conn, text)
        elif kind == "response.cancel":
            if conn.active is not None and conn.responding():
                conn.active.cancel()
            else:
                await self._error(conn, "response_cancel_not_active", "No active response.")

    async def _error(self, conn: RealtimeConnection, code: str, msg: str) -> None:
        error = {"type": "invalid_request_error", "code": code, "message": msg, "param": None}
        await conn.send("error", error=error | {"event_id": None})

    # -- server VAD and turns -----------------------------------------------------------

    async def _append(self, conn: RealtimeConnection, audio: bytes) -> None:
        conn.audio_bytes += len(audio)
        conn.buffer_bytes += len(audio)
        td = conn.turn_detection()
        if td is None:
            return
        conn.pending.extend(audio)
        while len(conn.pending) >= WINDOW_BYTES:
            window = bytes(conn.pending[:WINDOW_BYTES])
            del conn.pending[:WINDOW_BYTES]
            conn.windows += 1
            now_ms = conn.windows * 20
            if ws_faults.rms_pcm16(window) >= self.speech_rms:
                conn.silence_ms = 0
                if not conn.speaking:
                    conn.speaking = True
                    start = max(0, now_ms - 20 - int(td.get("prefix_padding_ms") or 0))
                    if td.get("interrupt_response", True) and conn.active is not None:
                        conn.active.cancel()  # a no-op once the response is done
                    item_id = self._id("item")
                    conn.turns.append(item_id)
                    await conn.send(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=start,
                        item_id=item_id,
                    )
            elif conn.speaking:
                conn.silence_ms += 20
                if conn.silence_ms >= int(td.get("silence_duration_ms") or 500):
                    conn.speaking = False
                    await conn.send(
                        "input_audio_buffer.speech_stopped",
                        audio_end_ms=now_ms,
                        item_id=conn.turns[-1],
                    )
                    await self._commit(conn, conn.turns[-1])
                    if td.get("create_response", True):
                        await self._start_response(conn, self.reply, learner_turn=True)

    async def _commit(self, conn: RealtimeConnection, item_id: str = "") -> None:
        item_id = item_id or self._id("item")
        previous = conn.items[-1]["id"] if conn.items else None
        conn.committed_bytes += conn.buffer_bytes
        conn.buffer_bytes = 0
        content = [{"type": "input_audio", "transcript": None}]
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message"}
        item |= {"role": "user", "status": "completed", "content": content}
        conn.reply_owed = True
        await conn.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        await conn.send("conversation.item.added", previous_item_id=previous, item=item)
        await conn.send("conversation.item.done", previous_item_id=previous, item=item)
        if conn.transcribes():
            await conn.send(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=self.transcript,
            )

    # -- responses ----------------------------------------------------------------------

    async def _start_response(
        self, conn: RealtimeConnection, text: str, *, learner_turn: bool = False
    ) -> None:
        if conn.responding():
            msg = "Conversation already has an active response in progress."
            await self._error(conn, "conversation_already_has_active_response", msg)
            return
        call = None
        if learner_turn and self.call_tool and self.call_tool[0] in conn.tool_names:
            name, arguments = self.call_tool
            call = {"call_id": self._id("call"), "name": name, "arguments": json.dumps(arguments)}
        if learner_turn:
            conn.reply_owed = call is not None
        response = RealtimeResponse(self._id("resp"), self._id("item"), "" if call else text, call)
        conn.responses.append(response)
        conn.active = asyncio.create_task(self._respond(conn, response))

    async def _respond(self, conn: RealtimeConnection, resp: RealtimeResponse) -> None:
        head = {"id": resp.id, "object": "realtime.response", "output": []}
        where = {"response_id": resp.id, "output_index": 0}
        part = {"item_id": resp.item_id, "content_index": 0}
        item: dict[str, Any] = {"id": resp.item_id, "object": "realtime.item"}
        if resp.call:
            item |= {"type": "function_call", "status": "in_progress", **resp.call, "arguments": ""}
        else:
            item |= {"type": "message", "role": "assistant", "status": "in_progress", "content": []}
        try:
            await conn.send("response.created", response=head | {"status": "in_progress"})
            await conn.send("response.output_item.added", **where, item=item)
            await conn.send("conversation.item.added", item=item)
            if resp.call:
                args, call_id = resp.call["arguments"], resp.call["call_id"]
                for kind, key in (("delta", "delta"), ("done", "arguments")):
                    await conn.send(
                        f"response.function_call_arguments.{kind}",
                        **where,
                        item_id=resp.item_id,
                        call_id=call_id,
                        **{key: args},
                    )
                item |= {"status": "completed", "arguments": args}
            else:
                audio_part = {"type": "audio", "transcript": ""}
                await conn.send("response.content_part.added", **where, **part, part=audio_part)
                if not await self._stream(conn, resp, where | part):
                    return
                done = {"type": "output_audio", "transcript": resp.transcript}
                item |= {"status": "completed", "content": [done]}
                await conn.send("response.output_audio.done", **where, **part)
                await conn.send(
                    "response.output_audio_transcript.done",
                    **where,
                    **part,
                    transcript=resp.transcript,
                )
                await conn.send(
                    "response.content_part.done",
                    **where,
                    **part,
                    part=audio_part | {"transcript": resp.transcript},
                )
            await conn.send("response.output_item.done", **where, item=item)
            await conn.send("conversation.item.done", item=item)
            await self._finish(conn, resp, head | {"output": [item]}, "completed")
        except asyncio.CancelledError:
            # Cancelled by the client (response.cancel) or by the learner's speech.
            item["status"] = "incomplete"
            with contextlib.suppress(*_SESSION_CLOSED):
                await self._finish(conn, resp, head | {"output": [item]}, "cancelled")
        except _SESSION_CLOSED:
            return

    async def _stream(
        self, conn: RealtimeConnection, resp: RealtimeResponse, at: dict[str, Any]
    ) -> bool:
        """Send the audio and transcript deltas; False when a fault ended the response."""
        pcm = ws_faults.tone_pcm16(self.samples(resp.text), SAMPLE_RATE)
        parts = ws_faults.chunks(pcm, 2 * SAMPLE_RATE * self.chunk_ms // 1000)
        words = text_chunks(resp.text)
        said = 0
        for i, chunk in enumerate(parts):
            fault = conn.fault
            if fault is not None and not conn.struck and conn.deltas_sent >= fault.after:
                conn.struck = True
                resp.status = f"fault:{fault.fault}"
                if fault.fault is WireFault.DISCONNECT:
                    await ws_faults.drop(conn.ws)
                elif fault.fault is WireFault.GARBAGE:
                    await conn.ws.send_text(ws_faults.GARBAGE_TEXT)
                elif fault.fault is WireFault.PROVIDER_ERROR:
                    msg = "The server had an error while processing your request."
                    error = {"type": "server_error", "code": "server_error", "message": msg}
                    await conn.send("error", error=error | {"event_id": None})
                return False
            data = base64.b64encode(chunk).decode()
            await conn.send("response.output_audio.delta", **at, delta=data)
            conn.deltas_sent += 1
            resp.audio_bytes += len(chunk)
            due = math.ceil((i + 1) * len(words) / len(parts))
            for word in words[said:due]:
                resp.transcript += word
                await conn.send("response.output_audio_transcript.delta", **at, delta=word)
            said = max(said, due)
            await asyncio.sleep(self.delta_delay_s)
        return True

    @staticmethod
    async def _finish(
        conn: RealtimeConnection, resp: RealtimeResponse, body: dict[str, Any], status: str
    ) -> None:
        resp.status, resp.usage = status, usage(conn, resp)
        details = (
            {"type": "cancelled", "reason": "turn_detected"} if status == "cancelled" else None
        )
        body |= {"status": status, "status_details": details, "usage": resp.usage}
        await conn.send("response.done", response=body)
