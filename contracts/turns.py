"""One turn of a conversation, as the turn recorder produces it and the store keeps it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["learner", "bot"]
"""Who spoke a turn."""


@dataclass
class TurnRecord:
    """One turn of the conversation.

    Attributes:
        index: 0-based position in the session.
        role: ``learner`` or ``bot``.
        text: What the learner said (final STT) or what the bot actually spoke (after a
            barge-in only the part that was played).
        start_ms: Start of speech, ms since the session started.
        end_ms: End of speech, ms since the session started.
        latency_ms: Bot turns: voice-to-voice latency in ms (learner's last word → first bot
            audio); ``None`` for the greeting and learner turns.
        ttfb_ms: Bot turns: time to first byte per service in ms (``stt``, ``llm``, ``tts``).
        interrupted: Bot turns: the learner barged in.
    """

    index: int
    role: Role
    text: str
    start_ms: int | None = None
    end_ms: int | None = None
    latency_ms: int | None = None
    ttfb_ms: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready dict (the ``transcript.json`` turn schema)."""
        return asdict(self)


def learner_turn_index(turns: Sequence[TurnRecord], text: str) -> int | None:
    """The index of the latest learner turn whose text is ``text`` (an assessment's turn).

    Returns ``None`` when no recorded learner turn matches (the turn was not stored yet).
    """
    wanted = text.strip()
    return next(
        (t.index for t in reversed(turns) if t.role == "learner" and t.text.strip() == wanted),
        None,
    )
