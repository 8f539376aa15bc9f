"""Learner recordings: any common format in, 16 kHz mono int16 out; bad files fail clearly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from loguru import logger
from typer.testing import CliRunner

from cli import app
from transports.file import AudioFileError, load_learner_audio

SPEECH = Path(
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"
)
"""2.99 s of real English speech, 16 kHz mono (Debian package pocketsphinx-testdata)."""
TARGET_RATE = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if not SPEECH.is_file():
        pytest.fail(f"test audio missing: {SPEECH} (install the package pocketsphinx-testdata)")
    data, rate = sf.read(str(SPEECH), dtype="float32")
    assert rate == TARGET_RATE and data.ndim == 1
    return data


@pytest.fixture(autouse=True)
def restore_loguru():
    """The CLI re-points loguru at the runner's stderr; give other tests a working sink back."""
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0, amplitude: float = 0.5):
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def write(path: Path, mono: np.ndarray, rate: int, channels: int, fmt: str, subtype: str):
    """Write ``mono`` (at ``rate``) with ``channels`` channels: the left at full, others at 0.5."""
    data = mono if channels == 1 else np.stack([mono] + [0.5 * mono] * (channels - 1), axis=1)
    sf.write(str(path), data, rate, format=fmt, subtype=subtype)
    return path


FORMATS = [
    # (rate, channels, soundfile format, subtype, suffix)
    (8000, 1, "WAV", "PCM_16", "wav"),
    (16000, 1, "WAV", "PCM_16", "wav"),
    (44100, 1, "WAV", "PCM_16", "wav"),
    (48000, 1, "WAV", "FLOAT", "wav"),
    (16000, 2, "WAV", "PCM_16", "wav"),
    (44100, 2, "WAV", "PCM_24", "wav"),
    (22050, 1, "FLAC", "PCM_16", "flac"),
    (48000, 2, "FLAC", "PCM_24", "flac"),
    (16000, 1, "OGG", "VORBIS", "ogg"),
    (44100, 2, "OGG", "VORBIS", "ogg"),
]
FORMAT_IDS = [f"{fmt.lower()}-{rate}hz-{ch}ch-{sub.lower()}" for rate, ch, fmt, sub, _ in FORMATS]


@pytest.mark.parametrize(("rate", "channels", "fmt", "subtype", "suffix"), FORMATS, ids=FORMAT_IDS)
def test_tone_in_any_format_becomes_16khz_mono_int16_with_its_pitch_and_duration(
    tmp_path, rate, channels, fmt, subtype, suffix
):
    path = write(tmp_path / f"tone.{suffix}", tone(rate), rate, channels, fmt, subtype)

    pcm = load_learner_audio(path)

    assert pcm.dtype == np.int16
    assert pcm.ndim == 1
    assert len(pcm) == pytest.approx(TARGET_RATE, rel=0.01)  # 1 s
    # Read at the file's own rate: a 440 Hz tone stays 440 Hz (a wrong rate would shift it).
    assert dominant_frequency(pcm, TARGET_RATE) == pytest.approx(440, abs=3)
    # Channels are averaged: 0.5 (mono) or (0.5 + 0.25) / 2 (second channel at half level).
    expected_peak = 0.5 if channels == 1 else 0.375
    peak = np.percentile(np.abs(pcm[1000:-1000]), 99.9) / 32767
    assert peak == pytest.approx(expected_peak, rel=0.05)


SPEECH_VARIANTS = [
    (16000, 1, "WAV", "PCM_16", "wav"),
    (8000, 1, "WAV", "PCM_16", "wav"),
    (44100, 2, "WAV", "PCM_16", "wav"),
    (48000, 1, "FLAC", "PCM_16", "flac"),
    (22050, 2, "OGG", "VORBIS", "ogg"),
]


@pytest.mark.parametrize(
    ("rate", "channels", "fmt", "subtype", "suffix"),
    SPEECH_VARIANTS,
    ids=[f"{fmt.lower()}-{rate}hz-{ch}ch" for rate, ch, fmt, _, _ in SPEECH_VARIANTS],
)
def test_real_speech_keeps_its_duration_and_waveform_after_conversion(
    tmp_path, speech, rate, channels, fmt, subtype, suffix
):
    at_rate = speech if rate == TARGET_RATE else soxr.resample(speech, TARGET_RATE, rate)
    path = write(tmp_path / f"learner.{suffix}", at_rate, rate, channels, fmt, subtype)

    pcm = load_learner_audio(path)

    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert len(pcm) / TARGET_RATE == pytest.approx(len(speech) / TARGET_RATE, rel=0.01)
    # Same speech, sample for sample (8 kHz loses the upper band, so compare below 3.4 kHz).
    n = min(len(pcm), len(speech))
    got, ref = pcm[:n].astype(np.float64), speech[:n].astype(np.float64)
    if rate == 8000:
        ref = soxr.resample(soxr.resample(ref, TARGET_RATE, 8000), 8000, TARGET_RATE)[:n]
    assert np.corrcoef(got, ref)[0, 1] > 0.98


def test_16khz_mono_wav_is_returned_sample_exact(tmp_path):
    samples = (tone(TARGET_RATE) * 32767).astype(np.int16)
    path = tmp_path / "exact.wav"
    sf.write(str(path), samples, TARGET_RATE, subtype="PCM_16")

    pcm = load_learner_audio(path)

    # Float conversion may round one step; nothing is resampled or rescaled.
    assert np.max(np.abs(pcm.astype(np.int32) - samples)) <= 1


def test_other_target_rate_is_honoured(tmp_path):
    path = write(tmp_path / "tone.wav", tone(44100), 44100, 1, "WAV", "PCM_16")

    pcm = load_learner_audio(path, sample_rate=8000)

    assert len(pcm) == pytest.approx(8000, rel=0.01)
    assert dominant_frequency(pcm, 8000) == pytest.approx(440, abs=3)


def test_loud_input_is_clipped_not_wrapped_around(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(str(path), tone(TARGET_RATE, amplitude=1.5), TARGET_RATE, subtype="FLOAT")

    pcm = load_learner_audio(path)

    assert pcm.max() == 32767
    assert pcm.min() == -32767
    # Where the input is at +1.5 the output is at the positive rail, not a negative wrap.
    positive = tone(TARGET_RATE, amplitude=1.5) > 1.0
    assert np.all(pcm[positive] == 32767)


# -- unusable files -------------------------------------------------------------------------


def test_text_file_named_wav_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("This is not a recording, just some notes.\n")

    with pytest.raises(AudioFileError) as exc:
        load_learner_audio(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: not a readable audio file (WAV, FLAC or OGG)")


def test_zero_byte_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "zero.wav"
    path.touch()

    with pytest.raises(AudioFileError, match="not a readable audio file") as exc:
        load_learner_audio(path)
    assert str(path) in str(exc.value)


def test_wav_with_no_frames_is_refused_as_empty(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros(0, dtype=np.int16), TARGET_RATE, subtype="PCM_16")
    assert path.stat().st_size > 0  # a valid header, no audio

    with pytest.raises(AudioFileError) as exc:
        load_learner_audio(path)
    assert str(exc.value) == f"{path}: empty recording (0 samples)"


def test_recording_shorter_than_100ms_is_refused_and_150ms_is_accepted(tmp_path):
    short = write(tmp_path / "short.wav", tone(44100, 0.05), 44100, 1, "WAV", "PCM_16")
    enough = write(tmp_path / "enough.wav", tone(44100, 0.15), 44100, 1, "WAV", "PCM_16")

    with pytest.raises(AudioFileError, match="empty recording"):
        load_learner_audio(short)
    assert len(load_learner_audio(enough)) == pytest.approx(0.15 * TARGET_RATE, rel=0.01)


def test_missing_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "nowhere" / "turn1.wav"

    with pytest.raises(AudioFileError) as exc:
        load_learner_audio(path)
    assert str(exc.value) == f"{path}: no such file"


def test_directory_is_refused_as_not_a_file(tmp_path):
    with pytest.raises(AudioFileError, match="no such file"):
        load_learner_audio(tmp_path)


# -- the CLI --------------------------------------------------------------------------------


def run_session_cli(*args: str):
    return CliRunner().invoke(app, ["session", *args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one error line, got {lines}"
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_session_with_a_text_file_exits_2_with_one_line_naming_it(tmp_path):
    bad = tmp_path / "learner_recording_turn_one_with_a_long_name.wav"
    bad.write_text("not audio\n")
    out = tmp_path / "out"

    result = run_session_cli("--persona", "german-tutor", "--audio", str(bad), "--out", str(out))

    assert_one_line_error(result, str(bad), "not a readable audio file")
    assert not out.exists(), "the output directory was created for a session that never ran"


def test_cli_session_names_the_bad_file_among_good_ones(tmp_path):
    good = write(tmp_path / "good.wav", tone(TARGET_RATE), TARGET_RATE, 1, "WAV", "PCM_16")
    missing = tmp_path / "turn2.wav"

    result = run_session_cli(
        "--persona", "german-tutor", "--audio", str(good), "--audio", str(missing),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip

    assert_one_line_error(result, f"{missing}: no such file")
    assert str(good) not in result.stderr


def test_cli_error_keeps_square_brackets_in_the_file_name(tmp_path):
    # "[red]" would be eaten as a style and the path ".../take[/b]/..." read as a closing tag.
    bad = tmp_path / "take[" / "b]" / "turn[red].wav"
    bad.parent.mkdir(parents=True)
    bad.write_text("not audio\n")

    result = run_session_cli("--persona", "german-tutor", "--audio", str(bad), "--out", "o")

    assert_one_line_error(result, str(bad))


def test_cli_session_with_unknown_persona_exits_2_naming_the_known_ones(tmp_path):
    audio = write(tmp_path / "turn.wav", tone(TARGET_RATE), TARGET_RATE, 1, "WAV", "PCM_16")

    result = run_session_cli(
        "--persona", "french-tutor", "--audio", str(audio), "--out", str(tmp_path / "out")
    )

    assert_one_line_error(
        result,
        "unknown persona 'french-tutor'",
        "known personas: aviation-examiner, czech-tutor, german-tutor",
    )
