"""In-session quotas: the exchange limit and the month's TTS characters (hard tier limits).

:class:`SessionQuota` watches completed turns. At 80 % of a limit the learner gets one
RTVI server message (``{"type": "quota-warning", ...}``); when the limit is reached the bot
finishes its answer, says one line in the persona's language plus its farewell, and the
session ends (``EndFrame``) — politely, by voice, never mid-sentence. A speech-to-speech
session has no TTS: it says the line through its ``say_goodbye`` (``pipelines.realtime``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

from loguru import logger
from pipecat.frames.frames import EndFrame, Frame, TTSSpeakFrame
from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame

from contracts.turns import TurnRecord

LIMIT_REACHED = {
    "en": "That was our last exchange for this session.",
    "de": "Das war unser letzter Austausch für diese Sitzung.",
    "cs": "To byla naše poslední výměna v této lekci.",
}
"""What the bot says when a quota ends the session, per persona language."""

WARN_FRACTION = 0.8
"""Share of a limit at which the learner is warned once (the project's rule: at 80 %)."""


class SessionQuota:
    """Ends a session politely when its exchange or TTS-character allowance is used up.

    Args:
        exchanges: Learner turns the session answers (``None``: unlimited). After the bot's
            reply to the ``exchanges``-th learner turn the session ends.
        tts_characters: Characters TTS may still speak this month (``None``: unlimited);
            counted from the text of completed bot turns (what was actually spoken).
        language: Persona language (``en``, ``de``, ``cs``) for the closing line.
        farewell: The persona's goodbye, spoken after the closing line.
        queue_frames: The worker's ``queue_frames`` (frames enter at the pipeline's start).
        on_limit: Awaited once with the quota name when the session is being ended.
        say_goodbye: Awaited with the closing line to say it and end the session (a
            session's ``say_goodbye``); ``None`` queues ``TTSSpeakFrame`` and ``EndFrame``.
    """

    def __init__(
        self,
        *,
        exchanges: int | None,
        tts_characters: int | None,
        language: str,
        farewell: str,
        queue_frames: Callable[[Sequence[Frame]], Awaitable[None]],
        on_limit: Callable[[str], Awaitable[None]] | None = None,
        say_goodbye: Callable[[str], Awaitable[None]] | None = None,
    ):
        self._limits = {"exchanges_per_session": exchanges, "tts_chars_per_month": tts_characters}
        self._used = {"exchanges_per_session": 0, "tts_chars_per_month": 0}
        self._warned: set[str] = set()
        self._closing = f"{LIMIT_REACHED.get(language, LIMIT_REACHED['en'])} {farewell}"
        self._queue_frames = queue_frames
        self._on_limit = on_limit
        self._say_goodbye = say_goodbye
        self.ended_by: str | None = None

    @property
    def used(self) -> dict[str, int]:
        """Exchanges answered and characters spoken so far in this session."""
        return dict(self._used)

    async def on_turn(self, turn: TurnRecord) -> None:
        """Count a completed turn; warn at 80 %, end the session at a limit."""
        if self.ended_by is not None:
            return
        if turn.role == "learner":
            self._used["exchanges_per_session"] += 1
            return
        self._used["tts_chars_per_month"] += len(turn.text)
        for name, limit in self._limits.items():
            if limit is None:
                continue
            used = self._used[name]
            if used >= limit:
                await self._end(name, limit, used)
                return
            if used >= math.ceil(WARN_FRACTION * limit) and name not in self._warned:
                self._warned.add(name)
                await self._queue_frames(
                    [
                        RTVIServerMessageFrame(
                            data={
                                "type": "quota-warning",
                                "quota": name,
                                "used": used,
                                "limit": limit,
                            }
                        )
                    ]
                )

    async def _end(self, name: str, limit: int, used: int) -> None:
        self.ended_by = name
        logger.info(f"quota {name} reached ({used} of {limit}): ending the session")
        if self._on_limit is not None:
            await self._on_limit(name)
        reached = RTVIServerMessageFrame(
            data={"type": "quota-reached", "quota": name, "used": used, "limit": limit}
        )
        if self._say_goodbye is None:
            await self._queue_frames([reached, TTSSpeakFrame(self._closing), EndFrame()])
            return
        await self._queue_frames([reached])
        await self._say_goodbye(self._closing)
