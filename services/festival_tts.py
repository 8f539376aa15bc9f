"""Festival text-to-speech: the local tier's Czech voice.

espeak-ng's Czech is hard to understand; Festival with Brailcom's Czech voices (Debian
``festival``, ``festival-czech``, ``festvox-czech-dita`` (female) / ``festvox-czech-machac``
(male), Debian main, GPL-3.0-or-later voices:
https://packages.debian.org/bookworm/festvox-czech-dita) came out clearly better in a Whisper
round trip (``bench.voices``). Festival takes ~0.3 s to start and load a voice, then
synthesises a sentence in about 0.01 of its duration, so each service keeps **one** Festival
process for its whole session: it is started with the pipeline and fed one Scheme command
per sentence on stdin (``stdbuf -o0`` makes it answer at once instead of when its output
buffer fills). Festival's Czech front end reads **ISO-8859-2**: UTF-8 input makes it spell
out garbage, so text is converted (characters that encoding lacks are dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import StartFrame

from services.espeak_process import reap
from services.wav_voice_tts import VoiceSynthesisError, WavVoiceTTSService

FESTIVAL_EXECUTABLE = "festival"
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
FESTIVAL_NOT_FOUND_MESSAGE = (
    "festival not found; install Debian packages festival festival-czech festvox-czech-dita"
)
_TIMEOUT_S = 20.0
_PUNCTUATION = str.maketrans(
    {
        "„": " ",
        "“": " ",
        "”": " ",
        '"': " ",
        "‚": " ",
        "‘": " ",
        "’": "'",
        "–": ",",
        "—": ",",
        "…": ".",
        "\\": " ",
    }
)


def festival_voices(voice_dir: Path | None = None) -> set[str]:
    """Return the installed Festival voices, e.g. ``{"czech_dita", "kal_diphone"}``.

    ``voice_dir`` defaults to :data:`FESTIVAL_VOICE_DIR`.
    """
    voice_dir = voice_dir or FESTIVAL_VOICE_DIR
    if not voice_dir.is_dir():
        return set()
    return {v.name for lang in voice_dir.iterdir() if lang.is_dir() for v in lang.iterdir()}


def festival_available(voice: str) -> bool:
    """Whether Festival and ``voice`` are installed."""
    return shutil.which(FESTIVAL_EXECUTABLE) is not None and voice in festival_voices()


def scheme_text(text: str) -> bytes:
    """Encode a sentence as the body of a Scheme string literal for Festival.

    Quotes and backslashes are replaced (so the learner's or the LLM's text stays data and
    can never close the string), line breaks become spaces, and the result is ISO-8859-2.

    Returns:
        ISO-8859-2 bytes, without the surrounding quotes.
    """
    clean = " ".join(text.translate(_PUNCTUATION).split())
    return clean.encode("iso-8859-2", errors="ignore")


class FestivalTTSService(WavVoiceTTSService):
    """Festival with one long-running process per service.

    Args:
        voice: An installed Festival voice (``"czech_dita"``, ``"czech_machac"``).
        **kwargs: Passed to :class:`WavVoiceTTSService` (``chunk_ms``, ``sample_rate`` Hz).

    Raises:
        FileNotFoundError: Festival or the voice is not installed.
    """

    engine = "Festival"

    def __init__(self, *, voice: str = "czech_dita", **kwargs: Any):
        if shutil.which(FESTIVAL_EXECUTABLE) is None:
            raise FileNotFoundError(FESTIVAL_NOT_FOUND_MESSAGE)
        if voice not in festival_voices():
            raise FileNotFoundError(
                f"Festival voice {voice!r} is not installed "
                f"(Debian festvox-{voice.replace('_', '-')})"
            )
        super().__init__(voice=voice, **kwargs)
        self._dir = tempfile.TemporaryDirectory(prefix="voxtutor-festival-")
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)

    async def start(self, frame: StartFrame) -> None:
        """Start Festival with the pipeline, so the first sentence does not wait for it."""
        await super().start(frame)
        with contextlib.suppress(OSError, VoiceSynthesisError):
            async with self._lock:
                await self._ensure_process()

    async def _command(self, proc: asyncio.subprocess.Process, command: bytes) -> None:
        """Send one command and read Festival's output up to this command's marker."""
        assert proc.stdin is not None and proc.stdout is not None
        marker = f"voxtutor-done-{next(self._ids)}".encode()
        proc.stdin.write(command + b'\n(print "' + marker + b'")\n')
        await proc.stdin.drain()
        async with asyncio.timeout(_TIMEOUT_S):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    raise VoiceSynthesisError(f"Festival exited ({proc.returncode})")
                if marker in line:
                    return

    async def _ensure_process(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        proc = await asyncio.create_subprocess_exec(
            "stdbuf",
            "-o0",
            FESTIVAL_EXECUTABLE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._proc = proc
        try:
            await self._command(proc, f"(voice_{self.voice})".encode())
        except (TimeoutError, VoiceSynthesisError, OSError) as e:
            await reap(proc)
            raise VoiceSynthesisError(f"Festival did not load voice {self.voice}: {e}") from e
        return proc

    async def synthesize_wav(self, text: str) -> bytes:
        """Synthesise one sentence in the running Festival and return its WAV.

        Raises:
            VoiceSynthesisError: Festival failed, timed out (20 s) or exited (the next
                sentence starts a new one).
        """
        body = scheme_text(text)
        async with self._lock:
            proc = await self._ensure_process()
            out = Path(self._dir.name) / f"{next(self._ids)}.wav"
            command = (
                b'(utt.save.wave (utt.synth (Utterance Text "'
                + body
                + b'")) "'
                + str(out).encode()
                + b"\" 'riff)"
            )
            try:
                await self._command(proc, command)
            except TimeoutError as e:
                await reap(proc)
                raise VoiceSynthesisError(f"Festival took over {_TIMEOUT_S:.0f} s") from e
        try:
            return out.read_bytes()
        except FileNotFoundError as e:
            raise VoiceSynthesisError(f"Festival wrote no audio for {text[:40]!r}") from e
        finally:
            out.unlink(missing_ok=True)

    async def cleanup(self) -> None:
        """Stop Festival and remove the temporary directory."""
        await super().cleanup()
        if self._proc is not None:
            await reap(self._proc)
            logger.debug(f"{self}: Festival stopped")
        self._dir.cleanup()
