"""SVOX Pico (German) and Festival (Czech): the local tier's voices, on the real programs."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import run_test

from config.personas import list_personas, load_persona
from pipelines.local import local_tts
from services.espeak_tts import EspeakTTSService
from services.festival_tts import FestivalTTSService, scheme_text
from services.pico_tts import PicoTTSService
from services.wav_voice_tts import wav_pcm

GERMAN = "Ich fahre jeden Tag mit dem Bus zur Arbeit."
CZECH = "Včera jsem byl v obchodě a koupil jsem chleba."
MIN_SPEECH_RMS = 500.0  # 16-bit full scale is 32767


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def seconds(wav: bytes) -> float:
    samples, rate = wav_pcm(wav)
    return samples.size / rate


async def speak(tts, text: str, sample_rate: int):
    down, up = await run_test(
        Pipeline([tts]),
        frames_to_send=[TTSSpeakFrame(text)],
        pipeline_params=PipelineParams(audio_out_sample_rate=sample_rate),
    )
    return down, up


@pytest.mark.parametrize("sample_rate", [16000, 24000])
@pytest.mark.parametrize(
    ("make", "text"),
    [(lambda: PicoTTSService(voice="de-DE"), GERMAN), (FestivalTTSService, CZECH)],
    ids=["pico", "festival"],
)
async def test_sentence_is_spoken_in_40ms_frames_at_the_pipeline_rate(make, text, sample_rate):
    down, _ = await speak(make(), text, sample_rate)

    kinds = [type(f) for f in down if isinstance(f, (TTSStartedFrame, TTSStoppedFrame))]
    assert kinds == [TTSStartedFrame, TTSStoppedFrame]
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert all(f.sample_rate == sample_rate and f.num_channels == 1 for f in audio)
    assert all(len(f.audio) == sample_rate * 40 // 1000 * 2 for f in audio[:-1])
    pcm = b"".join(f.audio for f in audio)
    assert len(pcm) / 2 / sample_rate >= 1.5
    assert rms(pcm) > MIN_SPEECH_RMS


async def test_pico_speaks_text_starting_with_a_dash():
    # As options, --help would print usage and write no WAV.
    wav = await PicoTTSService(voice="de-DE").synthesize_wav("--help mich bitte")
    assert seconds(wav) >= 0.5


def test_pico_refuses_unknown_voice_and_missing_program(monkeypatch):
    with pytest.raises(ValueError, match="cs-CZ"):
        PicoTTSService(voice="cs-CZ")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="libttspico-utils"):
        PicoTTSService(voice="de-DE")


async def test_failing_pico_is_an_error_frame_and_the_pipeline_goes_on(tmp_path: Path):
    script = tmp_path / "pico2wave"
    script.write_text('#!/bin/sh\necho "boom: no lingware" >&2\nexit 4\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    tts = PicoTTSService(voice="de-DE", executable=str(script))

    _, up = await run_test(
        Pipeline([tts]),
        frames_to_send=[TTSSpeakFrame("Hallo"), TTSSpeakFrame("Noch einmal")],
        pipeline_params=PipelineParams(audio_out_sample_rate=16000),
    )

    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert sum("boom: no lingware" in e for e in errors) == 2


def test_scheme_text_is_iso_8859_2_and_cannot_close_the_string():
    body = scheme_text('Řekl: "ahoj") (quit) \\ „dobře“ – ano…\nkonec')
    assert b'"' not in body and b"\\" not in body and b"\n" not in body
    text = body.decode("iso-8859-2")
    assert text.startswith("Řekl:") and "dobře" in text and "konec" in text


async def test_festival_keeps_one_process_for_a_session_and_survives_hostile_text():
    tts = FestivalTTSService(voice="czech_dita")
    texts = [CZECH, 'Ahoj") (quit) (print "x', "Dobrý den."]
    try:
        wavs = [await tts.synthesize_wav(t) for t in texts]
        proc = tts._proc
        assert proc is not None and proc.returncode is None
        assert all(seconds(w) > 0.3 for w in wavs)
        assert seconds(wavs[0]) > seconds(wavs[2])
    finally:
        await tts.cleanup()
    assert proc.returncode is not None


async def test_festival_answers_the_next_sentence_after_a_cancelled_one():
    tts = FestivalTTSService(voice="czech_dita")
    try:
        await tts.synthesize_wav("Dobrý den.")  # Festival has started and loaded its voice
        # About 5 minutes of speech: over a second to synthesise, cancelled well before.
        long = asyncio.ensure_future(tts.synthesize_wav(" ".join([CZECH] * 100)))
        await asyncio.sleep(0.05)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        short = await tts.synthesize_wav("Ano.")
        # The short sentence's own audio, not the cancelled long one's.
        assert 0.2 < seconds(short) < 1.5
    finally:
        await tts.cleanup()


def test_personas_speak_pico_and_festival_and_fall_back_to_espeak(monkeypatch):
    personas = {p.language: p for p in map(load_persona, list_personas())}
    assert isinstance(local_tts(personas["de"]), PicoTTSService)
    assert isinstance(local_tts(personas["cs"]), FestivalTTSService)

    monkeypatch.setattr("services.festival_tts.FESTIVAL_VOICE_DIR", Path("/nonexistent"))
    monkeypatch.setattr("services.pico_tts.PICO_EXECUTABLE", "no-such-pico2wave")
    fallback = local_tts(personas["cs"])
    assert isinstance(fallback, EspeakTTSService) and fallback.voice == "cs"
    fallback = local_tts(personas["de"])
    assert isinstance(fallback, EspeakTTSService) and fallback.voice == "de"
