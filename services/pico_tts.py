"""SVOX Pico text-to-speech: the local tier's German voice.

espeak-ng's German is hard to understand: transcribed back by Whisper base, its word error
rate was about 0.47, SVOX Pico's 0.05 (``bench.voices`` measures it on every run). Pico is
Debian's ``libttspico-utils`` (the ``pico2wave`` program and its lingware, in Debian's
``non-free`` component, https://packages.debian.org/bookworm/libttspico-utils); it writes one
16 kHz WAV per call in about 0.01 of the speech's duration, so one short process per sentence
costs the first word ~30 ms. ``pico2wave`` only writes to a file whose name ends ``.wav``;
each sentence gets one in a private temporary directory, deleted once read.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from services.espeak_process import reap
from services.wav_voice_tts import VoiceSynthesisError, WavVoiceTTSService

PICO_EXECUTABLE = "pico2wave"
PICO_VOICES = ("de-DE", "en-US", "en-GB", "es-ES", "fr-FR", "it-IT")
"""The languages ``pico2wave -l`` accepts (``pico2wave --help``, libttspico-utils 1.0)."""

PICO_NOT_FOUND_MESSAGE = (
    "pico2wave not found; install Debian package libttspico-utils (component non-free)"
)
_TIMEOUT_S = 20.0


def find_pico(executable: str | None = None) -> str | None:
    """Return the path of ``pico2wave``, or None if it is not installed.

    ``executable`` defaults to :data:`PICO_EXECUTABLE`.
    """
    return shutil.which(executable or PICO_EXECUTABLE)


class PicoTTSService(WavVoiceTTSService):
    """SVOX Pico through ``pico2wave``, one process per sentence.

    Args:
        voice: A Pico language, one of :data:`PICO_VOICES` (``"de-DE"``).
        executable: ``pico2wave`` on ``PATH`` or a path to it (default
            :data:`PICO_EXECUTABLE`).
        **kwargs: Passed to :class:`WavVoiceTTSService` (``chunk_ms``, ``sample_rate`` Hz).

    Raises:
        FileNotFoundError: ``pico2wave`` is not installed.
        ValueError: ``voice`` is not a Pico language.
    """

    engine = "SVOX Pico"

    def __init__(self, *, voice: str = "de-DE", executable: str | None = None, **kwargs: Any):
        if voice not in PICO_VOICES:
            raise ValueError(f"unknown Pico voice {voice!r}; use one of {', '.join(PICO_VOICES)}")
        path = find_pico(executable)
        if path is None:
            raise FileNotFoundError(PICO_NOT_FOUND_MESSAGE)
        super().__init__(voice=voice, **kwargs)
        self._executable = path
        self._dir = tempfile.TemporaryDirectory(prefix="voxtutor-pico-")
        self._count = 0

    async def synthesize_wav(self, text: str) -> bytes:
        """Run ``pico2wave`` on one sentence and return its 16 kHz WAV.

        Raises:
            VoiceSynthesisError: ``pico2wave`` failed or timed out (20 s).
        """
        self._count += 1
        out = Path(self._dir.name) / f"{self._count}.wav"
        # "--" ends the options, so a sentence starting with "-" is spoken, not parsed.
        proc = await asyncio.create_subprocess_exec(
            self._executable,
            "-l",
            self.voice,
            "-w",
            str(out),
            "--",
            " ".join(text.split()),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), _TIMEOUT_S)
        except TimeoutError as e:
            raise VoiceSynthesisError(f"pico2wave took over {_TIMEOUT_S:.0f} s") from e
        finally:
            await reap(proc)
        try:
            if proc.returncode != 0:
                detail = stderr.decode("utf-8", "replace").strip() or "no stderr"
                raise VoiceSynthesisError(f"pico2wave exited with {proc.returncode}: {detail}")
            return out.read_bytes()
        finally:
            out.unlink(missing_ok=True)

    async def cleanup(self) -> None:
        """Remove the temporary directory, then release the service."""
        await super().cleanup()
        self._dir.cleanup()
