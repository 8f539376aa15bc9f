"""Fakes of STT, LLM, TTS and a transport with scripted timings (LiveKit Agents' approach).

They let the real orchestration (aggregators, turn strategies, interruption, output pacing)
run deterministically and fast, without models.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
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

    def __init__(self, reply: str, token_delay: float = 0.005, **kw):
        super().__init__(**kw)
        self.reply, self.token_delay = reply, token_delay
        self.requests: list[list] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
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

    def __init__(self, chunks: int = 5, chunk_delay: float = 0.0, sample_rate=16000, **kw):
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
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
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

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)


class RecordingOutputTransport(FileOutputTransport):
    """The real-time file output, also noting when each chunk finished playing."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.writes: list[tuple[float, int]] = []

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
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
        return self._in

    def output(self):
        return self._out
