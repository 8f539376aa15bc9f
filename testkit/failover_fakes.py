"""In-process fakes that fail on cue, for the failover tests and benchmark.

Each fake takes ``inject(fault, after=k)``: the next request fails ``after`` chunks (TTS audio
chunks, LLM tokens, STT audio frames) into its output. Faults mirror what Pipecat 1.14 services
do with the real provider errors (see tests/services/test_fakes_*.py): an ``ErrorFrame`` categorized
SERVER (5xx) or RATE_LIMIT (429), an exception from a dropped connection (CONNECTIVITY), an
uncategorized "Expecting value" error (garbage payload), a request that never answers (hang),
and, for TTS, a sentence whose audio just stops (a websocket TTS that drops mid-sentence and
reconnects without a word, as Cartesia does).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from enum import StrEnum
from typing import Any

from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.errors import ErrorCategory

from processors.failover.llm import CONTINUE_PROMPT

RATE = 16000
CHUNK_SAMPLES = RATE // 50  # 20 ms


class ServiceFault(StrEnum):
    """How an injected request fails; see the module docstring for what each one pushes."""

    SERVER = "server_error"  # 5xx after the SDK's retries
    RATE_LIMIT = "rate_limit"  # 429
    HANG = "hang"  # no answer at all
    DISCONNECT = "disconnect"  # connection dropped mid-stream (an exception)
    GARBAGE = "malformed"  # a payload that is not the provider's format
    CUT = "cut"  # TTS only: audio stops mid-sentence, no error at all


FAULT_ERRORS = {
    ServiceFault.DISCONNECT: ("Connection reset by peer", ErrorCategory.CONNECTIVITY),
    ServiceFault.SERVER: ("HTTP 503 Service Unavailable", ErrorCategory.SERVER),
    ServiceFault.RATE_LIMIT: ("Error code: 429 - rate limited", ErrorCategory.RATE_LIMIT),
    ServiceFault.GARBAGE: ("Expecting value: line 1 column 1 (char 0)", ErrorCategory.UNKNOWN),
}


class _Faults:
    def __init__(self) -> None:
        self.queue: deque[tuple[ServiceFault | None, int]] = deque()

    def inject(self, fault: ServiceFault, after: int = 0, times: int = 1, skip: int = 0) -> None:
        """The request after ``skip`` good ones fails ``after`` chunks in, ``times`` in a row."""
        self.queue.extend([(None, 0)] * skip + [(fault, after)] * times)

    def take(self) -> tuple[ServiceFault | None, int]:
        return self.queue.popleft() if self.queue else (None, 0)


async def _strike(processor: FrameProcessor, fault: ServiceFault) -> bool:
    """Act out ``fault``; True if the request then ends (False: it carries on)."""
    if fault is ServiceFault.HANG:
        await asyncio.sleep(3600)
    if fault is ServiceFault.CUT:
        return True
    error, category = FAULT_ERRORS[fault]
    await processor.push_error(error, category=category)
    return True


class ScriptedTTS(TTSService):
    """An HTTP-style TTS: ``ms_per_char`` ms of audio per character, in 20 ms chunks.

    Every sample of its audio is ``marker``, so a test can tell which fake spoke what.
    """

    def __init__(self, marker: int, ms_per_char: float = 8.0, chunk_delay: float = 0.0, **kw: Any):
        kw.setdefault("stop_frame_timeout_s", 0.3)
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=RATE,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kw,
        )
        self.marker, self.ms_per_char, self.chunk_delay = marker, ms_per_char, chunk_delay
        self.faults = _Faults()
        self.requests: list[str] = []
        self.request_at: list[float] = []  # time.monotonic() of each request
        self.struck_at: float | None = None  # when the last injected fault struck

    def inject(self, fault: ServiceFault, after: int = 0, times: int = 1, skip: int = 0) -> None:
        """The request after ``skip`` good ones fails ``after`` chunks in, ``times`` in a row."""
        self.faults.inject(fault, after, times, skip)

    def can_generate_metrics(self) -> bool:
        """Yes: the fake reports TTFB (stopped at its first audio chunk)."""
        return True

    def chunks_for(self, text: str) -> int:
        """How many 20 ms audio chunks ``text`` is spoken in (at least one)."""
        return max(1, round(len(text) * self.ms_per_char / 20))

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Speak ``text`` as 16 kHz mono chunks of ``marker`` samples, or act out the next fault.

        ``DISCONNECT`` raises :class:`ConnectionError`; ``HANG`` sleeps an hour; ``CUT`` just
        stops; the other faults yield an ``ErrorFrame`` and stop.
        """
        self.requests.append(text)
        self.request_at.append(time.monotonic())
        fault, after = self.faults.take()
        chunk = self.marker.to_bytes(2, "little", signed=True) * CHUNK_SAMPLES
        for i in range(self.chunks_for(text)):
            if fault is not None and i == after:
                self.struck_at = time.monotonic()
                if fault is ServiceFault.HANG:
                    await asyncio.sleep(3600)
                if fault is ServiceFault.DISCONNECT:
                    raise ConnectionError("Connection reset by peer")
                if fault is not ServiceFault.CUT:
                    error, category = FAULT_ERRORS[fault]
                    yield ErrorFrame(error, category=category)
                return
            await asyncio.sleep(self.chunk_delay)
            await self.stop_ttfb_metrics()
            yield TTSAudioRawFrame(chunk, RATE, 1, context_id=context_id)


Reply = str | Callable[[list], str]


class ScriptedLLM(FrameProcessor):
    """Streams a reply word by word per ``LLMContextFrame``, as Pipecat's LLM services push it.

    ``reply`` may depend on the messages. Asked to continue (the failover continuation
    prompt), it says the rest of ``reply`` after the partial reply it is shown.
    """

    def __init__(self, reply: Reply, token_delay: float = 0.005, **kw: Any):
        super().__init__(**kw)
        self.reply, self.token_delay = reply, token_delay
        self.faults = _Faults()
        self.requests: list[list] = []
        self.request_at: list[float] = []
        self.struck_at: float | None = None

    def inject(self, fault: ServiceFault, after: int = 0, times: int = 1, skip: int = 0) -> None:
        """The request after ``skip`` good ones fails ``after`` tokens in, ``times`` in a row."""
        self.faults.inject(fault, after, times, skip)

    def _sync_registered_tool_handlers(self, tools: Any) -> None:
        """LLMSwitcher syncs tools on its LLMs; this fake has none."""

    def answer(self, messages: list) -> str:
        """The reply to ``messages``; after the continuation prompt, only the part not yet said."""
        if messages and messages[-1].get("content") == CONTINUE_PROMPT:
            partial = messages[-2]["content"]
            whole = self.answer(messages[:-2])
            return whole[len(partial) :] if whole.startswith(partial) else whole
        return self.reply(messages) if callable(self.reply) else self.reply

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Answer each ``LLMContextFrame`` between start/end frames; pass every other frame on."""
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        messages = list(frame.context.get_messages())
        self.requests.append(messages)
        self.request_at.append(time.monotonic())
        fault, after = self.faults.take()
        await self.push_frame(LLMFullResponseStartFrame())
        try:
            for i, token in enumerate(re.findall(r"\s*\S+", self.answer(messages))):
                if fault is not None and i == after:
                    self.struck_at = time.monotonic()
                    if await _strike(self, fault):
                        return
                await asyncio.sleep(self.token_delay)
                await self.push_frame(LLMTextFrame(token))
        finally:
            await self.push_frame(LLMFullResponseEndFrame())


class ScriptedSTT(FrameProcessor):
    """A segmented STT: on each end of speech it transcribes the audio heard since its start.

    The transcript says how many 20 ms frames it heard and the first and last of their
    markers (a test numbers its audio frames through their first sample), so a test can tell
    whether the whole utterance reached the provider that answered.
    """

    def __init__(self, name: str, delay: float = 0.01, **kw: Any):
        super().__init__(name=name, **kw)
        self.delay = delay
        self.faults = _Faults()
        self.heard: list[int] = []
        self.transcripts: list[str] = []
        self._speaking = False
        self._fault: ServiceFault | None = None
        self._after = 0

    def inject(self, fault: ServiceFault, after: int = 0, times: int = 1, skip: int = 0) -> None:
        """The utterance after ``skip`` good ones fails (``DISCONNECT``: ``after`` frames in)."""
        self.faults.inject(fault, after, times, skip)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Collect audio between the VAD start and stop frames, transcribe it; pass all on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame) and not self._speaking:
            self._speaking, self.heard = True, []
            self._fault, self._after = self.faults.take()
        elif isinstance(frame, InputAudioRawFrame) and self._speaking:
            self.heard.append(int.from_bytes(frame.audio[:2], "little", signed=True))
            if self._fault is ServiceFault.DISCONNECT and len(self.heard) == self._after:
                self._fault = ServiceFault.HANG  # the connection is gone: nothing more comes back
                error, category = FAULT_ERRORS[ServiceFault.DISCONNECT]
                await self.push_error(error, category=category)
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._speaking:
            self._speaking = False
            await self._transcribe(list(self.heard))
        await self.push_frame(frame, direction)

    async def _transcribe(self, heard: list[int]) -> None:
        fault = self._fault
        if fault is ServiceFault.HANG:
            return  # never answers
        if fault is not None and fault is not ServiceFault.DISCONNECT:
            error, category = FAULT_ERRORS[fault]
            await self.push_error(error, category=category)
            return
        await asyncio.sleep(self.delay)
        span = f"{heard[0]}-{heard[-1]}" if heard else "none"
        text = f"{self.name} heard {len(heard)} frames {span}"
        self.transcripts.append(text)
        await self.push_frame(TranscriptionFrame(text, "learner", "", finalized=True))


def numbered_audio(first: int, count: int) -> list[InputAudioRawFrame]:
    """``count`` 20 ms frames whose samples are ``first``, ``first+1``, ... (frame numbers)."""
    return [
        InputAudioRawFrame((first + i).to_bytes(2, "little", signed=True) * CHUNK_SAMPLES, RATE, 1)
        for i in range(count)
    ]
