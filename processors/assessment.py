"""The assessment processor: each final learner turn is assessed before the reply is generated.

Sits between the user aggregator and the reply LLM. When the user aggregator hands the LLM
the context of a finished learner turn (an ``LLMContextFrame``), this processor asks the
session's tutoring step (a :class:`TurnStep`) what the turn contains, then:

1. speaks the step's *lead* at once (the checked corrected sentence; the examiner's verdict
   and next question), as a reply of its own, so it is heard while the rest is generated;
2. hands the LLM a copy of the context with the step's note and the lead, so the reply model
   goes on from the checked assessment instead of judging the learner itself;
3. reports the assessment (``on_assessment``) for the store and the transcript. A step may
   hand back work that finishes the assessment after the lead (``StepResult.complete``, e.g.
   the rule behind a correction): it runs in the background, off the path to the learner's
   ear, and the finished assessment is reported; the pending ones are awaited when the
   pipeline ends, so none is lost.
4. when the bot stops speaking, lets the step prepare the next turn (``TurnStep.prepare``:
   the LLM reads the next assessment prompt while the learner thinks and speaks).

Speculative contexts (a turn not confirmed yet) pass through untouched. A barge-in cancels a
step in progress like any other work of the pipeline. A failing step degrades to no
assessment: the reply is generated as it would be without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from loguru import logger
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from contracts.assessment import Assessment


@dataclass(frozen=True)
class StepResult:
    """What the tutoring step made of one learner turn.

    Attributes:
        assessment: The checked assessment, or ``None`` (nothing to assess).
        lead: What the reply starts with, spoken at once ("" for nothing).
        note: Instructions for the reply model about this turn, or ``None``.
        reply_needed: Whether the reply model should still add to the lead.
        complete: Finishes ``assessment`` after the lead has been pushed (e.g. names the
            rule behind each correction); its result is what is reported. ``None``: the
            assessment is final.
    """

    assessment: Assessment | None
    lead: str = ""
    note: str | None = None
    reply_needed: bool = True
    complete: Callable[[], Awaitable[Assessment]] | None = None


class TurnStep(Protocol):
    """A session's tutoring step (``pipelines.assessment`` builds one per persona)."""

    async def __call__(self, text: str) -> StepResult:
        """Assess the learner's ``text`` (data, never instructions) and say what to reply."""
        ...

    async def prepare(self) -> None:
        """Get ready for the next learner turn (e.g. have the LLM read the next prompt).

        Called in the background each time the bot stops speaking; must not raise.
        """
        ...


def _last_user_text(context: LLMContext) -> str | None:
    for message in reversed(context.get_messages()):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts: keep the text ones
                return " ".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict)
                ).strip()
            return None
    return None


class AssessmentProcessor(FrameProcessor):
    """Assesses each final learner turn and leads the reply with the checked result.

    Args:
        step: The session's tutoring step.
        on_assessment: Awaited with each assessment (and the learner text) as it is made.
        settle_s: How long finishing an assessment waits after the reply was asked for, s.
    """

    def __init__(
        self,
        step: TurnStep,
        on_assessment: Callable[[Assessment], Awaitable[None]] | None = None,
        settle_s: float = 0.3,
    ):
        super().__init__()
        self._settle_s = settle_s
        self._step = step
        self._on_assessment = on_assessment
        self.assessments: list[Assessment] = []
        self._finishing: set[asyncio.Task[None]] = set()
        self._preparing: asyncio.Task[None] | None = None

    def _prepare(self) -> None:
        if self._preparing is not None and not self._preparing.done():
            return
        self._preparing = asyncio.get_running_loop().create_task(self._step.prepare())

    async def _report(self, assessment: Assessment) -> None:
        self.assessments.append(assessment)
        if self._on_assessment is not None:
            await self._on_assessment(assessment)

    async def _finish(self, result: StepResult) -> None:
        assert result.complete is not None and result.assessment is not None
        # Let the reply's request reach the LLM first: a local server answers one at a time.
        await asyncio.sleep(self._settle_s)
        try:
            assessment = await result.complete()
        except Exception as e:  # the checked correction stands without its explanation
            logger.warning(f"{self}: finishing the assessment failed: {e!r}")
            assessment = result.assessment
        await self._report(assessment)

    async def drain(self) -> None:
        """Wait for the assessments still being finished (the session is ending)."""
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Assess a finished learner turn before its context reaches the LLM."""
        await super().process_frame(frame, direction)
        if isinstance(frame, EndFrame | CancelFrame):
            if self._preparing is not None:
                self._preparing.cancel()
            await self.drain()
        if isinstance(frame, BotStoppedSpeakingFrame):
            self._prepare()
        if (
            not isinstance(frame, LLMContextFrame)
            or direction != FrameDirection.DOWNSTREAM
            or frame.speculation
        ):
            await self.push_frame(frame, direction)
            return
        text = _last_user_text(frame.context)
        if not text:
            await self.push_frame(frame, direction)
            return
        try:
            result = await self._step(text)
        except Exception as e:  # a failing step must not cost the learner their reply
            logger.warning(f"{self}: assessment failed, replying without it: {e!r}")
            await self.push_frame(frame, direction)
            return
        if result.assessment is not None and result.complete is None:
            await self._report(result.assessment)
        if result.lead:
            await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(LLMTextFrame(result.lead))
            await self.push_frame(LLMFullResponseEndFrame())
        try:
            await self._reply(frame, result)
        finally:
            if result.assessment is not None and result.complete is not None:
                # Not a task of the processor's: a barge-in must not cancel the record.
                task = asyncio.get_running_loop().create_task(self._finish(result))
                self._finishing.add(task)
                task.add_done_callback(self._finishing.discard)

    async def _reply(self, frame: LLMContextFrame, result: StepResult) -> None:
        """Hand the reply model the turn's context with the step's note and lead."""
        direction = FrameDirection.DOWNSTREAM
        if not result.reply_needed:
            return
        if result.note is None and not result.lead:
            await self.push_frame(frame, direction)
            return
        messages = list(frame.context.get_messages())
        if result.note:
            messages.append({"role": "system", "content": result.note})
        if result.lead:
            messages.append({"role": "assistant", "content": result.lead})
        provisional = LLMContext(
            messages=messages,
            tools=frame.context.tools,
            tool_choice=frame.context.tool_choice,
        )
        await self.push_frame(LLMContextFrame(context=provisional), direction)
