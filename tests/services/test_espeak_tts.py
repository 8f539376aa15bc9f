"""EspeakTTSService: real espeak-ng synthesis, pipeline frames, errors and cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import run_test
from pipecat.transcriptions.language import Language

from services.espeak_process import (
    ESPEAK_NOT_FOUND_MESSAGE,
    EspeakSynthesisError,
    parse_wav_header,
)
from services.espeak_tts import EspeakTTSService, espeak_voice_for_language

GERMAN = "Guten Tag, heute sprechen wir über das Wetter in Deutschland."
CZECH = "Dobrý den, dnes budeme mluvit o počasí v České republice."
# Minutes of speech: espeak-ng is still writing it (blocked on the full pipe) when cancelled.
LONG_GERMAN = " ".join([GERMAN] * 200)

# A frame's speech is "non-silent" above this RMS (16-bit full scale is 32767).
MIN_SPEECH_RMS = 500.0


def tts_service(voice: str = "de", **kwargs) -> EspeakTTSService:
    kwargs.setdefault("stop_frame_timeout_s", 0.2)
    return EspeakTTSService(settings=EspeakTTSService.Settings(voice=voice), **kwargs)


def with_sample_rate(tts: EspeakTTSService, sample_rate: int) -> EspeakTTSService:
    # What TTSService.setup() does when the pipeline starts, for calling run_tts directly.
    tts._sample_rate = sample_rate
    return tts


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def espeak_children() -> list[str]:
    """Return ``pid state`` of every espeak-ng process whose parent is this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if comm == "espeak-ng" and int(ppid) == os.getpid():
            found.append(f"{entry.name} {state}")
    return found


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.subprocess.Process]:
    """Record every process the service starts."""
    processes: list[asyncio.subprocess.Process] = []
    real_exec = asyncio.create_subprocess_exec

    async def recording_exec(*args, **kwargs):
        proc = await real_exec(*args, **kwargs)
        processes.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording_exec)
    return processes


async def speak(tts: EspeakTTSService, text: str, sample_rate: int) -> Sequence[Frame]:
    down, _ = await run_test(
        Pipeline([tts]),
        frames_to_send=[TTSSpeakFrame(text)],
        pipeline_params=PipelineParams(audio_out_sample_rate=sample_rate),
    )
    return down


@pytest.mark.parametrize("sample_rate", [16000, 24000])
@pytest.mark.parametrize(("voice", "text"), [("de", GERMAN), ("cs", CZECH)])
async def test_sentence_is_spoken_at_the_pipeline_sample_rate(voice, text, sample_rate):
    down = await speak(tts_service(voice), text, sample_rate)

    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert audio
    assert all(f.sample_rate == sample_rate and f.num_channels == 1 for f in audio)
    pcm = b"".join(f.audio for f in audio)
    assert len(pcm) % 2 == 0
    assert len(pcm) / 2 / sample_rate >= 1.0
    assert rms(pcm) > MIN_SPEECH_RMS


async def test_speak_frame_gives_started_audio_stopped():
    down = await speak(tts_service("de"), "Guten Tag, wie geht es Ihnen heute?", 16000)

    kinds = [
        type(f) for f in down if isinstance(f, (TTSStartedFrame, TTSAudioRawFrame, TTSStoppedFrame))
    ]
    assert kinds[0] is TTSStartedFrame
    assert kinds[-1] is TTSStoppedFrame
    assert kinds.count(TTSStartedFrame) == kinds.count(TTSStoppedFrame) == 1
    assert kinds.count(TTSAudioRawFrame) >= 2
    # 40 ms frames: 640 samples at 16 kHz, all but the last.
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert all(len(f.audio) == 1280 for f in audio[:-1])


async def test_text_starting_with_dash_is_spoken_not_read_as_options():
    # As options, -q would silence espeak-ng and --version print its version, not a WAV.
    tts = tts_service("de")
    pcm = b"".join([chunk async for chunk in tts.synthesize("-q --version", 16000)])

    assert len(pcm) / 2 / 16000 >= 0.5
    assert rms(pcm) > MIN_SPEECH_RMS


async def test_unknown_voice_raises_naming_it():
    with pytest.raises(ValueError, match="xx-klingon"):
        tts_service("xx-klingon")


async def test_voice_that_looks_like_an_option_is_refused():
    with pytest.raises(ValueError, match="--stdout"):
        tts_service("--stdout")


async def test_missing_espeak_raises_with_install_hint():
    with pytest.raises(FileNotFoundError) as excinfo:
        tts_service("de", executable="espeak-ng-not-installed")
    assert str(excinfo.value) == ESPEAK_NOT_FOUND_MESSAGE
    assert "apt-get install espeak-ng" in str(excinfo.value)


@pytest.mark.parametrize(
    ("language", "voice"),
    [("de", "de"), ("cs", "cs"), ("en", "en-us"), ("de-AT", "de"), (Language.CS_CZ, "cs")],
)
async def test_language_picks_the_voice(language, voice):
    assert espeak_voice_for_language(language) == voice
    tts = EspeakTTSService(settings=EspeakTTSService.Settings(language=language))
    assert tts.voice == voice


async def test_defaults_are_learner_paced():
    tts = EspeakTTSService(settings=EspeakTTSService.Settings(voice="cs"))
    command = tts.command()
    assert command[command.index("-s") + 1] == "150"
    assert command[command.index("-v") + 1] == "cs"
    assert "--stdin" in command


async def test_rate_out_of_range_is_refused():
    with pytest.raises(ValueError, match="rate_wpm"):
        EspeakTTSService(settings=EspeakTTSService.Settings(voice="de", rate_wpm=20))


async def test_aclose_kills_espeak(spawned):
    tts = tts_service("de")
    chunks = tts.synthesize(LONG_GERMAN, 16000)
    assert await anext(chunks)
    (proc,) = spawned
    assert proc.returncode is None  # still synthesising, blocked on the full pipe

    await chunks.aclose()

    assert proc.returncode == -signal.SIGKILL
    assert espeak_children() == []


async def test_closing_run_tts_kills_espeak(spawned):
    tts = with_sample_rate(tts_service("de"), 24000)
    frames = tts.run_tts(LONG_GERMAN, "context")
    first = await anext(frames)
    assert isinstance(first, TTSAudioRawFrame)

    await frames.aclose()

    (proc,) = spawned
    assert proc.returncode == -signal.SIGKILL
    assert espeak_children() == []


async def test_cancelling_the_task_kills_espeak(spawned, monkeypatch):
    # Pipecat cancels the frame-processing task on an interruption; here it is cancelled
    # while the consumer of run_tts is busy, so the generator sits suspended at a yield.
    tts = with_sample_rate(tts_service("de"), 16000)
    appending = asyncio.Event()

    async def slow_append(context_id, frame):
        appending.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(tts, "append_to_audio_context", slow_append)
    task = asyncio.create_task(
        tts.tts_process_generator("context", tts.run_tts(LONG_GERMAN, "context"))
    )
    await asyncio.wait_for(appending.wait(), timeout=10)
    (proc,) = spawned
    assert proc.returncode is None

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert proc.returncode == -signal.SIGKILL
    assert espeak_children() == []


async def test_finished_synthesis_leaves_no_process(spawned):
    tts = tts_service("cs")
    pcm = b"".join([chunk async for chunk in tts.synthesize(CZECH, 24000)])
    assert pcm
    (proc,) = spawned
    assert proc.returncode == 0
    assert espeak_children() == []


@pytest.fixture
def failing_espeak(tmp_path: Path) -> str:
    """An espeak-ng that loads any voice but fails to synthesise."""
    script = tmp_path / "espeak-ng"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--stdout" ]; then echo "boom: no audio device" >&2; exit 3; fi\n'
        "exit 0\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


async def test_failing_espeak_yields_error_frame(failing_espeak):
    tts = with_sample_rate(tts_service("de", executable=failing_espeak), 16000)

    frames = [frame async for frame in tts.run_tts("Hallo", "context")]

    assert len(frames) == 1
    assert isinstance(frames[0], ErrorFrame)
    assert "boom: no audio device" in frames[0].error
    assert "status 3" in frames[0].error


async def test_failing_espeak_does_not_stop_the_pipeline(failing_espeak):
    tts = tts_service("de", executable=failing_espeak)
    _, up = await run_test(
        Pipeline([tts]),
        frames_to_send=[TTSSpeakFrame("Hallo"), TTSSpeakFrame("Noch einmal")],
        pipeline_params=PipelineParams(audio_out_sample_rate=16000),
    )
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert sum("boom: no audio device" in e for e in errors) == 2


async def test_settings_update_switches_language_and_refuses_unknown_voice():
    tts = tts_service("de")
    _, up = await run_test(
        Pipeline([tts]),
        frames_to_send=[
            TTSUpdateSettingsFrame(delta=EspeakTTSService.Settings(language="cs", rate_wpm=130)),
            TTSUpdateSettingsFrame(delta=EspeakTTSService.Settings(voice="xx-klingon")),
        ],
    )
    assert tts.voice == "cs"
    assert tts.command()[tts.command().index("-s") + 1] == "130"
    assert any("xx-klingon" in f.error for f in up if isinstance(f, ErrorFrame))


def test_wav_header_parses_streamed_header():
    header = (
        b"RIFF\xff\xff\xff\x7fWAVE"
        + b"fmt \x10\x00\x00\x00"
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + (22050).to_bytes(4, "little")
        + (44100).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data\xff\xff\xff\x7f"
    )
    assert parse_wav_header(header[:20]) is None
    assert parse_wav_header(header) == (22050, 44)
    with pytest.raises(EspeakSynthesisError):
        parse_wav_header(b"eSpeak NG text-to-speech: 1.51")
