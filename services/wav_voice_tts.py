"""A TTS service for local programs that write a whole WAV per sentence (SVOX Pico, Festival).

SVOX Pico and Festival synthesise a sentence into a WAV file far faster than it is spoken
(real-time factor about 0.01 on 2 cores, measured in ``bench.voices``), so waiting for the
whole file costs the first word only tens of ms. This base class does the Pipecat part once:
it asks the subclass for the WAV, resamples it to the pipeline's output rate with soxr and
pushes it in ``chunk_ms`` frames, so that an interruption (barge-in) stops the voice within
one chunk. A failing program becomes an ``ErrorFrame`` (a failover group then moves on to its
next link); the session carries on.
"""

from __future__ import annotations

import contextlib
import io
import wave
from abc import abstractmethod
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

DEFAULT_CHUNK_MS = 40


class VoiceSynthesisError(RuntimeError):
    """The speech program failed or wrote something that is not 16-bit mono PCM WAV."""


def wav_pcm(data: bytes) -> tuple[np.ndarray, int]:
    """Read a 16-bit mono PCM WAV.

    Args:
        data: The whole file.

    Returns:
        ``(samples, sample_rate_hz)``: int16 samples, shape ``(n,)``.

    Raises:
        VoiceSynthesisError: If it is not a 16-bit mono PCM WAV.
    """
    try:
        with wave.open(io.BytesIO(data)) as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise VoiceSynthesisError(
                    f"WAV is not 16-bit mono ({w.getnchannels()} channels, "
                    f"{8 * w.getsampwidth()} bits)"
                )
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()
    except (wave.Error, EOFError) as e:
        raise VoiceSynthesisError(f"not a PCM WAV ({len(data)} bytes): {e}") from e


def pcm_chunks(data: bytes, sample_rate: int, chunk_ms: int) -> Iterator[bytes]:
    """Resample a WAV to ``sample_rate`` Hz and cut it into chunks.

    Args:
        data: A 16-bit mono PCM WAV file.
        sample_rate: Output rate, in Hz.
        chunk_ms: Duration of each chunk, in ms (the last may be shorter).

    Yields:
        16-bit mono little-endian PCM chunks.

    Raises:
        VoiceSynthesisError: If ``data`` is not a 16-bit mono PCM WAV.
    """
    samples, rate = wav_pcm(data)
    if rate != sample_rate and samples.size:
        samples = soxr.resample(samples, rate, sample_rate, quality="HQ")
    pcm = samples.astype("<i2").tobytes()
    step = max(1, sample_rate * chunk_ms // 1000) * 2
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]


class WavVoiceTTSService(TTSService):
    """Base of the local voices that synthesise a sentence to a WAV file, then stream it.

    Subclasses implement :meth:`synthesize_wav`. Frames are 16-bit mono PCM at the
    pipeline's output sample rate, ``chunk_ms`` long.
    """

    engine = "voice"
    """Name used in log lines and error frames."""

    def __init__(self, *, voice: str, chunk_ms: int = DEFAULT_CHUNK_MS, **kwargs: Any):
        """Initialise the service.

        Args:
            voice: The program's voice name.
            chunk_ms: Duration of each audio frame pushed, in ms.
            **kwargs: Passed to :class:`TTSService` (``sample_rate`` in Hz, ...).

        Raises:
            ValueError: If ``chunk_ms`` is not positive.
        """
        if chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be > 0 ms, got {chunk_ms}")
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=voice, language=None),
            **kwargs,
        )
        self._chunk_ms = chunk_ms

    @property
    def voice(self) -> str:
        """The voice speaking the next sentence."""
        voice = self._settings.voice
        assert isinstance(voice, str)
        return voice

    def can_generate_metrics(self) -> bool:
        """Return True: this service generates TTFB, processing and usage metrics."""
        return True

    @abstractmethod
    async def synthesize_wav(self, text: str) -> bytes:
        """Synthesise one sentence.

        Returns:
            A 16-bit mono PCM WAV file.

        Raises:
            VoiceSynthesisError: If the program fails.
            OSError: If the program cannot be run.
        """

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Speak ``text``.

        Yields:
            ``TTSAudioRawFrame`` chunks at the pipeline's output rate, or one ``ErrorFrame``
            if the program fails.
        """
        if not text.strip():
            return
        await self.start_tts_usage_metrics(text)
        try:
            data = await self.synthesize_wav(text)
            chunks = list(pcm_chunks(data, self.sample_rate, self._chunk_ms))
        except (VoiceSynthesisError, OSError, ValueError) as e:
            logger.error(f"{self}: {e}")
            await self.cancel_ttfb_metrics()
            yield ErrorFrame(error=f"{self.engine} TTS failed: {e}", exception=e)
            return
        await self.stop_ttfb_metrics()
        for pcm in chunks:
            yield TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=context_id)

    async def tts_process_generator(
        self, context_id: str, generator: AsyncGenerator[Frame | None, None]
    ) -> None:
        """Route ``run_tts`` frames to the audio context, closing the generator on exit."""
        async with contextlib.aclosing(generator) as frames:
            await super().tts_process_generator(context_id, frames)
