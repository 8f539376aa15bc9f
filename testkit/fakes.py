"""Fakes of STT, LLM, TTS and a transport with scripted timings (LiveKit Agents' approach).

They let the real orchestration (aggregators, turn strategies, interruption, output pacing)
run deterministically and fast, without models.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from transports.file import FileOutputTransport


class FakeLLM(FrameProcessor):
    """Streams ``reply`` word by word for every context it receives."""

    def __init__(self, reply: str, token_delay: float = 0.005, **kw: Any):
        super().__init__(**kw)
        self.reply, self.token_delay = reply, token_delay
        self.requests: list[list] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Answer each ``LLMContextFrame`` between start/end frames; pass every other frame on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.requests.append(list(frame.context.get_messages()))
            await self.push_frame(LLMFullResponseStartFrame())
            for tok in re.findall(r"\S+\s*", self.reply):
                await asyncio.sleep(self.token_delay)
                await self.push_frame(LLMTextFrame(tok))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class FakeTTS(TTSService):
    """Yields ``chunks`` chunks of 20 ms silence-free audio per sentence."""

    def __init__(
        self, chunks: int = 5, chunk_delay: float = 0.0, sample_rate: int = 16000, **kw: Any
    ):
        kw.setdefault("stop_frame_timeout_s", 0.3)
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=sample_rate,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kw,
        )
        self.spoken: list[str] = []
        self.chunks, self.chunk_delay = chunks, chunk_delay

    def can_generate_metrics(self) -> bool:
        """Yes: the fake reports TTFB and TTS usage (characters)."""
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Yield ``chunks`` 20 ms mono 16-bit chunks (every sample 16), ``chunk_delay`` s apart."""
        self.spoken.append(text)
        await self.start_tts_usage_metrics(text)
        n = self.sample_rate // 50
        for _ in range(self.chunks):
            await asyncio.sleep(self.chunk_delay)
            await self.stop_ttfb_metrics()
            yield TTSAudioRawFrame(b"\x10\x00" * n, self.sample_rate, 1, context_id=context_id)


class IdleInputTransport(BaseInputTransport):
    """An input that produces nothing by itself; tests inject frames with queue_frames."""

    def __init__(self, **kw):
        super().__init__(TransportParams(audio_in_enabled=False), **kw)

    async def start(self, frame: StartFrame) -> None:
        """Start and report the transport ready at once (there is no device to open)."""
        await super().start(frame)
        await self.set_transport_ready(frame)


class RecordingOutputTransport(FileOutputTransport):
    """The real-time file output, also noting when each chunk finished playing."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.writes: list[tuple[float, int]] = []

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Play the chunk in real time, then append ``(time.monotonic(), bytes)`` to ``writes``."""
        ok = await super().write_audio_frame(frame)
        self.writes.append((time.monotonic(), len(frame.audio)))
        return ok


class ScriptedTransport(BaseTransport):
    """``IdleInputTransport`` in; ``output`` (default ``RecordingOutputTransport``) out."""

    def __init__(self, output: BaseOutputTransport | None = None):
        super().__init__(name="ScriptedTransport")
        self._in = IdleInputTransport()
        self._out = output or RecordingOutputTransport()

    def input(self) -> IdleInputTransport:
        """The idle input; tests queue frames into the pipeline instead."""
        return self._in

    def output(self):
        """The output transport given at construction (a ``RecordingOutputTransport`` if none)."""
        return self._out


def user_says(text: str) -> list[Frame]:
    """The frames a learner's finished utterance sends down the pipeline.

    VAD start, a final transcript of ``text``, VAD stop (0.2 s each, Silero's defaults).
    """
    return [
        VADUserStartedSpeakingFrame(start_secs=0.2),
        TranscriptionFrame(text=text, user_id="learner", timestamp="", finalized=True),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
    ]
