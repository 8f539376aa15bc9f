"""Typed learner turns from the browser: RTVI ``send-text`` becomes a turn like a spoken one.

A learner without a microphone (denied, absent) types instead (the learner app's text mode).
Pipecat's RTVI processor turns a ``send-text`` message into an ``LLMMessagesAppendFrame``
with one user message, which would go straight to the LLM: past the turn recorder, the
assessment step (the correction) and the learner's memory. This processor, right after the
input transport, replaces it with the frames a finished utterance produces (speech start, a
final transcript, speech stop), as ``voxtutor session --say`` does (``transports.file``), so
everything after STT treats typed text as speech. The text is the learner's, so it is data:
it is cut at :data:`MAX_TYPED_CHARS` and goes only where a transcript would.
"""

from __future__ import annotations

from pipecat.frames.frames import (
    Frame,
    LLMMessagesAppendFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

MAX_TYPED_CHARS = 500
"""The longest typed turn, characters (a spoken turn is rarely longer than 300)."""


def typed_text(frame: Frame) -> str | None:
    """The text of a typed turn (``send-text``): one user message; else ``None``."""
    if not isinstance(frame, LLMMessagesAppendFrame) or len(frame.messages) != 1:
        return None
    message = frame.messages[0]
    if not isinstance(message, dict) or message.get("role") != "user":
        return None
    content = message.get("content")
    return content.strip()[:MAX_TYPED_CHARS] if isinstance(content, str) else None


class TypedTurns(FrameProcessor):
    """Turns a typed ``send-text`` into speech start, final transcript and speech stop."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Replace a typed turn's append frame; pass everything else on."""
        await super().process_frame(frame, direction)
        text = typed_text(frame) if direction == FrameDirection.DOWNSTREAM else None
        if text is None:
            await self.push_frame(frame, direction)
            return
        if not text:
            return  # an empty message is no turn
        await self.push_frame(VADUserStartedSpeakingFrame(start_secs=0.0))
        await self.push_frame(
            TranscriptionFrame(text=text, user_id="learner", timestamp="", finalized=True)
        )
        await self.push_frame(VADUserStoppedSpeakingFrame(stop_secs=0.0))
