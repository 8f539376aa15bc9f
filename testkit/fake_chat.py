"""A scripted stand-in for :class:`services.assessment.json_chat.JsonChat` (no server)."""

from __future__ import annotations

from typing import Any

from services.assessment.json_chat import JsonChatError


class ScriptedChat:
    """Answers ``text`` and ``complete`` requests from queues; records what was asked."""

    def __init__(self, texts: list[str] | None = None, objects: list[Any] | None = None):
        self.texts = list(texts or [])
        self.objects = list(objects or [])
        self.asked: list[list[dict[str, str]]] = []
        self.warmed: list[list[dict[str, str]]] = []

    async def text(self, messages: list[dict[str, str]], max_tokens: int = 100) -> str:
        """The next scripted text (raises ``JsonChatError`` when none is left)."""
        self.asked.append(messages)
        if not self.texts:
            raise JsonChatError("no scripted text left")
        return self.texts.pop(0)

    async def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int = 200
    ) -> dict[str, Any]:
        """The next scripted object; a scripted exception is raised instead."""
        self.asked.append(messages)
        if not self.objects:
            raise JsonChatError("no scripted object left")
        value = self.objects.pop(0)
        if isinstance(value, Exception):
            raise value
        return dict(value)

    async def warm(self, messages: list[dict[str, str]]) -> bool:
        """Record ``messages`` as read ahead (answers nothing)."""
        self.warmed.append(messages)
        return True

    async def aclose(self) -> None:
        """Nothing to close."""
