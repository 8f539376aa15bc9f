"""Loopback fake of Anthropic's Messages API (``POST /v1/messages``), streamed and not.

Provider documents followed:

- Messages: https://docs.anthropic.com/en/api/messages (request body, the message object).
- Streaming: https://docs.anthropic.com/en/api/messages-streaming. Each event is
  ``event: <type>`` + ``data: <JSON>``, in the order ``message_start`` (``message.usage``
  with ``input_tokens`` and ``output_tokens: 1``, as in the doc's example),
  ``content_block_start`` (text block), ``ping``, one ``content_block_delta`` /
  ``text_delta`` per chunk, ``content_block_stop``, ``message_delta`` (``stop_reason
  "end_turn"``, cumulative ``usage.output_tokens``), ``message_stop``. An in-band failure
  is ``event: error`` with ``{"type": "error", "error": {"type": "overloaded_error", ...}}``.
- Errors: https://docs.anthropic.com/en/api/errors (``{"type": "error", "error": {"type",
  "message"}, "request_id"}``; 500 ``api_error``, 529 ``overloaded_error``, 429
  ``rate_limit_error`` with ``retry-after``; 401 ``authentication_error`` without
  ``x-api-key``).

Deterministic usage (the fake's rules, not Anthropic's tokenizer): ``input_tokens`` =
whitespace-separated words in ``system`` plus the text of every message (string content or
the ``text`` of text blocks); ``output_tokens`` = ``text_delta`` events in the reply, one word
with its surrounding whitespace each (:func:`testkit.providers.openai_fake.text_chunks`).
Counted for the whole reply even when a fault cuts it short (a client that loses the stream
only saw ``output_tokens: 1`` from ``message_start``).

Route key for :meth:`FakeProvider.inject`: ``"messages"``. ``after`` counts ``text_delta``
events; at or past the end it strikes after the last one, before ``content_block_stop``.
``HTTP_5XX`` answers with :attr:`AnthropicFake.status_5xx` (500, or 529 for "overloaded").
``HANG`` with ``after=0`` holds the request before the response headers, then serves it.
``PROVIDER_ERROR`` sends the in-band ``error`` event.

Pipecat's ``AnthropicLLMService`` has no ``base_url`` argument (an unknown keyword is silently
swallowed and the client still points at api.anthropic.com): pass
``client=AsyncAnthropic(api_key=..., base_url=fake.base_url)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from testkit.providers.base import CLIENT_GONE, FakeProvider, WireFault
from testkit.providers.openai_fake import count_words, text_chunks

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
"""Error ``type`` per HTTP status (https://docs.anthropic.com/en/api/errors)."""


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event as Anthropic frames it: ``event:`` line, ``data:`` line, blank."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class AnthropicFake(FakeProvider):
    """Anthropic's Messages endpoint on loopback.

    Attributes:
        reply: Reply text: a string, or a callable taking the request JSON and returning one.
        status_5xx: Status of an ``HTTP_5XX`` fault: 500 (``api_error``) or 529 (overloaded).
        retry_after_s: Value of the ``retry-after`` header on a 429, in seconds.
        usage: Usage of the last request served: ``input_tokens``, ``output_tokens``.
    """

    name = "anthropic"

    def __init__(
        self,
        reply: str | Callable[[dict[str, Any]], str] = "Sure. Tune 122.8 on the CTAF.",
        *,
        status_5xx: int = 500,
        retry_after_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.reply = reply
        self.status_5xx = status_5xx
        self.retry_after_s = retry_after_s
        self.usage: dict[str, int] | None = None
        self.app.post("/v1/messages")(self._messages)

    @property
    def base_url(self) -> str:
        """``base_url`` for ``AsyncAnthropic`` (the SDK appends ``/v1/messages``)."""
        return self.http_url

    def _error(self, status: int, message: str) -> JSONResponse:
        body = {
            "type": "error",
            "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": f"req_fake{len(self.requests)}",
        }
        headers = {"request-id": str(body["request_id"])}
        if status == 429:
            headers["retry-after"] = f"{self.retry_after_s:g}"
        return JSONResponse(body, status_code=status, headers=headers)

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.record(
            "messages", body=body, headers=dict(request.headers), query=dict(request.query_params)
        )
        fault = self.take_fault("messages")
        if not request.headers.get("x-api-key"):
            return self._error(401, "x-api-key header is required")
        if fault and fault.fault is WireFault.HTTP_5XX:
            return self._error(self.status_5xx, "Internal server error")
        if fault and fault.fault is WireFault.HTTP_429:
            return self._error(429, "Number of request tokens has exceeded your rate limit.")
        if not body.get("messages") or not body.get("max_tokens"):
            return self._error(400, "messages and max_tokens are required")
        if fault and fault.fault is WireFault.HANG and fault.after == 0:
            if not await self.hold(request):
                return Response(status_code=CLIENT_GONE)

        text = self.reply(body) if callable(self.reply) else self.reply
        chunks = text_chunks(text)
        prompt = count_words(body.get("system")) + sum(
            count_words(m.get("content")) for m in body["messages"]
        )
        self.usage = {"input_tokens": prompt, "output_tokens": len(chunks)}
        message = {
            "id": f"msg_fake{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-sonnet-4-6"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }
        if not body.get("stream"):
            message.update(
                content=[{"type": "text", "text": text}],
                stop_reason="end_turn",
                usage=dict(self.usage),
            )
            return JSONResponse(message)

        head = (
            sse("message_start", {"type": "message_start", "message": message}),
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse("ping", {"type": "ping"}),
        )
        parts = [
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": c},
                },
            )
            for c in chunks
        ]
        tail = (
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(chunks)},
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        )
        overloaded = {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
        stream = self.faulty_stream(
            request,
            fault,
            parts,
            garbage=b"event: content_block_delta\ndata: {not json\n\n",
            provider_error=sse("error", overloaded),
            head=head,
            tail=tail,
        )
        return StreamingResponse(stream, media_type="text/event-stream")
