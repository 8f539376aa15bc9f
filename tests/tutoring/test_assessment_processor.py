"""The assessment step in the session pipeline: the checked result leads the spoken reply."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pipecat.frames.frames import EndFrame
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.workers.runner import WorkerRunner

from config.personas import load_persona
from config.settings import Settings
from contracts.assessment import Assessment, Correction
from pipelines.session import build_session
from processors.assessment import AssessmentProcessor, StepResult
from testkit.fakes import FakeLLM, FakeTTS, ScriptedTransport, user_says

FIX = Assessment(
    kind="gec",
    text="Die Auto ist alt.",
    corrected="Das Auto ist alt.",
    errors=(Correction("Die", "Das", "Auto is neuter: das", "gender"),),
)


class Step:
    """A tutoring step that returns ``result`` (or raises ``error``) and records its input."""

    def __init__(self, result: StepResult | None = None, error: Exception | None = None):
        self.result, self.error, self.seen = result, error, []
        self.prepared = 0

    async def prepare(self) -> None:
        self.prepared += 1

    async def __call__(self, text: str) -> StepResult:
        self.seen.append(text)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


async def converse(tmp_path: Path, step: Step, said: str = "Die Auto ist alt."):
    llm = FakeLLM("Was für ein Auto ist es?", token_delay=0.001)
    stored: list[Assessment] = []

    async def keep(a: Assessment) -> None:
        stored.append(a)

    processor = AssessmentProcessor(step, on_assessment=keep)
    session = build_session(
        load_persona("czech-tutor"),  # ends a turn after a short pause: a fast test
        stt=IdentityFilter(),
        llm=llm,
        tts=FakeTTS(chunks=3),
        transport=ScriptedTransport(),
        settings=Settings(home=tmp_path, speech_timeout_ms=100),
        audio_out_sample_rate=16000,
        assessment=processor,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)

    async def drive() -> None:
        await asyncio.sleep(0.3)
        await session.worker.queue_frames(user_says(said))
        await asyncio.sleep(2.5)
        await session.worker.queue_frame(EndFrame())

    driver = asyncio.create_task(drive())
    await asyncio.wait_for(runner.run(), 30)
    await driver
    examples = len(session.persona.examples)
    messages = session.context.get_messages()[1 + 2 * examples :]
    bot = [str(m["content"]) for m in messages if m["role"] == "assistant"]  # type: ignore[index]
    return llm, stored, bot


async def test_the_checked_correction_is_spoken_first_and_the_llm_continues_from_it(
    tmp_path: Path,
) -> None:
    note = "Checked correction: Die → Das. Continue with a question."
    step = Step(StepResult(FIX, "Das Auto ist alt.", note))
    llm, stored, bot = await converse(tmp_path, step)
    assert step.seen == ["Die Auto ist alt."]
    assert step.prepared >= 1  # when the bot stopped speaking: the next turn is prepared
    assert stored == [FIX]
    spoken = " ".join(bot)
    assert spoken.index("Das Auto ist alt.") < spoken.index("Was für ein Auto ist es?")
    (request,) = llm.requests
    assert request[-2] == {"role": "system", "content": note}
    assert request[-1] == {"role": "assistant", "content": "Das Auto ist alt."}
    assert request[-3]["content"] == "Die Auto ist alt."


async def test_a_failing_step_costs_nothing_but_the_assessment(tmp_path: Path) -> None:
    llm, stored, bot = await converse(tmp_path, Step(error=RuntimeError("model down")))
    assert stored == [] and len(llm.requests) == 1
    assert llm.requests[0][-1]["content"] == "Die Auto ist alt."
    assert "Was für ein Auto ist es?" in " ".join(bot)


@pytest.mark.parametrize("reply_needed", [True, False])
async def test_the_examiner_lead_can_be_the_whole_reply(tmp_path: Path, reply_needed: bool) -> None:
    step = Step(StepResult(None, "That's correct. Next question?", None, reply_needed))
    llm, _, bot = await converse(tmp_path, step)
    assert "That's correct. Next question?" in " ".join(bot)
    assert len(llm.requests) == (1 if reply_needed else 0)


async def test_the_rule_is_named_after_the_lead_and_the_finished_assessment_is_stored(
    tmp_path: Path,
) -> None:
    quick = Assessment(
        kind="gec",
        text=FIX.text,
        corrected=FIX.corrected,
        errors=(Correction("Die", "Das", "", "gender"),),
    )
    order: list[str] = []

    async def explain() -> Assessment:
        order.append("explain")
        return FIX

    class Recording(Step):
        async def __call__(self, text: str) -> StepResult:
            order.append("correct")
            return await super().__call__(text)

    step = Recording(StepResult(quick, "Das Auto ist alt.", "note", complete=explain))
    llm, stored, bot = await converse(tmp_path, step)
    assert order == ["correct", "explain"]
    assert stored == [FIX]  # the explained one, once, not the quick one
    assert bot[0].startswith("Das Auto ist alt.") and len(llm.requests) == 1


async def test_a_failing_explanation_keeps_the_checked_correction(tmp_path: Path) -> None:
    async def explain() -> Assessment:
        raise RuntimeError("model down")

    step = Step(StepResult(FIX, "Das Auto ist alt.", "note", complete=explain))
    _, stored, bot = await converse(tmp_path, step)
    assert stored == [FIX] and "Das Auto ist alt." in " ".join(bot)
