"""The learner app's text mode: an RTVI ``send-text`` is a learner turn like a spoken one.

On the real session pipeline with fakes and no microphone audio at all (a browser in text
mode sends none): the typed text becomes a recorded learner turn, goes through the
assessment step, and the tutor replies by voice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipecat.frames.frames import Frame, LLMContextFrame, LLMMessagesAppendFrame
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from config.personas import load_persona
from config.settings import Settings
from contracts.turns import TurnRecord
from pipelines.session import build_session
from processors.typed_turns import MAX_TYPED_CHARS, typed_text
from testkit.fakes import FakeLLM, FakeTTS, ScriptedTransport

TYPED = "Ich fahre jeden Tag mit der Bus zur Arbeit."


class Seen(FrameProcessor):
    """The assessment's place: records the last user message of each context reaching it."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            users = [m for m in frame.context.get_messages() if m.get("role") == "user"]
            if users:
                self.texts.append(str(users[-1].get("content")))
        await self.push_frame(frame, direction)


async def test_a_typed_turn_is_recorded_assessed_and_answered(tmp_path: Path) -> None:
    stored: list[TurnRecord] = []

    async def on_turn(record: TurnRecord) -> None:
        stored.append(record)

    seen = Seen()
    session = build_session(
        load_persona("german-tutor"),
        stt=IdentityFilter(),
        llm=FakeLLM("Mit dem Bus. Wohin fährst du?", token_delay=0.01),
        tts=FakeTTS(chunks=5),
        transport=ScriptedTransport(),
        settings=Settings(home=tmp_path),
        on_turn=on_turn,
        assessment=seen,
        audio_out_sample_rate=16000,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)
    await session.greet()

    async def learner() -> None:
        await asyncio.sleep(1.0)
        # What Pipecat's RTVI processor makes of {"type": "send-text", ...}.
        await session.worker.queue_frame(
            LLMMessagesAppendFrame(messages=[{"role": "user", "content": TYPED}], run_llm=True)
        )
        for _ in range(100):
            if [t.role for t in stored][-2:] == ["learner", "bot"]:
                break
            await asyncio.sleep(0.1)
        await session.worker.cancel()

    driver = asyncio.create_task(learner())
    await asyncio.wait_for(runner.run(), 30)
    await driver
    assert [(t.role, t.text) for t in stored][1:] == [
        ("learner", TYPED),
        ("bot", "Mit dem Bus. Wohin fährst du?"),
    ], stored
    assert seen.texts[-1] == TYPED  # the assessment step gets the learner's turn


def test_only_one_user_message_is_a_typed_turn_and_it_is_bounded() -> None:
    long = "x" * (MAX_TYPED_CHARS + 50)
    assert typed_text(LLMMessagesAppendFrame([{"role": "user", "content": long}])) == long[:500]
    assert typed_text(LLMMessagesAppendFrame([{"role": "system", "content": "x"}])) is None
    two = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert typed_text(LLMMessagesAppendFrame(two)) is None
