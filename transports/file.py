"""File transport: recorded learner turns in, the bot's speech out, both in real time.

The main job on real input: each learner recording is played into the pipeline as one turn
at real-time pace (20 ms frames, with silence before and after, so Silero VAD and the turn
strategy see what a microphone would give them). The next recording starts only after the
bot has answered the previous one (or a timeout passed). The output side plays the bot's
audio at real-time pace like a speaker, so barge-in and latency behave as in a live call.

A :class:`TypedTurn` is a learner turn typed instead of spoken (no microphone): it enters
the pipeline as the frames a finished utterance produces (speech start, a final transcript,
speech stop), so everything after STT treats it as it treats speech.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

FRAME_MS = 20
"""Duration of one input audio frame in ms."""


@dataclass(frozen=True)
class TypedTurn:
    """A learner turn given as text: it skips STT (``voxtutor session --say``).

    Attributes:
        text: What the learner typed.
    """

    text: str


LearnerTurn = np.ndarray | TypedTurn
"""One learner turn: a recording (``int16`` mono at the input rate) or typed text."""


class AudioFileError(ValueError):
    """A learner recording cannot be used: unreadable, not audio, or empty."""


def load_learner_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """Read a WAV/FLAC/OGG recording as mono 16-bit PCM at ``sample_rate``.

    Any input rate and channel count is accepted: channels are averaged, the rate is
    converted with soxr (high quality).

    Args:
        path: The recording.
        sample_rate: Target rate in Hz.

    Returns:
        ``int16`` samples, shape ``(n,)``.

    Raises:
        AudioFileError: The file is missing, not a readable audio file, or holds less than
            100 ms of audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioFileError(f"{path}: not a readable audio file (WAV, FLAC or OGG): {e}") from e
    if data.shape[0] < rate // 10:
        raise AudioFileError(f"{path}: empty recording ({data.shape[0]} samples)")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return (np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)


@dataclass
class FileTransportParams:
    """Pacing of the learner side.

    Attributes:
        sample_rate: Input rate in Hz.
        lead_in_ms: Silence before each recording, ms.
        settle_ms: The bot's turn counts as finished after it has been silent this long, ms.
        reply_timeout_s: Give up waiting for a reply after this many seconds and go on.
        wait_for_greeting: Play the first recording only after the bot's greeting.
    """

    sample_rate: int = 16000
    lead_in_ms: int = 300
    settle_ms: int = 1500
    reply_timeout_s: float = 90.0
    wait_for_greeting: bool = True


class _BotSpeech:
    """When the bot last started and stopped speaking (monotonic seconds)."""

    def __init__(self) -> None:
        self.speaking = False
        self.started_at = 0.0
        self.stopped_at = 0.0
        self.changed = asyncio.Event()

    def mark(self, speaking: bool) -> None:
        now = time.monotonic()
        self.speaking = speaking
        if speaking:
            self.started_at = now
        else:
            self.stopped_at = now
        self.changed.set()


class FileInputTransport(BaseInputTransport):
    """Plays learner recordings into the pipeline at real-time pace."""

    def __init__(
        self,
        recordings: Sequence[LearnerTurn],
        params: FileTransportParams,
        bot: _BotSpeech,
        done: asyncio.Event,
        **kwargs: object,
    ):
        super().__init__(
            TransportParams(audio_in_enabled=True, audio_in_sample_rate=params.sample_rate),
            **kwargs,
        )
        self._recordings = list(recordings)
        self._pacing = params
        self._bot = bot
        self._done = done
        self._feeder: asyncio.Task[None] | None = None
        self._samples_per_frame = params.sample_rate * FRAME_MS // 1000
        self._silence = bytes(self._samples_per_frame * 2)
        self._t0 = 0.0
        self._frames_sent = 0
        self.turn_offsets_ms: list[int] = []
        """Where each recording started on the session timeline, ms."""

    async def start(self, frame: StartFrame) -> None:
        """Start the transport and the feeder task."""
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._feeder is None:
            self._feeder = self.create_task(self._feed(), name="file-input-feeder")

    async def stop(self, frame: EndFrame) -> None:
        """Stop feeding audio."""
        await self._stop_feeder()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        """Stop feeding audio."""
        await self._stop_feeder()
        await super().cancel(frame)

    async def _stop_feeder(self) -> None:
        if self._feeder is not None:
            await self.cancel_task(self._feeder)
            self._feeder = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Watch the bot speaking state travelling upstream."""
        if direction == FrameDirection.UPSTREAM:
            if isinstance(frame, BotStartedSpeakingFrame):
                self._bot.mark(True)
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._bot.mark(False)
        await super().process_frame(frame, direction)

    async def _send(self, chunk: bytes) -> None:
        self._frames_sent += 1
        due = self._t0 + self._frames_sent * FRAME_MS / 1000
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.push_audio_frame(
            InputAudioRawFrame(audio=chunk, sample_rate=self._pacing.sample_rate, num_channels=1)
        )

    async def _silence_for(self, ms: int) -> None:
        for _ in range(max(1, ms // FRAME_MS)):
            await self._send(self._silence)

    async def _type(self, text: str) -> None:
        """Send a typed turn as a finished utterance: speech start, final transcript, stop."""
        await self.push_frame(VADUserStartedSpeakingFrame(start_secs=0.0))
        await self._silence_for(200)
        await self.push_frame(
            TranscriptionFrame(text=text, user_id="learner", timestamp="", finalized=True)
        )
        await self.push_frame(VADUserStoppedSpeakingFrame(stop_secs=0.0))

    async def _wait_for_reply(self, since: float) -> bool:
        """Send silence until the bot spoke after ``since`` and has been quiet ``settle_ms``."""
        deadline = time.monotonic() + self._pacing.reply_timeout_s
        settle = self._pacing.settle_ms / 1000
        while time.monotonic() < deadline:
            await self._send(self._silence)
            bot = self._bot
            if (
                bot.started_at > since
                and not bot.speaking
                and time.monotonic() - bot.stopped_at >= settle
            ):
                return True
        return False

    async def _feed(self) -> None:
        self._t0 = time.monotonic()
        self._frames_sent = 0
        if self._pacing.wait_for_greeting and not await self._wait_for_reply(self._t0 - 1):
            logger.warning("the bot did not greet within the reply timeout")
        for i, turn in enumerate(self._recordings):
            await self._silence_for(self._pacing.lead_in_ms)
            self.turn_offsets_ms.append(self._frames_sent * FRAME_MS)
            if isinstance(turn, TypedTurn):
                await self._type(turn.text)
            else:
                data = turn.tobytes()
                step = self._samples_per_frame * 2
                for off in range(0, len(data), step):
                    await self._send(data[off : off + step].ljust(step, b"\x00"))
            if not await self._wait_for_reply(time.monotonic()):
                logger.warning(f"no reply to learner turn {i + 1} within the reply timeout")
        self._done.set()
        # Keep the line open (silence) until the session is ended by the caller.
        while True:
            await self._send(self._silence)


class FileOutputTransport(BaseOutputTransport):
    """A real-time "speaker": each audio chunk takes its duration to play."""

    def __init__(self, sample_rate: int | None = None, **kwargs: object):
        super().__init__(
            TransportParams(
                audio_out_enabled=True,
                audio_out_sample_rate=sample_rate,
                audio_out_end_silence_secs=0,
            ),
            **kwargs,
        )
        self._next_due = 0.0
        self.bytes_played = 0

    async def start(self, frame: StartFrame) -> None:
        """Start the transport."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Play one chunk: return once its duration has passed on the wall clock."""
        seconds = len(frame.audio) / 2 / frame.num_channels / frame.sample_rate
        now = time.monotonic()
        self._next_due = max(self._next_due, now) + seconds
        await asyncio.sleep(self._next_due - now)
        self.bytes_played += len(frame.audio)
        return True


class FileTransport(BaseTransport):
    """Learner recordings in, bot speech out; ``done`` is set after the last reply.

    Args:
        recordings: One learner turn each: an ``int16`` mono array at ``params.sample_rate``,
            or a :class:`TypedTurn`.
        params: Pacing.
        output_sample_rate: Output rate in Hz (``None``: the pipeline's).
        output: A speaker to use instead of a plain :class:`FileOutputTransport` (e.g. one
            that meters underruns, ``bench/capacity_session.py``).
    """

    def __init__(
        self,
        recordings: Sequence[LearnerTurn],
        params: FileTransportParams | None = None,
        output_sample_rate: int | None = None,
        output: FileOutputTransport | None = None,
    ):
        super().__init__(name="FileTransport")
        self.params = params or FileTransportParams()
        self.done = asyncio.Event()
        self._bot = _BotSpeech()
        self._input = FileInputTransport(recordings, self.params, self._bot, self.done)
        self._output = output or FileOutputTransport(output_sample_rate)

    def input(self) -> FileInputTransport:
        """The learner side."""
        return self._input

    def output(self) -> FileOutputTransport:
        """The bot side."""
        return self._output
