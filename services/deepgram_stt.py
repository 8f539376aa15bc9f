"""Deepgram streaming STT that sends the learner's audio in 100 ms messages, not 20 ms ones.

Pipecat's ``DeepgramSTTService`` sends every input chunk as its own websocket message: 50
messages a second from a 20 ms transport (WebRTC, Twilio, Telnyx), each a frame to build and
a socket write. In the capacity benchmark that was the largest share of a session's CPU
after Silero VAD. Deepgram recommends sending 20 to 250 ms of audio at once
(https://github.com/orgs/deepgram/discussions/224); 100 ms makes it 10 messages a second.

What it costs: interim transcripts start up to 100 ms later. Nothing waits on them but the
min-words barge-in while the bot speaks, and Deepgram's own interim cadence is coarser. The
final transcript of a turn is not delayed: the held audio is sent before Deepgram's
``Finalize``, which Pipecat sends when the VAD stops (``stop_secs`` after the last word), and
before ``CloseStream`` when the session ends.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from pipecat.frames.frames import EndFrame, Frame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.deepgram.stt import DeepgramSTTService

SEND_MS = 100
"""Audio (ms) per websocket message; within Deepgram's recommended 20-250 ms."""


class BatchedDeepgramSTTService(DeepgramSTTService):
    """Pipecat's ``DeepgramSTTService``, holding audio until ``send_ms`` of it is there.

    Args:
        send_ms: Audio per message in ms (16-bit mono at the service's sample rate:
            100 ms is 3200 bytes at 16 kHz, 1600 at 8 kHz).
        **kwargs: ``DeepgramSTTService``'s arguments.
    """

    def __init__(self, *, send_ms: int = SEND_MS, **kwargs: Any):
        super().__init__(**kwargs)
        self._send_ms = send_ms
        self._held = bytearray()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Hold ``audio`` (16-bit mono PCM); send what is held once it reaches ``send_ms``."""
        self._held += audio
        if len(self._held) * 1000 >= self._send_ms * self.sample_rate * 2:
            async for frame in self._send_held():
                yield frame
        else:
            yield None

    async def _send_held(self) -> AsyncGenerator[Frame | None, None]:
        held = bytes(self._held)
        self._held.clear()
        async for frame in super().run_stt(held):
            yield frame

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Send the held audio before Pipecat asks Deepgram to finalize the turn."""
        if isinstance(frame, VADUserStoppedSpeakingFrame) and self._held:
            await self.process_generator(self._send_held())
        await super().process_frame(frame, direction)

    async def stop(self, frame: EndFrame) -> None:
        """Send the held audio, then close the stream as Pipecat does."""
        if self._held:
            async for _ in self._send_held():
                pass
        await super().stop(frame)
