"""Run the real session pipeline (``build_session``) with failover groups and watch the output.

``run_session`` builds a session around the given STT/LLM/TTS processors, plays a script of
frames and pauses, and returns what reached the speaker: sentences (``TTSTextFrame``), audio
chunks by the marker of the fake that made them, the RTVI notices, the ``on_switch`` calls
and the ``session_events`` rows they were stored as (SQLite store).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame
from pipecat.workers.runner import WorkerRunner

from config.personas import load_persona
from config.settings import Settings
from contracts.events import PROVIDER_SWITCH
from pipelines.session import SessionPipeline, build_session
from processors.failover.groups import FailoverPolicy
from processors.failover.llm import CONTINUE_PROMPT
from store import Store
from store.events import SessionEventInfo
from testkit.fakes import IdleInputTransport, ScriptedTransport

REPLY = (
    "Check the METAR before you go. Then tune the VOR to one one four point five. "
    "Call the tower when ready."
)
SENTENCES = [
    "Check the METAR before you go.",
    "Then tune the VOR to one one four point five.",
    "Call the tower when ready.",
]
POLICY = replace(FailoverPolicy().scaled(0.1), max_chars_per_audio_s=250.0)
"""The default :class:`FailoverPolicy` at a tenth (TTFB 0.5 s, cap 2 s, backoff 0.1/0.2/0.4 s,
cool-down 6 s); the fakes speak 8 ms per character, so a whole sentence needs 250 characters/s."""


def message_text(content: Any) -> str:
    """The text of a chat message's ``content`` (a string, or a list of text parts)."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def reply(body: dict[str, Any]) -> str:
    """The LLM fakes' reply: REPLY, or the rest of it when a backup is asked to continue."""
    messages = body["messages"]
    if message_text(messages[-1]["content"]) == CONTINUE_PROMPT:
        partial = message_text(messages[-2]["content"])
        return REPLY[len(partial) :] if REPLY.startswith(partial) else REPLY
    return REPLY


def user_says(text: str) -> list[Frame]:
    """One learner turn: VAD start (0.2 s), the final transcript ``text``, VAD stop (0.2 s)."""
    return [
        VADUserStartedSpeakingFrame(start_secs=0.2),
        TranscriptionFrame(text=text, user_id="learner", timestamp="", finalized=True),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
    ]


class AudioInput(IdleInputTransport):
    """Input audio queued by the test goes straight on, in order with the VAD frames around it.

    A real input transport queues it behind its own audio task.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Push input audio on at once; hand every other frame to the idle transport."""
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)
        else:
            await super().process_frame(frame, direction)


class OutputWatch(BaseObserver):
    """What reaches the output transport, once per frame, in order."""

    def __init__(self, output: FrameProcessor) -> None:
        super().__init__()
        self.output = output
        self.seen: set[int] = set()
        self.timeline: list[tuple[str, Any]] = []
        self.notices: list[dict] = []
        self.rtvi: list[dict] = []
        self.audio_bytes = 0
        self._notice_ids: set[int] = set()

    async def on_push_frame(self, data: FramePushed) -> None:
        """Record provider-switch notices anywhere, and sentences, audio, RTVI at the output."""
        frame = data.frame
        if isinstance(frame, RTVIServerMessageFrame) and frame.id not in self._notice_ids:
            self._notice_ids.add(frame.id)
            if isinstance(frame.data, dict) and frame.data.get("type") == "provider-switch":
                self.notices.append(frame.data)
        if data.destination is not self.output or frame.id in self.seen:
            return
        if isinstance(frame, OutputTransportMessageUrgentFrame | OutputTransportMessageFrame):
            if isinstance(frame.message, dict):
                self.rtvi.append(frame.message)
        self.seen.add(frame.id)
        if isinstance(frame, TTSTextFrame):
            self.timeline.append(("text", frame.text))
        elif isinstance(frame, TTSAudioRawFrame) and frame.audio:
            self.audio_bytes += len(frame.audio)
            self.timeline.append(("audio", int.from_bytes(frame.audio[:2], "little", signed=True)))

    @property
    def sentences(self) -> list[str]:
        """The ``TTSTextFrame`` texts that reached the output, in order."""
        return [v for k, v in self.timeline if k == "text"]

    def bot_output(self) -> list[str]:
        """Sentences sent as RTVI ``bot-output`` marked spoken (what web/app.js shows)."""
        return [
            m["data"]["text"]
            for m in self.rtvi
            if m.get("type") == "bot-output" and m["data"].get("spoken")
        ]

    def audio_before(self) -> dict[str, Counter]:
        """Per sentence: chunks by marker between the previous sentence's text and its own."""
        out: dict[str, Counter] = {}
        chunks: Counter = Counter()
        for kind, value in self.timeline:
            if kind == "audio":
                chunks[value] += 1
            else:
                out[value] = chunks
                chunks = Counter()
        return out


@dataclass
class Run:
    """What :func:`run_session` saw: the session, its output, the switches and stored events.

    Attributes:
        session: The session pipeline that ran.
        watch: What reached the output transport.
        switches: Each ``on_switch`` call as ``(role, old, new, reason)``.
        events: The ``session_events`` rows the switches were stored as.
    """

    session: SessionPipeline
    watch: OutputWatch
    switches: list[tuple[str, str, str, str]] = field(default_factory=list)
    events: list[SessionEventInfo] = field(default_factory=list)

    def assistant(self) -> list[str]:
        """The assistant messages in the context, after the persona's system prompt and examples."""
        msgs = self.session.context.get_messages()
        skip = 1 + 2 * len(self.session.persona.examples)
        return [
            str(m["content"])  # type: ignore[index]
            for m in msgs[skip:]
            if m["role"] == "assistant"  # type: ignore[index]
        ]


async def run_session(
    tmp_path: Path,
    script: Sequence[Any],
    *,
    stt: Sequence[FrameProcessor] | FrameProcessor | None = None,
    llm: Sequence[FrameProcessor] | FrameProcessor,
    tts: Sequence[FrameProcessor] | FrameProcessor,
    groups: Sequence[Any] = (),
    limit_s: float = 30.0,
) -> Run:
    """Build and run a session; ``groups`` are the failover groups whose switches to store."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    key, _ = await store.create_api_key("k")
    learner = await store.create_learner(key.id, "Eva", "cs")
    row, _ = await store.create_session(learner.id, key.id, "czech-tutor", "dpe_live", "test")
    transport = ScriptedTransport()
    transport._in = AudioInput()
    watch = OutputWatch(transport.output())
    settings = Settings(home=tmp_path, speech_timeout_ms=100, min_words_to_interrupt=3)
    session = build_session(
        load_persona("czech-tutor"),
        stt=stt if stt is not None else IdentityFilter(),
        llm=llm,
        tts=tts,
        transport=transport,
        settings=settings,
        observers=[watch],
        audio_out_sample_rate=16000,
    )
    run = Run(session, watch)

    async def on_switch(role: str, old: str, new: str, reason: str) -> None:
        run.switches.append((role, old, new, reason))
        data = {"role": role, "from": old, "to": new, "reason": reason}
        await store.add_session_event(row.id, PROVIDER_SWITCH, data)

    for group in groups:
        group.on_switch = on_switch
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)

    async def drive() -> None:
        await asyncio.sleep(0.3)
        for step in script:
            if isinstance(step, int | float):
                await asyncio.sleep(step)
            else:
                await session.worker.queue_frames(list(step))
        await session.worker.queue_frame(EndFrame())

    driver = asyncio.create_task(drive())
    try:
        await asyncio.wait_for(runner.run(), limit_s)
        await driver
        run.events = await store.list_session_events(row.id)
    finally:
        await store.close()
    return run
