"""Real speech for tests and benchmarks: the LibriVox clips of Debian's pocketsphinx-testdata.

``scripts/setup.sh`` installs the package; it ships five 16 kHz mono English clips with
their transcripts (``transcription``, Sphinx format: ``<s> words </s> (clip-id)``).
"""

from __future__ import annotations

import re
from pathlib import Path

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
"""Where Debian's ``pocketsphinx-testdata`` puts the LibriVox clips and ``transcription``."""


def librivox_transcripts(directory: Path = LIBRIVOX) -> dict[str, str]:
    """Map clip id (the file name without ``.wav``) → its known transcript.

    Raises:
        FileNotFoundError: ``directory/transcription`` is missing (package not installed).
    """
    out = {}
    for line in (directory / "transcription").read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.+)\)", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


def librivox_clips(directory: Path = LIBRIVOX) -> list[tuple[Path, str]]:
    """``(wav path, transcript)`` of each listed clip whose file exists, in file order.

    Raises:
        FileNotFoundError: ``directory/transcription`` is missing (package not installed).
    """
    clips = []
    for clip_id, text in librivox_transcripts(directory).items():
        wav = directory / f"{clip_id}.wav"
        if wav.is_file():
            clips.append((wav, text))
    return clips
