"""Turn taking and barge-in through the real session pipeline, with fake services."""

from __future__ import annotations

import asyncio
import time

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    EndFrame,
    InterruptionFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameDirection
from pipecat.workers.runner import WorkerRunner

from config.personas import load_persona
from config.settings import Settings
from pipelines.session import build_session
from testkit.fakes import FakeLLM, FakeTTS, ScriptedTransport, user_says

REPLY = (
    "Per 14 CFR 91.205, you need an airspeed indicator and an altimeter. "
    "Tune 122.8 on the CTAF before you taxi. Then announce your position and intentions."
)
FIRST_SENTENCE = "Per 14 CFR 91.205, you need an airspeed indicator and an altimeter."


class FrameTimes(BaseObserver):
    """Records when interruptions reach the output transport and when the bot starts."""

    def __init__(self, output):
        super().__init__()
        self.output = output
        self.interruptions: list[float] = []
        self.bot_started: list[float] = []

    async def on_push_frame(self, data: FramePushed):
        if isinstance(data.frame, InterruptionFrame) and data.destination is self.output:
            self.interruptions.append(time.monotonic())
        elif (
            isinstance(data.frame, BotStartedSpeakingFrame)
            and data.source is self.output
            and data.direction == FrameDirection.DOWNSTREAM
        ):
            self.bot_started.append(time.monotonic())


@pytest.fixture
def settings(tmp_path):
    # Czech persona: speech-timeout end of turn, which works on injected VAD frames
    # (smart-turn needs real audio; it is exercised by the end-to-end tests).
    return Settings(home=tmp_path, speech_timeout_ms=100, min_words_to_interrupt=3)


async def run_script(settings, script, reply=REPLY, chunk_delay=0.0):
    """Build the session with fakes, play ``script`` (frames or sleeps), return the parts."""
    transport = ScriptedTransport()
    llm = FakeLLM(reply, token_delay=0.01)
    # 40 chunks x 20 ms = 0.8 s of speech per sentence.
    tts = FakeTTS(chunks=40, chunk_delay=chunk_delay)
    times = FrameTimes(transport.output())
    session = build_session(
        load_persona("czech-tutor"),
        stt=IdentityFilter(),  # transcripts are injected instead
        llm=llm,
        tts=tts,
        transport=transport,
        settings=settings,
        observers=[times],
        audio_out_sample_rate=16000,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)

    async def drive():
        await asyncio.sleep(0.3)
        for step in script:
            if isinstance(step, (int, float)):
                await asyncio.sleep(step)
            else:
                await session.worker.queue_frames(step)
        await session.worker.queue_frame(EndFrame())

    driver = asyncio.create_task(drive())
    await asyncio.wait_for(runner.run(), 30)
    await driver
    return session, llm, tts, transport.output(), times


def assistant_messages(session) -> list[str]:
    msgs = session.context.get_messages()
    n_examples = len(session.persona.examples)
    return [m["content"] for m in msgs[1 + 2 * n_examples :] if m["role"] == "assistant"]


async def test_barge_in_stops_bot_within_one_chunk_and_context_keeps_only_spoken(settings):
    script = [
        user_says("Jaké přístroje potřebuji?"),
        1.3,  # first sentence (0.8 s) played, second one playing
        user_says("Počkej, mám otázku k tomu"),
        1.5,
    ]
    session, llm, tts, out, times = await run_script(settings, script)

    assert times.interruptions, "barge-in produced no InterruptionFrame at the output"
    # The last interruption is the barge-in (one is broadcast at every user turn start).
    t_int = times.interruptions[-1]
    chunk_bytes = 16000 // 50 * 2 * 2  # output chunks are 40 ms at 16 kHz
    next_start = min((t for t in times.bot_started if t > t_int), default=float("inf"))
    played_after = sum(n for t, n in out.writes if t_int < t < next_start)
    assert played_after <= chunk_bytes, f"{played_after} bytes played after the barge-in"
    spoken = assistant_messages(session)
    # The reply to the barge-in is the second assistant message; the first was cut.
    assert spoken[0].startswith(FIRST_SENTENCE)
    assert "Then announce" not in spoken[0]
    assert len(llm.requests) == 2


async def test_one_word_backchannel_does_not_interrupt_the_bot(settings):
    script = [
        user_says("Jaké přístroje potřebuji?"),
        1.0,  # the bot is speaking
        user_says("mhm"),
        2.5,  # rest of the reply
    ]
    session, llm, tts, out, times = await run_script(settings, script)

    assert len(times.interruptions) == 1  # only the one broadcast when the first turn started
    assert times.interruptions[0] < times.bot_started[0]
    assert len(llm.requests) == 1
    assert assistant_messages(session) == [REPLY]
    assert tts.spoken == [s.strip() for s in tts.spoken] and len(tts.spoken) == 3
