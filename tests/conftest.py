"""Shared fixtures: real test recordings from registry packages, and the model home."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
"""Debian package pocketsphinx-testdata: 5 LibriVox clips (16 kHz) with transcripts."""


def librivox_transcripts() -> dict[str, str]:
    """Map clip id → known transcript, from the package's ``transcription`` file."""
    out = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.+)\)", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


@pytest.fixture(scope="session")
def librivox() -> dict[Path, str]:
    """Real English speech: path → known transcript. Installed by .ci/run (apt)."""
    if not (LIBRIVOX / "transcription").is_file():
        pytest.fail(
            "test audio missing: install the Debian package pocketsphinx-testdata "
            "(scripts/setup.sh does)"
        )
    return {LIBRIVOX / f"{k}.wav": v for k, v in librivox_transcripts().items()}
