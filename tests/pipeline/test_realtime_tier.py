"""The realtime tier completes spoken turns against a loopback fake of the OpenAI Realtime API.

The real ``OpenAIRealtimeLLMService`` (via ``services.openai_realtime``) talks to
``testkit/providers/openai_realtime_fake.py``; the learner is a real LibriVox recording played at
real-time pace into a microphone stand-in, and the fake's server VAD takes the turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    MetricsFrame,
    StartFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.workers.runner import WorkerRunner

from config.personas import load_persona
from config.settings import Settings
from pipelines.realtime import (
    RealtimeSessionPipeline,
    build_realtime_session,
    realtime_instructions,
)
from pipelines.tools import ToolCall
from testkit.fakes import RecordingOutputTransport
from testkit.providers.openai_realtime_fake import SAMPLE_RATE, OpenAIRealtimeFake
from transports.file import load_learner_audio

TRANSCRIPT = "Registration, airworthiness certificate and the operating handbook."
REPLY = "Good. What else does ARROW stand for?"
FRAME_BYTES = 2 * SAMPLE_RATE // 50  # 20 ms


class Microphone(BaseInputTransport):
    """Real-time 24 kHz input: 20 ms frames of silence, or of a clip queued with ``say``."""

    def __init__(self) -> None:
        super().__init__(TransportParams(audio_in_enabled=True, audio_in_sample_rate=SAMPLE_RATE))
        self.frames: list[bytes] = []
        self.bot_started: list[float] = []
        self.bot_stopped: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self._task = self.create_task(self._run(), name="microphone")

    async def stop(self, frame: EndFrame) -> None:
        if self._task:
            await self.cancel_task(self._task)
        await super().stop(frame)

    async def cancel(self, frame: Any) -> None:
        if self._task:
            await self.cancel_task(self._task)
        await super().cancel(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, BotStartedSpeakingFrame):
            self.bot_started.append(time.monotonic())
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_stopped.append(time.monotonic())
        await super().process_frame(frame, direction)

    def say(self, pcm: np.ndarray) -> None:
        data = pcm.tobytes()
        self.frames += [
            data[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
            for i in range(0, len(data), FRAME_BYTES)
        ]

    async def _run(self) -> None:
        t0, sent = time.monotonic(), 0
        while True:
            sent += 1
            await asyncio.sleep(max(0.0, t0 + sent * 0.02 - time.monotonic()))
            chunk = self.frames.pop(0) if self.frames else bytes(FRAME_BYTES)
            await self.push_audio_frame(InputAudioRawFrame(chunk, SAMPLE_RATE, 1))


class Mic(BaseTransport):
    def __init__(self) -> None:
        super().__init__(name="Mic")
        self.mic, self.speaker = Microphone(), RecordingOutputTransport()

    def input(self) -> Microphone:
        return self.mic

    def output(self) -> RecordingOutputTransport:
        return self.speaker


class Watch(BaseObserver):
    """Usage metrics and errors pushed by one processor, each frame once."""

    def __init__(self) -> None:
        super().__init__()
        self.source: Any = None
        self.usage: list[Any] = []
        self.errors: list[ErrorFrame] = []
        self._seen: set[int] = set()

    async def on_push_frame(self, data: FramePushed) -> None:
        if data.source is not self.source or data.frame.id in self._seen:
            return
        self._seen.add(data.frame.id)
        if isinstance(data.frame, ErrorFrame):
            self.errors.append(data.frame)
        elif isinstance(data.frame, MetricsFrame):
            usage = [d.value for d in data.frame.data if isinstance(d, LLMUsageMetricsData)]
            self.usage += usage


async def until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(session: RealtimeSessionPipeline) -> AsyncIterator[asyncio.Task[None]]:
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        if not task.done():
            await session.worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(asyncio.shield(task), 20)
        except TimeoutError:
            await session.worker.cancel()
            await task


@pytest.fixture
def clip(librivox: dict[Path, str]) -> np.ndarray:
    path = next(p for p in librivox if "0880" in p.name)  # 3.0 s of speech
    return load_learner_audio(path, SAMPLE_RATE)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAIRealtimeFake]:
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai")
    async with OpenAIRealtimeFake(transcript=TRANSCRIPT, reply=REPLY) as f:
        f.ms_per_char = 20
        yield f


def build(
    persona_id: str, fake: OpenAIRealtimeFake, **kw: Any
) -> tuple[RealtimeSessionPipeline, Watch]:
    watch = Watch()
    session = build_realtime_session(
        load_persona(persona_id),
        transport=Mic(),
        settings=Settings(openai_realtime_url=fake.url),
        observers=[watch],
        **kw,
    )
    watch.source = session.llm
    return session, watch


def speaker(session: RealtimeSessionPipeline) -> RecordingOutputTransport:
    return session.processors[-2]  # type: ignore[return-value]


async def test_examiner_turn_prompt_voice_tools_tool_call_audio_and_usage(
    fake: OpenAIRealtimeFake, clip: np.ndarray
) -> None:
    persona = load_persona("aviation-examiner")
    fake.opening = persona.greeting
    fake.call_tool = (
        "record_acs_result",
        {"area": "I", "task": "Documents", "result": "satisfactory"},
    )
    stored: list[ToolCall] = []

    async def on_tool_call(call: ToolCall) -> None:
        stored.append(call)

    session, watch = build("aviation-examiner", fake, on_tool_call=on_tool_call)
    mic: Microphone = session.processors[0]  # type: ignore[assignment]
    async with running(session):
        await session.greet()
        await until(lambda: len(session.recorder.turns) == 1)
        mic.say(clip)
        await until(lambda: len(session.recorder.turns) == 3)

    conn = fake.connections[0]
    # The connection: the tier's model in the URL, the key as a bearer token.
    assert conn.query == {"model": "gpt-realtime"}
    assert conn.headers["authorization"] == "Bearer test-openai"
    # The session: the persona's instructions, the tier's English voice, the persona's tool.
    assert conn.session["instructions"] == realtime_instructions(persona)
    assert conn.session["audio"]["output"]["voice"] == "marin"
    assert conn.tool_names == ["record_acs_result"]
    assert conn.session["tools"][0]["parameters"]["required"] == ["area", "task", "result"]
    vad = conn.turn_detection() or {}
    assert (vad["type"], vad["silence_duration_ms"]) == ("server_vad", Settings().speech_timeout_ms)
    assert conn.session["audio"]["input"]["transcription"]["language"] == "en"
    assert persona.greeting in conn.items[0]["content"][0]["text"]
    # The turns: the greeting, the learner's words as transcribed, the reply after the tool.
    turns = session.recorder.turns
    assert [(t.role, t.text, t.interrupted) for t in turns] == [
        ("bot", persona.greeting, False),
        ("learner", TRANSCRIPT, False),
        ("bot", REPLY, False),
    ]
    times = [turns[0].end_ms, turns[1].start_ms, turns[1].end_ms, turns[2].start_ms]
    assert all(t is not None for t in times)
    assert times == sorted(t or 0 for t in times) and times[1] != times[2]
    assert conn.audio_seconds > len(clip) / SAMPLE_RATE
    assert stored == session.tool_calls == [ToolCall("record_acs_result", dict(fake.call_tool[1]))]
    outputs = [i for i in conn.items if i.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [(conn.responses[1].call or {})["call_id"]]
    # All bot audio the fake sent was played at 24 kHz (the speaker pads each reply's last
    # chunk to its 40 ms chunk size).
    assert [r.status for r in conn.responses] == ["completed"] * 3
    sent_audio = sum(r.audio_bytes for r in conn.responses)
    assert 0 < sent_audio <= speaker(session).bytes_played < sent_audio + 2 * 2 * SAMPLE_RATE // 25
    # Usage: Pipecat's LLM usage metrics carry each response.done's numbers.
    sent = [r.usage or {} for r in conn.responses]
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in watch.usage] == [
        (u["input_tokens"], u["output_tokens"], u["total_tokens"]) for u in sent
    ]
    assert [(u.input_audio_tokens, u.output_audio_tokens) for u in watch.usage] == [
        (u["input_token_details"]["audio_tokens"], u["output_token_details"]["audio_tokens"])
        for u in sent
    ]
    assert sent[1]["input_token_details"]["audio_tokens"] >= 30  # ≥ 3 s of learner audio
    assert not watch.errors


async def test_barge_in_stops_the_tutor_and_truncates_what_it_had_not_said(
    fake: OpenAIRealtimeFake, clip: np.ndarray
) -> None:
    persona = load_persona("german-tutor")
    fake.opening = persona.greeting
    fake.ms_per_char = 60  # a 4.3 s greeting
    session, watch = build("german-tutor", fake)
    mic: Microphone = session.processors[0]  # type: ignore[assignment]
    async with running(session):
        await session.greet()
        await until(lambda: bool(mic.bot_started))
        await asyncio.sleep(0.5)
        mic.say(clip)
        await until(lambda: len(session.recorder.turns) == 3)

    conn = fake.connections[0]
    assert conn.session["audio"]["output"]["voice"] == "marin"
    assert conn.tool_names == ["note_mistake"]
    greeting, reply = conn.responses
    turns = session.recorder.turns
    assert [(t.role, t.interrupted) for t in turns] == [
        ("bot", True),
        ("learner", False),
        ("bot", False),
    ]
    # The context keeps only the part of the greeting that was played.
    assert persona.greeting.startswith(turns[0].text) and turns[0].text != persona.greeting
    assert (turns[1].text, turns[2].text) == (TRANSCRIPT, REPLY)
    # The service told the server where the learner cut in, on the greeting's item.
    full_ms = 1000 * greeting.audio_bytes // 2 // SAMPLE_RATE
    [truncation] = conn.truncations
    assert truncation["item_id"] == greeting.item_id
    assert 0 < truncation["audio_end_ms"] < full_ms
    # The speaker stopped: far less than the whole greeting was played.
    played_greeting = speaker(session).bytes_played - reply.audio_bytes
    assert played_greeting < 0.8 * greeting.audio_bytes
    assert not watch.errors


async def test_tutor_greets_and_says_goodbye_in_the_model_voice(fake: OpenAIRealtimeFake) -> None:
    persona = load_persona("czech-tutor")
    fake.opening = persona.greeting
    session, watch = build("czech-tutor", fake)
    async with running(session):
        await session.greet()
        await until(lambda: len(session.recorder.turns) == 1)
        fake.opening = persona.farewell_text
        await session.say(persona.farewell_text)
        await until(lambda: len(session.recorder.turns) == 2)

    conn = fake.connections[0]
    assert conn.session["audio"]["input"]["transcription"]["language"] == "cs"
    asked = [item["content"][0]["text"] for item in conn.items]
    assert len(asked) == 2
    assert persona.greeting in asked[0] and persona.farewell_text in asked[1]
    assert [(t.role, t.text) for t in session.recorder.turns] == [
        ("bot", persona.greeting),
        ("bot", persona.farewell_text),
    ]
    assert conn.client_events.count("response.create") == 2 and not watch.errors


@pytest.mark.parametrize(
    ("fault", "after", "expected"),
    [
        ("http_5xx", 0, "HTTP 503"),
        ("http_429", 0, "HTTP 429"),
        ("hang", 0, "no session.updated within 1 s"),
        ("disconnect", 1, "received 1011"),
        ("garbage", 1, "502 Bad Gateway"),
        ("provider_error", 1, "server_error"),
    ],
)
async def test_provider_fault_ends_the_session_with_an_error(
    fake: OpenAIRealtimeFake, fault: str, after: int, expected: str
) -> None:
    fake.hang_s = 5
    fake.inject("realtime", fault, after=after)
    session, watch = build("czech-tutor", fake, ready_timeout_s=1.0)
    async with running(session) as task:
        await session.greet()
        await asyncio.wait_for(asyncio.shield(task), 20)  # ends by itself

    assert task.exception() is None
    assert any(expected in e.error for e in watch.errors)
    assert session.llm is not None and not session.llm.is_usable
    # The cause (after a drop, a send may race the receive task to report it) and "the session
    # cannot go on": no error per audio frame.
    assert 1 <= len(watch.errors) <= 3
    # Mid-stream faults strike after one audio delta: at most that much was played.
    assert speaker(session).bytes_played <= after * SAMPLE_RATE * 2 * fake.chunk_ms // 1000
    assert not [t for t in session.recorder.turns if t.role == "learner"]
