"""A bot reply cut off by a hang-up is stored as an interrupted turn, with what was spoken.

The session is cancelled mid-reply, as ``on_client_disconnected`` does when a caller hangs up
or a browser goes away (``runtime.session_process``), on the real session pipeline with
fake services.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipecat.frames.frames import (
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.workers.runner import WorkerRunner

from config.personas import load_persona
from config.settings import Settings
from contracts.turns import TurnRecord
from pipelines.session import SessionPipeline, build_session
from testkit.fakes import FakeLLM, FakeTTS, ScriptedTransport

SENTENCES = ["Včera jsem byl v kině.", "Jaký film jsi viděl?", "A líbil se ti?", "Napiš mi."]


async def _session(
    tmp_path: Path, stored: list[TurnRecord]
) -> tuple[SessionPipeline, WorkerRunner]:
    """The Czech tutor's session on fakes, greeting queued; its turns go to ``stored``."""

    async def on_turn(record: TurnRecord) -> None:
        stored.append(record)

    session = build_session(
        load_persona("czech-tutor"),
        stt=IdentityFilter(),
        llm=FakeLLM(" ".join(SENTENCES), token_delay=0.01),
        tts=FakeTTS(chunks=25),  # 0.5 s of audio per sentence
        transport=ScriptedTransport(),
        settings=Settings(home=tmp_path, speech_timeout_ms=100),
        on_turn=on_turn,
        audio_out_sample_rate=16000,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)
    await session.greet()
    return session, runner


async def test_a_reply_cut_off_by_a_hang_up_is_stored_as_interrupted(tmp_path: Path) -> None:
    stored: list[TurnRecord] = []
    session, runner = await _session(tmp_path, stored)

    async def caller() -> None:
        await asyncio.sleep(1.0)  # the greeting plays
        await session.worker.queue_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
        await asyncio.sleep(0.5)
        await session.worker.queue_frames(
            [
                TranscriptionFrame("Kam jsi šel?", "learner", "", finalized=True),
                VADUserStoppedSpeakingFrame(stop_secs=0.2),
            ]
        )
        await asyncio.sleep(1.3)  # about two sentences of the 2 s reply are spoken
        await session.worker.cancel()  # the caller hangs up

    driver = asyncio.create_task(caller())
    await asyncio.wait_for(runner.run(), 30)
    await driver
    await session.recorder.flush()

    roles = [t.role for t in stored]
    assert roles == ["bot", "learner", "bot"], stored
    cut = stored[-1]
    assert cut.interrupted is True
    assert cut.text.startswith(SENTENCES[0]) and SENTENCES[-1] not in cut.text, cut.text
    assert [t.index for t in stored] == [0, 1, 2]


async def test_a_greeting_cut_off_by_a_hang_up_is_stored_as_interrupted(tmp_path: Path) -> None:
    stored: list[TurnRecord] = []
    session, runner = await _session(tmp_path, stored)
    persona = load_persona("czech-tutor")

    async def caller() -> None:
        await asyncio.sleep(0.3)
        await session.worker.cancel()

    driver = asyncio.create_task(caller())
    await asyncio.wait_for(runner.run(), 30)
    await driver
    await session.recorder.flush()
    (greeting,) = stored
    assert greeting.role == "bot" and greeting.interrupted is True
    assert greeting.text and persona.greeting.startswith(greeting.text.rstrip(".!?")[:10])
