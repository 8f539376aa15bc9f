"""Loopback fake of OpenAI's REST API: streamed chat completions, speech and transcriptions.

Provider documents followed (request and response shapes, SSE framing, error objects):

- Chat completions, streaming: https://platform.openai.com/docs/api-reference/chat/create-stream
  and the chunk object https://platform.openai.com/docs/api-reference/chat/streaming. Every
  event is ``data: <chat.completion.chunk JSON>``; the first chunk carries
  ``delta.role="assistant"``, the last content-free chunk ``finish_reason="stop"``. With
  ``stream_options.include_usage`` every chunk has ``"usage": null`` and one extra chunk with
  empty ``choices`` carries the usage, before ``data: [DONE]``.
- Speech: https://platform.openai.com/docs/api-reference/audio/createSpeech. The body is the
  raw audio, sent with chunked transfer encoding.
- Transcriptions: https://platform.openai.com/docs/api-reference/audio/createTranscription
  (multipart upload; ``{"text": ..., "usage": ...}``; the two usage variants follow the
  installed SDK's ``openai.types.audio.Transcription``).
- Errors: https://platform.openai.com/docs/guides/error-codes
  (``{"error": {"message", "type", "param", "code"}}``; 429 with ``retry-after``).

Deterministic usage (the fake's rules, not OpenAI's tokenizer):

- Chat: ``prompt_tokens`` = whitespace-separated words in the text of every message (string
  content, or the ``text`` of each text part); ``completion_tokens`` = content chunks in the
  reply, one word with its surrounding whitespace each (:func:`text_chunks`);
  ``total_tokens`` = their sum. Counted for the whole reply even when a fault cuts it short.
- Speech: ``characters`` = ``len(input)``. Audio is 24 kHz 16-bit mono PCM, ``ms_per_char`` ms
  per character (default 50 ms: 1,200 samples, 2,400 bytes), a quiet 440 Hz tone (peak 1,000)
  so consumers see non-silence. ``response_format`` ``pcm`` (what Pipecat's OpenAITTSService
  asks for) or ``wav`` (44-byte header first); other formats get a 400.
- Transcriptions: ``audio_seconds`` = frames / rate of the uploaded WAV (a non-WAV upload gets
  a 400). ``whisper-*`` models report ``{"type": "duration", "seconds": audio_seconds}``; other
  models ``{"type": "tokens"}`` with ``audio_tokens = ceil(audio_seconds * 10)``,
  ``text_tokens`` = words in ``prompt``, ``output_tokens`` = words in the transcript.

Route keys for :meth:`FakeProvider.inject`: ``"chat"``, ``"speech"``, ``"transcriptions"``.
``after`` counts content chunks (chat) or audio chunks of ``chunk_bytes`` (speech);
``after`` at or past the end strikes after the last one (a chat stream then loses its finish
chunk, usage chunk and ``[DONE]``). ``HANG`` with ``after=0`` holds the request before the
response headers; afterwards the request is served normally if the client is still there.
``DISCONNECT`` on transcriptions cuts the JSON body halfway. ``PROVIDER_ERROR`` (chat only)
sends OpenAI's in-band ``data: {"error": {...}}`` event; other routes answer it with a 400.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
import wave
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from testkit.providers.base import CLIENT_GONE, FakeProvider, Injected, WireFault

SAMPLE_RATE = 24_000
"""Hz; OpenAI's ``pcm`` speech format is 24 kHz 16-bit little-endian mono (createSpeech doc)."""

_WORD_CHUNK = re.compile(r"\s*\S+\s*")
_STREAM_ERROR = {
    "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
"""In-band error event OpenAI sends when a stream fails midway (the SDK raises ``APIError``)."""


def text_chunks(text: str) -> list[str]:
    """Split ``text`` into stream chunks: one word each with its surrounding whitespace.

    The chunks concatenate back to ``text`` exactly; all-whitespace text is one chunk and
    empty text none.
    """
    return _WORD_CHUNK.findall(text) or ([text] if text else [])


def count_words(content: Any) -> int:
    """Whitespace-separated words in a message's content: a string or a list of parts.

    Parts are dicts; a part's ``text`` (OpenAI text parts, Anthropic text blocks) is counted,
    other parts (images, audio, tool calls) count zero.
    """
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(count_words(p.get("text", "")) for p in content if isinstance(p, dict))
    return 0


def tone_pcm(samples: int, sample_rate: int = SAMPLE_RATE) -> bytes:
    """``samples`` of a 440 Hz tone, peak 1,000 (about -30 dBFS), as 16-bit little-endian PCM."""
    t = np.arange(samples) / sample_rate
    return (1000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


class OpenAIFake(FakeProvider):
    """OpenAI's chat-completions, speech and transcription endpoints on loopback.

    Point the ``openai`` SDK or Pipecat's OpenAI services at :attr:`base_url`.

    Attributes:
        reply: Chat reply: a string, or a callable taking the request JSON and returning one.
        transcript: Text every transcription returns.
        ms_per_char: Speech audio per input character, in ms.
        chunk_bytes: Speech body chunk size in bytes (the unit of ``after``).
        retry_after_s: Value of the ``retry-after`` header on a 429, in seconds.
        usage: Per route key, the usage of the last request served (see module docstring).
    """

    name = "openai"

    def __init__(
        self,
        reply: str | Callable[[dict[str, Any]], str] = "Sure. Tune 122.8 on the CTAF.",
        transcript: str = "What does the CTAF frequency do?",
        *,
        ms_per_char: int = 50,
        chunk_bytes: int = 4800,
        retry_after_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.reply = reply
        self.transcript = transcript
        self.ms_per_char = ms_per_char
        self.chunk_bytes = chunk_bytes
        self.retry_after_s = retry_after_s
        self.usage: dict[str, dict[str, Any]] = {}
        self.app.post("/v1/chat/completions")(self._chat)
        self.app.post("/v1/audio/speech")(self._speech)
        self.app.post("/v1/audio/transcriptions")(self._transcriptions)

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to the SDK / Pipecat: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.http_url}/v1"

    @property
    def last_usage(self) -> dict[str, Any] | None:
        """Usage of the last chat completion: ``prompt_tokens``, ``completion_tokens``, ..."""
        return self.usage.get("chat")

    def audio_bytes_for(self, text: str) -> int:
        """Bytes of 24 kHz 16-bit mono PCM the speech endpoint returns for ``text``."""
        return 2 * (len(text) * self.ms_per_char * SAMPLE_RATE // 1000)

    # -- shared ---------------------------------------------------------------------------

    def _error(self, status: int, message: str, kind: str, code: str | None) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        headers = {"retry-after": f"{self.retry_after_s:g}"} if status == 429 else None
        return JSONResponse(body, status_code=status, headers=headers)

    def _refusal(
        self, request: Request, fault: Injected | None, *, in_band: bool = False
    ) -> JSONResponse | None:
        """The error response for a missing key, an HTTP fault or an unsupported one, else None."""
        if fault and fault.fault is WireFault.PROVIDER_ERROR and not in_band:
            msg = "fake: this route has no in-band error (PROVIDER_ERROR is chat-only)"
            return self._error(400, msg, "invalid_request_error", "fake_unsupported_fault")
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return self._error(401, "Missing bearer token.", "invalid_request_error", "no_key")
        if fault and fault.fault is WireFault.HTTP_5XX:
            return self._error(500, "The server had an error.", "server_error", None)
        if fault and fault.fault is WireFault.HTTP_429:
            msg = "Rate limit reached for requests."
            return self._error(429, msg, "requests", "rate_limit_exceeded")
        return None

    # -- chat completions -----------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.record("chat", body=body, headers=dict(request.headers))
        fault = self.take_fault("chat")
        if refusal := self._refusal(request, fault, in_band=True):
            return refusal
        if fault and fault.fault is WireFault.HANG and fault.after == 0:
            if not await self.hold(request):
                return Response(status_code=CLIENT_GONE)
        text = self.reply(body) if callable(self.reply) else self.reply
        chunks = text_chunks(text)
        prompt = sum(count_words(m.get("content")) for m in body.get("messages", []))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(chunks),
            "total_tokens": prompt + len(chunks),
        }
        self.usage["chat"] = usage
        model = body.get("model", "gpt-4.1")
        base = {"id": f"chatcmpl-{len(self.requests)}", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            return JSONResponse(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )

        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            choices = (
                []
                if delta is None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            )
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices}
            if with_usage:
                chunk["usage"] = None
            chunk.update(extra)
            return f"data: {json.dumps(chunk)}\n\n".encode()

        tail = [event({}, "stop")]
        if with_usage:
            tail.append(event(None, usage=usage))
        tail.append(b"data: [DONE]\n\n")
        stream = self.faulty_stream(
            request,
            fault,
            [event({"content": c}) for c in chunks],
            garbage=b"data: {not json\n\n",
            provider_error=b"data: " + json.dumps(_STREAM_ERROR).encode() + b"\n\n",
            head=(event({"role": "assistant", "content": ""}),),
            tail=tuple(tail),
        )
        return StreamingResponse(stream, media_type="text/event-stream")

    # -- speech ---------------------------------------------------------------------------

    async def _speech(self, request: Request) -> Response:
        body = await request.json()
        self.record("speech", body=body, headers=dict(request.headers))
        fault = self.take_fault("speech")
        if refusal := self._refusal(request, fault):
            return refusal
        fmt = body.get("response_format", "mp3")
        if fmt not in ("pcm", "wav"):
            msg = f"The fake serves response_format pcm or wav, not {fmt!r}."
            return self._error(400, msg, "invalid_request_error", None)
        if fault and fault.fault is WireFault.HANG and fault.after == 0:
            if not await self.hold(request):
                return Response(status_code=CLIENT_GONE)
        text = str(body.get("input", ""))
        pcm = tone_pcm(self.audio_bytes_for(text) // 2)
        self.usage["speech"] = {
            "characters": len(text),
            "audio_bytes": len(pcm),
            "audio_seconds": len(pcm) / 2 / SAMPLE_RATE,
        }
        parts = [pcm[i : i + self.chunk_bytes] for i in range(0, len(pcm), self.chunk_bytes)]
        head: tuple[bytes, ...] = ()
        if fmt == "wav":
            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SAMPLE_RATE)
                w.setnframes(len(pcm) // 2)
            head = (buf.getvalue(),)
        garbage = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
        stream = self.faulty_stream(request, fault, parts, garbage=garbage, head=head)
        return StreamingResponse(stream, media_type="audio/wav" if fmt == "wav" else "audio/pcm")

    # -- transcriptions -------------------------------------------------------------------

    async def _transcriptions(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("file")
        data = await upload.read() if upload is not None and not isinstance(upload, str) else b""
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        rec = self.record("transcriptions", body=fields, headers=dict(request.headers))
        fault = self.take_fault("transcriptions")
        if refusal := self._refusal(request, fault):
            return refusal
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                seconds = w.getnframes() / w.getframerate()
        except (wave.Error, EOFError):
            return self._error(400, "Invalid file format.", "invalid_request_error", None)
        rec.body["audio_bytes"] = len(data)
        if fault and fault.fault is WireFault.HANG:
            if not await self.hold(request):
                return Response(status_code=CLIENT_GONE)
        model = fields.get("model", "")
        words = len(self.transcript.split())
        if model.startswith("whisper"):
            usage: dict[str, Any] = {"type": "duration", "seconds": seconds}
        else:
            audio_tokens = math.ceil(seconds * 10)
            text_tokens = len(fields.get("prompt", "").split())
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens + text_tokens,
                "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": text_tokens},
                "output_tokens": words,
                "total_tokens": audio_tokens + text_tokens + words,
            }
        self.usage["transcriptions"] = {"audio_bytes": len(data), "audio_seconds": seconds, **usage}
        fmt = fields.get("response_format", "json")
        if fmt == "text":
            return PlainTextResponse(self.transcript)
        result: dict[str, Any] = {"text": self.transcript, "usage": usage}
        if fmt == "verbose_json":
            lang = fields.get("language", "en")
            result.update(task="transcribe", language=lang, duration=seconds, segments=[])
        payload = json.dumps(result).encode()
        if fault and fault.fault is WireFault.GARBAGE:
            return Response(payload[: len(payload) // 2], media_type="application/json")
        if fault and fault.fault is WireFault.DISCONNECT:
            cut = Injected(WireFault.DISCONNECT, after=1)
            half = self.faulty_stream(request, cut, [payload[: len(payload) // 2]], garbage=b"")
            headers = {"content-length": str(len(payload))}
            return StreamingResponse(half, media_type="application/json", headers=headers)
        return Response(payload, media_type="application/json")
