"""espeak-ng text-to-speech for the local tier: German and Czech, fully offline.

German and Czech have no packaged neural voice, so the local tier speaks them with
`espeak-ng <https://github.com/espeak-ng/espeak-ng>`_ (Debian package ``espeak-ng``).
Every utterance runs one ``espeak-ng --stdout --stdin`` process: the text goes in on stdin
(so text starting with ``-`` can never be read as an option) and a 22050 Hz mono 16-bit WAV
stream comes out on stdout, which is read as it is written, resampled with soxr to the
pipeline's output rate and pushed in chunks of 40 ms. espeak-ng synthesises far faster than
real time, so the first chunk is out within milliseconds of the text arriving.

An utterance that is interrupted has its process killed and reaped before the generator
finishes closing, so no ``espeak-ng`` process outlives the speech it was making.

Example::

    tts = EspeakTTSService(
        settings=EspeakTTSService.Settings(voice="de", rate_wpm=140),
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import subprocess
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import ServiceSettings, TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven, is_given

ESPEAK_EXECUTABLE = "espeak-ng"
"""Name (or path) of the espeak-ng program, looked up on ``PATH``."""

ESPEAK_NOT_FOUND_MESSAGE = (
    "espeak-ng not found; install Debian package espeak-ng (apt-get install espeak-ng)"
)
"""Message of the error raised when the espeak-ng program is missing."""

LANGUAGE_TO_VOICE: dict[str, str] = {"de": "de", "cs": "cs", "en": "en-us"}
"""espeak-ng voice for each persona language code (ISO 639-1)."""

DEFAULT_VOICE = "en-us"
"""Voice used when neither a voice nor a language is configured."""

DEFAULT_RATE_WPM = 150
"""Default speaking rate in words per minute: slower than espeak-ng's 175, for learners."""

DEFAULT_PITCH = 50
"""Default pitch, 0-99 (espeak-ng's own default)."""

DEFAULT_WORD_GAP_MS = 0
"""Default extra pause between words in ms (espeak-ng's ``-g``, which counts 10 ms units)."""

DEFAULT_CHUNK_MS = 40
"""Duration of each pushed audio frame in ms."""

MIN_RATE_WPM = 80
"""Slowest rate espeak-ng supports, in words per minute."""

MAX_RATE_WPM = 450
"""Fastest rate espeak-ng supports, in words per minute."""

_READ_SIZE = 4096
"""Bytes asked of espeak-ng's stdout per read; espeak-ng flushes in 4096-byte blocks."""

_VOICE_CHECK_TIMEOUT_S = 10.0
"""Seconds allowed for the espeak-ng run that checks a voice exists."""


class EspeakSynthesisError(RuntimeError):
    """espeak-ng exited with an error or wrote something that is not 16-bit PCM WAV."""


def espeak_voice_for_language(language: Language | str) -> str:
    """Return the espeak-ng voice that speaks a language.

    Persona codes map through :data:`LANGUAGE_TO_VOICE` (``"de"`` → ``"de"``, ``"cs"`` →
    ``"cs"``, ``"en"`` → ``"en-us"``). Regional German and Czech codes (``"de-AT"``,
    ``"cs-CZ"``) map to the one German or Czech voice espeak-ng has; any other code is
    passed on lower-cased, since espeak-ng names its voices by language code (``"en-gb"``).

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


def find_espeak(executable: str = ESPEAK_EXECUTABLE) -> str:
    """Locate the espeak-ng program.

    Args:
        executable: Program name looked up on ``PATH``, or a path to it.

    Returns:
        The absolute path of the program.

    Raises:
        FileNotFoundError: If it cannot be found, with installation instructions.
    """
    path = shutil.which(executable)
    if path is None:
        raise FileNotFoundError(ESPEAK_NOT_FOUND_MESSAGE)
    return path


def _voice_check_args(executable: str, voice: str) -> list[str]:
    # Speaking empty text quietly loads the voice and nothing else: espeak-ng exits 1 with
    # "The specified espeak-ng voice does not exist" when it can't, which catches what a
    # listing would miss (variants such as "de+f3", MBROLA voices whose data is absent).
    return [executable, "-q", "--stdin", "-v", voice]


def _voice_error(voice: str, stderr: bytes) -> ValueError:
    detail = stderr.decode("utf-8", "replace").strip() or "espeak-ng rejected it"
    return ValueError(
        f"unknown espeak-ng voice {voice!r}: {detail} (list voices with `espeak-ng --voices`)"
    )


def _check_voice_name(voice: str) -> None:
    if not voice or voice != voice.strip() or voice.startswith("-"):
        raise ValueError(f"invalid espeak-ng voice {voice!r}")


def check_voice(voice: str, executable: str = ESPEAK_EXECUTABLE) -> None:
    """Check that espeak-ng can load a voice, by loading it.

    Args:
        voice: espeak-ng voice name (``"de"``, ``"cs"``, ``"de+m3"``, ``"gmw/de"``).
        executable: Program name or path of espeak-ng.

    Raises:
        ValueError: If espeak-ng has no such voice; the message names it.
        FileNotFoundError: If espeak-ng is missing.
    """
    _check_voice_name(voice)
    result = subprocess.run(
        _voice_check_args(find_espeak(executable), voice),
        input=b"",
        capture_output=True,
        timeout=_VOICE_CHECK_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise _voice_error(voice, result.stderr)


async def _acheck_voice(voice: str, executable: str) -> None:
    """Asynchronous :func:`check_voice`, for settings updates on a running pipeline."""
    _check_voice_name(voice)
    proc = await asyncio.create_subprocess_exec(
        *_voice_check_args(executable, voice),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(b""), _VOICE_CHECK_TIMEOUT_S)
    finally:
        await _reap(proc)
    if proc.returncode != 0:
        raise _voice_error(voice, stderr)


def _check_options(rate_wpm: int, pitch: int, word_gap_ms: int) -> None:
    if not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
        raise ValueError(
            f"rate_wpm must be {MIN_RATE_WPM}-{MAX_RATE_WPM} words per minute, got {rate_wpm}"
        )
    if not 0 <= pitch <= 99:
        raise ValueError(f"pitch must be 0-99, got {pitch}")
    if word_gap_ms < 0:
        raise ValueError(f"word_gap_ms must be >= 0 ms, got {word_gap_ms}")


def parse_wav_header(data: bytes) -> tuple[int, int] | None:
    """Parse the header of a streamed 16-bit mono PCM WAV.

    espeak-ng writes its WAV before it knows the length, so the RIFF and data sizes are
    placeholders; only the ``fmt`` chunk and the position of the ``data`` chunk are used.

    Args:
        data: The first bytes of the stream (any amount).

    Returns:
        ``(sample_rate_hz, data_offset)``, where ``data_offset`` is the index of the first
        PCM byte, or None if ``data`` ends before the ``data`` chunk starts.

    Raises:
        EspeakSynthesisError: If the bytes are not a 16-bit mono PCM WAV.
    """
    if len(data) < 12:
        if not b"RIFF".startswith(data[:4]):
            raise EspeakSynthesisError(f"espeak-ng output is not a WAV stream: {data[:12]!r}")
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EspeakSynthesisError(f"espeak-ng output is not a WAV stream: {data[:12]!r}")
    offset = 12
    sample_rate: int | None = None
    while len(data) >= offset + 8:
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"data":
            if sample_rate is None:
                raise EspeakSynthesisError("espeak-ng WAV has no fmt chunk before its data")
            return sample_rate, body
        if chunk_id == b"fmt ":
            if len(data) < body + 16:
                return None
            fmt_tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if fmt_tag != 1 or channels != 1 or bits != 16:
                raise EspeakSynthesisError(
                    f"espeak-ng WAV is not 16-bit mono PCM "
                    f"(format {fmt_tag}, {channels} channels, {bits} bits)"
                )
            sample_rate = rate
        offset = body + size + (size & 1)
    return None


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill a process unless it has exited, and wait for it so it leaves no zombie."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


@dataclass
class EspeakTTSSettings(TTSSettings):
    """Runtime-updatable settings for :class:`EspeakTTSService`.

    Parameters:
        voice: espeak-ng voice (``"de"``, ``"cs"``, ``"en-us"``, variants like ``"de+m3"``).
            Defaults to the voice of ``language`` (see :func:`espeak_voice_for_language`),
            else ``"en-us"``.
        language: Language spoken; picks the voice when no voice is given, and the sentence
            splitter's language.
        rate_wpm: Speaking rate in words per minute, 80-450 (default 150).
        pitch: Pitch, 0-99 (default 50).
        word_gap_ms: Extra pause between words in ms, in steps of 10 ms (default 0).
    """

    rate_wpm: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    pitch: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    word_gap_ms: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class EspeakTTSService(TTSService):
    """Local text-to-speech with espeak-ng, one subprocess per utterance.

    Audio is streamed: the first frame is pushed as soon as espeak-ng has written the
    first 40 ms, long before it exits. Frames are 16-bit mono PCM at the pipeline's output
    sample rate (resampled from espeak-ng's 22050 Hz with soxr). A failing espeak-ng yields
    an ``ErrorFrame`` carrying its stderr; the pipeline carries on.

    Settings updates (voice, language, rate, pitch, word gap) apply from the next
    utterance; an update naming a voice espeak-ng lacks is refused with an error and
    changes nothing.

    Example::

        tts = EspeakTTSService(
            settings=EspeakTTSService.Settings(language="cs", rate_wpm=140),
        )
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
            settings: Settings delta over the defaults (voice from language, else
                ``"en-us"``; 150 words per minute; pitch 50; no word gap).
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

        _check_options(self._rate_wpm, self._pitch, self._word_gap_ms)
        check_voice(self.voice, self._executable)

    @property
    def voice(self) -> str:
        """The espeak-ng voice speaking the next utterance."""
        voice = self._settings.voice
        assert isinstance(voice, str)
        return voice

    @property
    def _rate_wpm(self) -> int:
        assert is_given(self._settings.rate_wpm)
        return self._settings.rate_wpm

    @property
    def _pitch(self) -> int:
        assert is_given(self._settings.pitch)
        return self._settings.pitch

    @property
    def _word_gap_ms(self) -> int:
        assert is_given(self._settings.word_gap_ms)
        return self._settings.word_gap_ms

    def can_generate_metrics(self) -> bool:
        """Report that this service generates TTFB, processing and usage metrics.

        Returns:
            True.
        """
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        """Convert a Pipecat language to the espeak-ng voice that speaks it.

        Args:
            language: The language.

        Returns:
            The espeak-ng voice name (see :func:`espeak_voice_for_language`).
        """
        return espeak_voice_for_language(language)

    def command(self) -> list[str]:
        """Return the espeak-ng command line for the current settings.

        The text is not on it: it is written to the process's stdin.

        Returns:
            The program and its arguments.
        """
        return [
            self._executable,
            "--stdout",
            "--stdin",
            "-b",
            "1",  # the text is UTF-8
            "-v",
            self.voice,
            "-s",
            str(self._rate_wpm),
            "-p",
            str(self._pitch),
            "-g",
            str(round(self._word_gap_ms / 10)),
        ]

    async def synthesize(self, text: str, sample_rate: int) -> AsyncGenerator[bytes, None]:
        """Synthesise text, yielding audio as espeak-ng produces it.

        The espeak-ng process is killed and reaped when the generator is closed early
        (``aclose()``, or cancellation of the task iterating it).

        Args:
            text: Text to speak; passed on stdin, so it is never read as options.
            sample_rate: Sample rate of the audio yielded, in Hz.

        Yields:
            16-bit mono little-endian PCM at ``sample_rate`` Hz, in chunks of ``chunk_ms``
            ms (the last one may be shorter).

        Raises:
            EspeakSynthesisError: If espeak-ng fails; the message includes its stderr.
            ValueError: If ``sample_rate`` is not positive.
        """
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
        chunk_bytes = max(1, sample_rate * self._chunk_ms // 1000) * 2
        proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._processes.add(proc)
        try:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            proc.stdin.write(text.encode("utf-8"))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                # Fails only if espeak-ng died already; its stderr then tells why.
                await proc.stdin.drain()
            proc.stdin.close()

            header = bytearray()
            in_rate: int | None = None
            resampler: soxr.ResampleStream | None = None
            odd_byte = b""
            pending = bytearray()
            while data := await proc.stdout.read(_READ_SIZE):
                if in_rate is None:
                    header += data
                    parsed = parse_wav_header(bytes(header))
                    if parsed is None:
                        continue
                    in_rate, data_offset = parsed
                    data = bytes(header[data_offset:])
                    if in_rate != sample_rate:
                        resampler = soxr.ResampleStream(
                            in_rate, sample_rate, 1, dtype="int16", quality="HQ"
                        )
                data = odd_byte + data
                odd_byte = data[len(data) & ~1 :]
                pcm = data[: len(data) & ~1]
                if resampler is not None:
                    pcm = resampler.resample_chunk(np.frombuffer(pcm, dtype="<i2")).tobytes()
                pending += pcm
                while len(pending) >= chunk_bytes:
                    yield bytes(pending[:chunk_bytes])
                    del pending[:chunk_bytes]

            returncode = await proc.wait()
            stderr = (await proc.stderr.read()).decode("utf-8", "replace").strip()
            if returncode != 0:
                raise EspeakSynthesisError(
                    f"espeak-ng exited with status {returncode}: {stderr or '(no stderr)'}"
                )
            if in_rate is None:
                raise EspeakSynthesisError(
                    f"espeak-ng wrote no audio ({len(header)} bytes): {stderr or '(no stderr)'}"
                )
            if stderr:
                logger.debug(f"{self}: espeak-ng: {stderr}")
            if resampler is not None:
                pending += resampler.resample_chunk(np.zeros(0, dtype="<i2"), last=True).tobytes()
            if pending:
                yield bytes(pending)
        finally:
            try:
                await _reap(proc)
            finally:
                self._processes.discard(proc)

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

        Closing the generator early (``aclose()``, or cancelling the task iterating it, as
        Pipecat does on an interruption) kills and reaps the espeak-ng process.

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
        """Apply a settings delta, from the next utterance on.

        A new language without a new voice switches to the language's voice. A delta that
        names a voice espeak-ng lacks, or an out-of-range rate, pitch or word gap, is
        refused: an error is pushed and nothing changes.

        Args:
            delta: The settings to change.

        Returns:
            The changed fields, mapped to their previous values.
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
            rate, pitch, gap = candidate.rate_wpm, candidate.pitch, candidate.word_gap_ms
            assert is_given(rate) and is_given(pitch) and is_given(gap)
            _check_options(rate, pitch, gap)
            if voice != self.voice:
                await _acheck_voice(voice, self._executable)
        except (ValueError, OSError, TimeoutError) as e:
            await self.push_error(f"espeak-ng settings update refused: {e}", exception=e)
            return {}
        return await super()._update_settings(delta)

    async def cleanup(self):
        """Kill any espeak-ng process still running, then release the service."""
        await super().cleanup()
        for proc in list(self._processes):
            await _reap(proc)
            self._processes.discard(proc)
