"""Pipecat's real OpenAITTSService and OpenAISTTService against the loopback OpenAI fake.

TTS: a TTSSpeakFrame per turn; the audio Pipecat pushes is compared with the fake's
characters-to-bytes rule. STT (segmented, VAD-driven): VAD start, 1 s of audio frames, VAD
stop per turn, as a transport plus VAD would send them; the fake measures the uploaded WAV.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import STTUsageMetricsData, TTSUsageMetricsData
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.utils.errors import ErrorCategory

from testkit.providers.base import WireFault
from testkit.providers.openai_fake import OpenAIFake
from testkit.providers.pipeline_probe import ServiceProbe, run_service

SPOKEN = "Hello there, pilot."  # 19 characters
PCM_CHUNK = 24_000  # bytes: Pipecat reads OpenAI speech in 0.5 s chunks (TTSService.chunk_size)
IN_RATE = 16_000
SPEECH_S = 1.0
TRAILING_S = 0.5  # SegmentedSTTService pads each segment with 0.5 s of silence


@pytest.fixture
async def fake() -> AsyncIterator[OpenAIFake]:
    async with OpenAIFake(retry_after_s=0.2) as f:
        f.hang_s = 2.0
        yield f


def tts(fake: OpenAIFake, **kw: Any) -> OpenAITTSService:
    return OpenAITTSService(api_key="test", base_url=fake.base_url, **kw)


def stt(fake: OpenAIFake, model: str = "gpt-4o-transcribe") -> OpenAISTTService:
    settings = OpenAISTTService.Settings(model=model)
    return OpenAISTTService(api_key="test", base_url=fake.base_url, settings=settings)


def audio_bytes(probe: ServiceProbe, mark: int = 0) -> bytes:
    return b"".join(f.audio for f in probe.of(TTSAudioRawFrame, mark))


async def speak(probe: ServiceProbe, within: float = 10.0) -> int:
    mark = await probe.send(TTSSpeakFrame(SPOKEN))
    assert await probe.wait_for(lambda: bool(probe.of(TTSStoppedFrame, mark)), within)
    return mark


def utterance() -> list[Frame]:
    pcm = struct.pack("<h", 800) * int(IN_RATE * SPEECH_S)
    chunks = [pcm[i : i + 640] for i in range(0, len(pcm), 640)]  # 20 ms frames
    return [
        VADUserStartedSpeakingFrame(start_secs=0.2),
        *(InputAudioRawFrame(c, IN_RATE, 1) for c in chunks),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
    ]


async def transcribe(probe: ServiceProbe, within: float = 10.0) -> int:
    mark = await probe.send(*utterance())
    settled = lambda: bool(probe.of(TranscriptionFrame, mark) or probe.errors(mark))  # noqa: E731
    assert await probe.wait_for(settled, within)
    return mark


# -- TTS --------------------------------------------------------------------------------------


async def test_tts_audio_length_and_usage_follow_the_characters(fake: OpenAIFake) -> None:
    async with run_service(tts(fake), audio_out_sample_rate=24_000) as probe:
        mark = await speak(probe)
        audio = audio_bytes(probe, mark)
        assert len(audio) == fake.audio_bytes_for(SPOKEN) == 19 * 2400
        assert max(abs(s) for (s,) in struct.iter_unpack("<h", audio[:4800])) > 500
        assert [d.value for d in probe.usage(TTSUsageMetricsData, mark)] == [len(SPOKEN)]
        assert fake.usage["speech"]["characters"] == len(SPOKEN)
        assert not probe.errors()
    [req] = fake.served("speech")
    assert req.body["input"] == SPOKEN and req.body["response_format"] == "pcm"


@pytest.mark.parametrize("fault", [WireFault.HTTP_5XX, WireFault.HTTP_429])
async def test_tts_http_error_once_is_retried_by_the_sdk(
    fake: OpenAIFake, fault: WireFault
) -> None:
    fake.inject("speech", fault)
    async with run_service(tts(fake), audio_out_sample_rate=24_000) as probe:
        mark = await speak(probe)
        assert len(audio_bytes(probe, mark)) == fake.audio_bytes_for(SPOKEN)
        assert not probe.errors()
    assert len(fake.served("speech")) == 2


@pytest.mark.parametrize(
    "fault, status", [(WireFault.HTTP_5XX, "500"), (WireFault.HTTP_429, "429")]
)
async def test_tts_http_error_outlasting_retries_pushes_errors_and_no_audio(
    fake: OpenAIFake, fault: WireFault, status: str
) -> None:
    fake.inject("speech", fault, times=3)
    service = tts(fake)
    async with run_service(service, audio_out_sample_rate=24_000) as probe:
        mark = await speak(probe)
        assert audio_bytes(probe, mark) == b""
        errors = probe.errors(mark)
        assert f"Error code: {status}" in errors[0].error
        assert errors[0].category is ErrorCategory.UNKNOWN  # escapes run_tts unclassified
        assert "completed with no audio" in errors[-1].error
        assert service.is_usable
        mark = await speak(probe)
        assert len(audio_bytes(probe, mark)) == fake.audio_bytes_for(SPOKEN)


async def test_tts_disconnect_keeps_whole_read_chunks_then_errors(fake: OpenAIFake) -> None:
    fake.inject("speech", WireFault.DISCONNECT, after=6)  # 6 x 4,800 bytes sent, then cut
    async with run_service(tts(fake), audio_out_sample_rate=24_000) as probe:
        mark = await speak(probe)
        assert len(audio_bytes(probe, mark)) == PCM_CHUNK  # the partial second chunk is lost
        [error] = probe.errors(mark)
        assert "incomplete chunked read" in error.error
        mark = await speak(probe)
        assert len(audio_bytes(probe, mark)) == fake.audio_bytes_for(SPOKEN)
    assert len(fake.served("speech")) == 2


async def test_tts_garbage_body_is_played_as_audio_without_error(fake: OpenAIFake) -> None:
    fake.inject("speech", WireFault.GARBAGE, after=2)
    async with run_service(tts(fake), audio_out_sample_rate=24_000) as probe:
        mark = await speak(probe)
        audio = audio_bytes(probe, mark)
        assert audio[2 * 4800 :].startswith(b"<html><body><h1>502 Bad Gateway")
        assert len(audio) < fake.audio_bytes_for(SPOKEN)
        assert not probe.errors()


async def test_tts_hang_past_stop_timeout_errors_then_plays_the_late_audio(
    fake: OpenAIFake,
) -> None:
    fake.inject("speech", WireFault.HANG)  # hang_s 2.0 > stop_frame_timeout_s 1.0
    async with run_service(tts(fake, stop_frame_timeout_s=1.0), audio_out_sample_rate=24_000) as p:
        mark = await p.send(TTSSpeakFrame(SPOKEN))
        assert await p.wait_for(lambda: bool(p.errors(mark)), 5)
        [error] = p.errors(mark)
        assert "completed with no audio" in error.error and audio_bytes(p, mark) == b""
        full = fake.audio_bytes_for(SPOKEN)
        assert await p.wait_for(lambda: len(audio_bytes(p, mark)) == full, 5)
        assert len(p.of(TTSStoppedFrame, mark)) >= 1


# -- STT --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, usage_type", [("gpt-4o-transcribe", "tokens"), ("whisper-1", "duration")]
)
async def test_stt_segment_is_transcribed_and_seconds_match(
    fake: OpenAIFake, model: str, usage_type: str
) -> None:
    async with run_service(stt(fake, model), audio_in_sample_rate=IN_RATE) as probe:
        mark = await transcribe(probe)
        [frame] = probe.of(TranscriptionFrame, mark)
        assert frame.text == fake.transcript and frame.finalized
        assert frame.result.usage.type == usage_type
        assert fake.usage["transcriptions"]["audio_seconds"] == SPEECH_S + TRAILING_S
        [metered] = probe.usage(STTUsageMetricsData, mark)
        assert metered.value.audio_seconds == fake.usage["transcriptions"]["audio_seconds"]
    [req] = fake.served("transcriptions")
    assert req.body["model"] == model and req.body["language"] == "en"
    assert req.body["audio_bytes"] == 44 + int((SPEECH_S + TRAILING_S) * IN_RATE) * 2


@pytest.mark.parametrize("fault", [WireFault.HTTP_5XX, WireFault.HTTP_429, WireFault.DISCONNECT])
async def test_stt_fault_once_is_retried_by_the_sdk(fake: OpenAIFake, fault: WireFault) -> None:
    fake.inject("transcriptions", fault)
    async with run_service(stt(fake), audio_in_sample_rate=IN_RATE) as probe:
        mark = await transcribe(probe)
        assert [f.text for f in probe.of(TranscriptionFrame, mark)] == [fake.transcript]
        assert not probe.errors()
    assert len(fake.served("transcriptions")) == 2


@pytest.mark.parametrize(
    "fault, times, says",
    [
        (WireFault.HTTP_5XX, 3, "Error code: 500"),
        (WireFault.HTTP_429, 3, "Error code: 429"),
        (WireFault.DISCONNECT, 3, "Connection error"),
        (WireFault.GARBAGE, 1, "Unterminated string"),
    ],
)
async def test_stt_fault_pushes_an_error_frame_but_audio_is_still_metered(
    fake: OpenAIFake, fault: WireFault, times: int, says: str
) -> None:
    fake.inject("transcriptions", fault, times=times)
    service = stt(fake)
    async with run_service(service, audio_in_sample_rate=IN_RATE) as probe:
        mark = await transcribe(probe)
        [error] = probe.errors(mark)
        assert says in error.error and error.category is ErrorCategory.UNKNOWN
        assert probe.of(TranscriptionFrame, mark) == []
        [metered] = probe.usage(STTUsageMetricsData, mark)
        assert metered.value.audio_seconds == SPEECH_S + TRAILING_S
        assert len(fake.served("transcriptions")) == times
        assert service.is_usable
        mark = await transcribe(probe)
        assert [f.text for f in probe.of(TranscriptionFrame, mark)] == [fake.transcript]


async def test_stt_hang_delays_the_transcript_without_error(fake: OpenAIFake) -> None:
    fake.inject("transcriptions", WireFault.HANG)
    async with run_service(stt(fake), audio_in_sample_rate=IN_RATE) as probe:
        mark = await probe.send(*utterance())
        settled = lambda: bool(probe.of(TranscriptionFrame, mark) or probe.errors(mark))  # noqa: E731
        assert not await probe.wait_for(settled, 1.2)
        assert await probe.wait_for(settled, 10)
        assert [f.text for f in probe.of(TranscriptionFrame, mark)] == [fake.transcript]
        assert not probe.errors(mark)
