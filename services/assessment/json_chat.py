"""JSON-constrained chat completions from an OpenAI-compatible server (llama.cpp or OpenAI).

llama.cpp's server (``llama-cpp-python``) turns ``response_format: {"type": "json_object",
"schema": ...}`` into a grammar, so even a 1.5B model can only produce JSON of that shape;
OpenAI takes ``{"type": "json_schema", "json_schema": {"schema": ..., "strict": true}}``
(https://platform.openai.com/docs/guides/structured-outputs). Learner text only ever travels
as a JSON string inside the user message: it is data, never instructions.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx

Dialect = Literal["llama.cpp", "openai"]


class JsonChatError(RuntimeError):
    """The server failed, or answered with something that is not the JSON asked for."""


class JsonChat:
    """Asks an OpenAI-compatible server for one JSON object per request.

    Args:
        base_url: e.g. ``http://127.0.0.1:39123/v1`` (the local llama.cpp server).
        model: Model name sent with each request (llama.cpp ignores it beyond its alias).
        api_key: Bearer key (``None`` for the local server).
        dialect: How ``response_format`` is spelled (see the module doc).
        timeout_s: Per-request timeout, seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "tutor",
        api_key: str | None = None,
        dialect: Dialect = "llama.cpp",
        timeout_s: float = 30.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.dialect = dialect
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers)

    def _format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.dialect == "openai":
            return {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        return {"type": "json_object", "schema": schema}

    async def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int = 200
    ) -> dict[str, Any]:
        """Return the model's JSON object for ``messages``, shaped by ``schema``.

        Args:
            messages: Chat messages (``role``, ``content``).
            schema: The JSON schema of the answer (an object).
            max_tokens: Cap on the answer's tokens.

        Raises:
            JsonChatError: HTTP error, timeout, or an answer that is not a JSON object.
        """
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": max_tokens,
            "response_format": self._format(schema),
        }
        try:
            r = await self._client.post(f"{self.base_url}/chat/completions", json=body)
            r.raise_for_status()
            content = r.json()["choices"][0]["message"]["content"]
            value = json.loads(content)
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as e:
            raise JsonChatError(f"no JSON answer: {e!r}") from e
        if not isinstance(value, dict):
            raise JsonChatError(f"expected a JSON object, got {type(value).__name__}")
        return value

    async def text(self, messages: list[dict[str, str]], max_tokens: int = 100) -> str:
        """Return the model's plain-text answer for ``messages`` (greedy decoding).

        Raises:
            JsonChatError: HTTP error, timeout, or an answer without text.
        """
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
        try:
            r = await self._client.post(f"{self.base_url}/chat/completions", json=body)
            r.raise_for_status()
            return str(r.json()["choices"][0]["message"]["content"])
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as e:
            raise JsonChatError(f"no answer: {e!r}") from e

    async def warm(self, messages: list[dict[str, str]]) -> bool:
        """Have the server read ``messages`` ahead of time; the answer (one token) is dropped.

        A llama.cpp server keeps the state of the prompt it read last (and, with a prompt
        cache, earlier ones), so a later request that starts with the same messages skips
        reading them again: 2-3 s of a 2-core machine for a 150-token grading prompt.
        Returns whether the server answered; never raises.
        """
        try:
            await self.text(messages, max_tokens=1)
            return True
        except JsonChatError:
            return False

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
