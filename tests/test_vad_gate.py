"""The session's Silero VAD skips the model on silent windows and still decides as Pipecat's.

Real speech (the LibriVox recordings, at 16 kHz and as a phone line's 8 kHz μ-law) with
silences between the utterances goes through Pipecat's ``SileroVADAnalyzer`` (the model on
every window) and through :class:`pipelines.turn_taking.InlineSileroVADAnalyzer`, 20 ms at a
time. The speaking/quiet transitions must be the same, each within two chunks (a skipped
window resets the model's recurrent state, so its confidence can cross the threshold one
32 ms Silero window apart), and the gated analyzer must have run the model on fewer windows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pipecat.audio.utils import create_stream_resampler, pcm_to_ulaw, ulaw_to_pcm
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from pipelines.turn_taking import QUIET_DBFS, InlineSileroVADAnalyzer
from transports.file import load_learner_audio

LIBRIVOX = sorted(Path("/usr/share/pocketsphinx/test/data/librivox").glob("*.wav"))


def conversation(rate: int, noise_dbfs: float | None = None, seed: int = 7) -> bytes:
    """The recordings at ``rate`` Hz, each after 1.2 s of silence, then 1.5 s of silence.

    ``noise_dbfs``: white noise at this RMS level over everything (a microphone's floor).
    """
    silence = np.zeros(int(1.2 * rate), np.int16)
    parts = []
    for path in LIBRIVOX:
        parts += [silence, np.frombuffer(load_learner_audio(path, rate), np.int16)]
    pcm = np.concatenate([*parts, np.zeros(int(1.5 * rate), np.int16)]).astype(np.float32)
    if noise_dbfs is not None:
        rng = np.random.default_rng(seed)
        pcm += rng.normal(0, 32768 * 10 ** (noise_dbfs / 20), len(pcm))
    return np.clip(pcm, -32768, 32767).astype(np.int16).tobytes()


def count_inferences(analyzer: SileroVADAnalyzer) -> list[int]:
    """Count the analyzer's model runs in the returned one-element list."""
    calls = [0]
    session = analyzer._model.session
    run = session.run

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return run(*args, **kwargs)

    analyzer._model.session = type("Counted", (), {"run": staticmethod(counted)})()
    return calls


async def states(analyzer: SileroVADAnalyzer, audio: bytes, rate: int) -> list[VADState]:
    """Feed ``audio`` in 20 ms chunks; the VAD state after each."""
    step = rate // 50 * 2
    out = []
    for off in range(0, len(audio), step):
        # Pipecat's analyzer runs this same method in its executor thread.
        out.append(analyzer._run_analyzer(audio[off : off + step]))
    return out


def compare(audio: bytes, rate: int) -> tuple[list[VADState], list[VADState], int, int]:
    """Run both analyzers over ``audio``; their states and model runs."""
    params = VADParams(stop_secs=0.2)
    pipecat = SileroVADAnalyzer(sample_rate=rate, params=params)
    ours = InlineSileroVADAnalyzer(sample_rate=rate, params=params)
    pipecat.set_sample_rate(rate)
    ours.set_sample_rate(rate)
    p_calls, o_calls = count_inferences(pipecat), count_inferences(ours)
    expected = asyncio.run(states(pipecat, audio, rate))
    got = asyncio.run(states(ours, audio, rate))
    return expected, got, p_calls[0], o_calls[0]


def transitions(seq: list[VADState]) -> list[tuple[int, VADState]]:
    """``(chunk index, state)`` each time the state became SPEAKING or QUIET."""
    return [
        (i + 1, b)
        for i, (a, b) in enumerate(zip(seq, seq[1:], strict=False))
        if a != b and b in (VADState.SPEAKING, VADState.QUIET)
    ]


def assert_same_decisions(expected: list[VADState], got: list[VADState]) -> None:
    """Pipecat's VAD heard every utterance; ours made the same transitions, ±2 chunks."""
    want, have = transitions(expected), transitions(got)
    assert sum(s == VADState.SPEAKING for _, s in want) >= len(LIBRIVOX)
    assert [s for _, s in have] == [s for _, s in want]
    assert all(abs(i - j) <= 2 for (i, _), (j, _) in zip(have, want, strict=True)), (have, want)


@pytest.mark.parametrize("noise_dbfs", [None, -75.0], ids=["digital-silence", "noise-floor"])
def test_same_decisions_as_pipecat_on_real_speech_at_16khz(noise_dbfs: float | None) -> None:
    assert len(LIBRIVOX) == 5
    audio = conversation(16000, noise_dbfs)
    expected, got, p_runs, o_runs = compare(audio, 16000)
    assert_same_decisions(expected, got)
    # The silences (7.5 of 32 s) are not scored; the recordings are.
    assert 0.7 * p_runs < o_runs < 0.85 * p_runs


def test_same_decisions_on_a_phone_line() -> None:
    """8 kHz μ-law, as Twilio and Telnyx carry it (Silero's 256-sample windows)."""
    pcm16k = conversation(16000)
    resampler = create_stream_resampler()
    pcm8k = asyncio.run(resampler.resample(pcm16k, 16000, 8000))
    line = asyncio.run(ulaw_to_pcm(asyncio.run(pcm_to_ulaw(pcm8k, 8000, 8000, resampler)),
                                   8000, 8000, resampler))  # fmt: skip
    expected, got, p_runs, o_runs = compare(line, 8000)
    assert_same_decisions(expected, got)
    assert o_runs < 0.85 * p_runs


def test_a_loud_line_is_always_scored() -> None:
    """Noise above :data:`QUIET_DBFS` is never skipped: the model decides, as in Pipecat."""
    audio = conversation(16000, noise_dbfs=QUIET_DBFS + 10)
    expected, got, p_runs, o_runs = compare(audio, 16000)
    assert_same_decisions(expected, got)
    assert o_runs == p_runs
