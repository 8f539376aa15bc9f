"""espeak-ng text-to-speech for the local tier: German and Czech, fully offline.

German and Czech have no packaged neural voice, so the local tier speaks them with
`espeak-ng <https://github.com/espeak-ng/espeak-ng>`_ (Debian package ``espeak-ng``), one
process per utterance whose audio is pushed in 40 ms frames as it is written (see
:mod:`services.espeak_process`). An interrupted utterance has its process killed and reaped
before its generator finishes closing, so no ``espeak-ng`` outlives the speech it was making.

Example::

    tts = EspeakTTSService(
        settings=EspeakTTSService.Settings(voice="de", rate_wpm=140),
    )
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import ServiceSettings, TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven, is_given

from services.espeak_process import (
    ESPEAK_EXECUTABLE,
    EspeakSynthesisError,
    acheck_voice,
    check_voice,
    find_espeak,
    reap,
    stream_pcm,
)

LANGUAGE_TO_VOICE: dict[str, str] = {"de": "de", "cs": "cs", "en": "en-us"}
"""espeak-ng voice for each persona language code (ISO 639-1)."""

DEFAULT_VOICE = "en-us"
DEFAULT_RATE_WPM = 150  # slower than espeak-ng's own 175 wpm, for learners
DEFAULT_PITCH = 50  # espeak-ng's own default
DEFAULT_WORD_GAP_MS = 0
DEFAULT_CHUNK_MS = 40
MIN_RATE_WPM = 80  # the range espeak-ng supports
MAX_RATE_WPM = 450


def espeak_voice_for_language(language: Language | str) -> str:
    """Return the espeak-ng voice that speaks a language.

    Persona codes map through :data:`LANGUAGE_TO_VOICE`. Regional German and Czech codes
    (``"de-AT"``, ``"cs-CZ"``) map to the one German or Czech voice espeak-ng has; any other
    code is passed on lower-cased, since espeak-ng names its voices by language code
    (``"en-gb"``).

    Args:
        language: A language code or Pipecat ``Language``.

    Returns:
        The espeak-ng voice name.

    Raises:
        ValueError: If ``language`` is empty.
    """
    code = str(language).strip().lower().replace("_", "-")
    if not code:
        raise ValueError("empty language code")
    if code in LANGUAGE_TO_VOICE:
        return LANGUAGE_TO_VOICE[code]
    base = code.split("-", 1)[0]
    if base != "en" and base in LANGUAGE_TO_VOICE:
        return LANGUAGE_TO_VOICE[base]
    return code


def _options(settings: EspeakTTSSettings) -> tuple[int, int, int]:
    """Return ``(rate_wpm, pitch, word_gap_ms)`` of settings that have all three."""
    rate_wpm, pitch, word_gap_ms = settings.rate_wpm, settings.pitch, settings.word_gap_ms
    assert is_given(rate_wpm) and is_given(pitch) and is_given(word_gap_ms)
    return rate_wpm, pitch, word_gap_ms


def _check_options(rate_wpm: int, pitch: int, word_gap_ms: int) -> None:
    if not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
        raise ValueError(
            f"rate_wpm must be {MIN_RATE_WPM}-{MAX_RATE_WPM} words per minute, got {rate_wpm}"
        )
    if not 0 <= pitch <= 99:
        raise ValueError(f"pitch must be 0-99, got {pitch}")
    if word_gap_ms < 0:
        raise ValueError(f"word_gap_ms must be >= 0 ms, got {word_gap_ms}")


@dataclass
class EspeakTTSSettings(TTSSettings):
    """Runtime-updatable settings for :class:`EspeakTTSService`.

    Parameters:
        voice: espeak-ng voice (``"de"``, ``"cs"``, ``"en-us"``, variants like ``"de+m3"``).
            Defaults to the voice of ``language`` (see :func:`espeak_voice_for_language`),
            else ``"en-us"``.
        language: Language spoken; picks the voice when no voice is given, and the sentence
            splitter's language.
        rate_wpm: Speaking rate in wpm, 80-450 (default 150).
        pitch: Pitch, 0-99 (default 50).
        word_gap_ms: Extra pause between words in ms, in steps of 10 ms (default 0).
    """

    rate_wpm: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    pitch: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    word_gap_ms: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class EspeakTTSService(TTSService):
    """Local text-to-speech with espeak-ng, one subprocess per utterance.

    Frames are 16-bit mono PCM at the pipeline's output sample rate. A failing espeak-ng
    yields an ``ErrorFrame`` carrying its stderr; the pipeline carries on.

    Settings updates apply from the next utterance; a new language without a new voice
    switches to the language's voice. An update naming a voice espeak-ng lacks, or an
    out-of-range rate, pitch or word gap, is refused with an error and changes nothing.
    """

    Settings = EspeakTTSSettings
    _settings: EspeakTTSSettings

    def __init__(
        self,
        *,
        executable: str = ESPEAK_EXECUTABLE,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        settings: EspeakTTSSettings | None = None,
        **kwargs: Any,
    ):
        """Initialize the service and check that espeak-ng has the voice.

        Args:
            executable: espeak-ng program name (looked up on ``PATH``) or path.
            chunk_ms: Duration of each audio frame pushed, in ms.
            settings: Settings delta over the defaults given in :class:`EspeakTTSSettings`.
            **kwargs: Passed to :class:`TTSService` (``sample_rate`` in Hz,
                ``stop_frame_timeout_s``, ...).

        Raises:
            FileNotFoundError: If espeak-ng is not installed.
            ValueError: If espeak-ng has no such voice (the message names it), or a rate,
                pitch, word gap or chunk duration is out of range.
        """
        default_settings = self.Settings(
            model=None,
            voice=None,
            language=None,
            rate_wpm=DEFAULT_RATE_WPM,
            pitch=DEFAULT_PITCH,
            word_gap_ms=DEFAULT_WORD_GAP_MS,
        )
        if settings is not None:
            default_settings.apply_update(settings)
        if not default_settings.voice:
            language = default_settings.language
            default_settings.voice = (
                espeak_voice_for_language(language) if language else DEFAULT_VOICE
            )

        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=default_settings,
            **kwargs,
        )

        if chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be > 0 ms, got {chunk_ms}")
        self._executable = find_espeak(executable)
        self._chunk_ms = chunk_ms
        self._processes: set[asyncio.subprocess.Process] = set()

        _check_options(*_options(self._settings))
        check_voice(self.voice, self._executable)

    @property
    def voice(self) -> str:
        """The espeak-ng voice speaking the next utterance."""
        voice = self._settings.voice
        assert isinstance(voice, str)
        return voice

    def can_generate_metrics(self) -> bool:
        """Return True: this service generates TTFB, processing and usage metrics."""
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        """Return the espeak-ng voice for ``language`` (:func:`espeak_voice_for_language`)."""
        return espeak_voice_for_language(language)

    def command(self) -> list[str]:
        """Return the espeak-ng command line for the current settings, without the text."""
        rate_wpm, pitch, word_gap_ms = _options(self._settings)
        return [
            self._executable,
            "--stdout",
            "--stdin",
            "-b",
            "1",  # the text is UTF-8
            "-v",
            self.voice,
            "-s",
            str(rate_wpm),
            "-p",
            str(pitch),
            "-g",
            str(round(word_gap_ms / 10)),  # espeak-ng counts the word gap in 10 ms units
        ]

    def synthesize(self, text: str, sample_rate: int) -> AsyncGenerator[bytes, None]:
        """Synthesise text with the current settings, as :func:`stream_pcm` does.

        Args:
            text: Text to speak.
            sample_rate: Sample rate of the audio yielded, in Hz.

        Returns:
            A generator of 16-bit mono PCM chunks of ``chunk_ms`` ms; closing it early kills
            and reaps the espeak-ng process.
        """
        return stream_pcm(
            self.command(),
            text,
            sample_rate,
            self._chunk_ms,
            self._processes,
            log_prefix=f"{self}: espeak-ng",
        )

    @traced_tts
    async def _trace_tts_request(
        self, text: str, context_id: str
    ) -> AsyncGenerator[Frame | None, None]:
        """Record the text on the TTS tracing span; yields nothing.

        ``@traced_tts`` wraps an async generator in another that iterates it and never
        closes it, so closing ``run_tts`` would not reach a decorated body, and espeak-ng
        would run on until garbage collection. ``run_tts`` is therefore left undecorated
        and calls this empty decorated generator, which gets the span its text (and the
        class its tracing hooks) all the same.
        """
        return
        yield  # pragma: no cover

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Speak text with espeak-ng.

        Args:
            text: The text to speak.
            context_id: The audio context the frames belong to.

        Yields:
            ``TTSAudioRawFrame`` chunks at the pipeline's output sample rate as espeak-ng
            produces them, or an ``ErrorFrame`` if espeak-ng fails.
        """
        async for _ in self._trace_tts_request(text, context_id):
            pass
        if not text.strip():
            return
        # The base class opened the audio context, pushed TTSStartedFrame and started the
        # TTFB measurement; it closes the context and pushes TTSStoppedFrame after us.
        await self.start_tts_usage_metrics(text)
        got_audio = False
        try:
            async with contextlib.aclosing(self.synthesize(text, self.sample_rate)) as chunks:
                async for pcm in chunks:
                    if not got_audio:
                        got_audio = True
                        await self.stop_ttfb_metrics()
                    yield TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=context_id)
        except (EspeakSynthesisError, OSError, ValueError) as e:
            logger.error(f"{self}: {e}")
            if not got_audio:
                await self.cancel_ttfb_metrics()
            yield ErrorFrame(error=f"espeak-ng TTS failed: {e}", exception=e)

    async def tts_process_generator(
        self, context_id: str, generator: AsyncGenerator[Frame | None, None]
    ) -> None:
        """Route ``run_tts`` frames to the audio context, closing the generator on exit.

        The base class iterates the generator without closing it, so a cancellation that
        lands while the generator is suspended would leave espeak-ng running until the
        generator is garbage-collected. Closing it here kills the process at once.

        Args:
            context_id: The audio context to route frames to.
            generator: The ``run_tts`` generator.
        """
        async with contextlib.aclosing(generator) as frames:
            await super().tts_process_generator(context_id, frames)

    async def _update_settings(self, delta: ServiceSettings) -> dict[str, Any]:
        """Apply a settings delta, or refuse it as the class docstring describes.

        Args:
            delta: The settings to change.

        Returns:
            The changed fields, mapped to their previous values (empty if refused).
        """
        assert isinstance(delta, TTSSettings)
        if is_given(delta.language) and delta.language is not None and not is_given(delta.voice):
            delta.voice = espeak_voice_for_language(delta.language)
        candidate = self._settings.copy()
        # apply_update reads the delta's fields with getattr, so a plain TTSSettings works.
        candidate.apply_update(delta)  # type: ignore[arg-type]
        try:
            voice = candidate.voice
            if not isinstance(voice, str):
                raise ValueError(f"invalid espeak-ng voice {voice!r}")
            _check_options(*_options(candidate))
            if voice != self.voice:
                await acheck_voice(voice, self._executable)
        except (ValueError, OSError, TimeoutError) as e:
            await self.push_error(f"espeak-ng settings update refused: {e}", exception=e)
            return {}
        return await super()._update_settings(delta)

    async def cleanup(self):
        """Kill any espeak-ng process still running, then release the service."""
        await super().cleanup()
        for proc in list(self._processes):
            await reap(proc)
            self._processes.discard(proc)
