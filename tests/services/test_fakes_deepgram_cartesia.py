"""Pipecat's real Deepgram STT/TTS and Cartesia TTS services against the loopback fakes.

Each test runs the service in a pipeline (``run_test``), speaks or synthesizes, and checks what
the service pushes and what the fake recorded. The fault tests pin down what Pipecat 1.14 does
for each injected fault: the error frames it pushes, whether it reconnects, whether it stays
usable, and which audio or transcript is lost.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from typing import Any

import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import STTUsageMetricsData, TTSUsageMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram import stt as deepgram_stt
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.deepgram.tts import DeepgramTTSService
from pipecat.tests.utils import SleepFrame, run_test

from testkit.providers import ws_faults
from testkit.providers.base import WireFault
from testkit.providers.cartesia_fake import CartesiaFake
from testkit.providers.deepgram_fake import DeepgramFake

RATE = 16000
CHUNK_BYTES = 2 * RATE * 40 // 1000  # the fakes' 40 ms audio messages
S1, S2 = "Check the METAR before you go.", "Then tune the VOR."
VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"
FAST_RECONNECT: dict[str, Any] = {
    "reconnect_backoff_min_wait": 0.05,
    "reconnect_backoff_max_wait": 0.1,
    "stop_frame_timeout_s": 0.3,
}


@pytest.fixture(autouse=True)
def fast_stt_backoff(monkeypatch):
    # DeepgramSTTService waits exponential_backoff_time(n) >= 4 s between connection attempts
    # and takes no setting for it; the retry logic itself is unchanged.
    monkeypatch.setattr(deepgram_stt, "exponential_backoff_time", lambda *a, **k: 0.05)


def audio_frames(pcm: bytes) -> list[Frame]:
    return [InputAudioRawFrame(c, RATE, 1) for c in ws_faults.chunks(pcm, 2 * RATE // 50)]


def utterance(ms: int = 400) -> list[Frame]:
    tone = ws_faults.tone_pcm16(RATE * ms // 1000, RATE)
    return [VADUserStartedSpeakingFrame(), *audio_frames(tone), VADUserStoppedSpeakingFrame()]


def stt(fake: DeepgramFake) -> DeepgramSTTService:
    settings = DeepgramSTTService.Settings(model="nova-3-general", keyterm=["METAR", "VOR"])
    return DeepgramSTTService(api_key="dg-key", base_url=fake.base_url, settings=settings)


def deepgram_tts(fake: DeepgramFake) -> DeepgramTTSService:
    return DeepgramTTSService(
        api_key="dg-key", base_url=fake.base_url, sample_rate=RATE, **FAST_RECONNECT
    )


def cartesia_tts(fake: CartesiaFake) -> CartesiaTTSService:
    settings = CartesiaTTSService.Settings(voice=VOICE, model="sonic-3")
    return CartesiaTTSService(
        api_key="ca-key", url=fake.url, sample_rate=RATE, settings=settings, **FAST_RECONNECT
    )


def transcripts(down: Sequence[Frame]) -> list[TranscriptionFrame]:
    return [f for f in down if isinstance(f, TranscriptionFrame)]


def errors(up: Sequence[Frame]) -> list[str]:
    return [f.error for f in up if isinstance(f, ErrorFrame)]


def usage(down: Sequence[Frame], kind: type[STTUsageMetricsData | TTSUsageMetricsData]) -> list:
    data = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    return [d.value for d in data if isinstance(d, kind)]


USAGE = PipelineParams(enable_metrics=True, enable_usage_metrics=True)


def audio_per_context(down: Sequence[Frame]) -> list[int]:
    """Bytes of TTS audio per context, in the order the contexts started."""
    sizes: dict[str | None, int] = {}
    for f in down:
        if isinstance(f, TTSAudioRawFrame):
            sizes[f.context_id] = sizes.get(f.context_id, 0) + len(f.audio)
    return list(sizes.values())


# --- Deepgram listen ----------------------------------------------------------------------


async def test_deepgram_stt_transcribes_each_finalized_turn_and_fake_sees_keyterms():
    async with DeepgramFake() as fake:
        service = stt(fake)
        down, up = await run_test(
            service,
            frames_to_send=[*utterance(), SleepFrame(0.6), *utterance(600), SleepFrame(0.6)],
            pipeline_params=USAGE,
        )
    frames = transcripts(down)
    assert [f.text for f in frames] == [fake.transcript, fake.transcript]
    assert all(f.finalized for f in frames)
    assert errors(up) == []
    [session] = fake.listen_sessions
    assert session.keyterms == ["METAR", "VOR"]
    assert session.param("model") == "nova-3-general"
    assert session.param("language") == "en"
    assert (session.sample_rate, session.param("encoding")) == (RATE, "linear16")
    assert session.headers["authorization"] == "Token dg-key"
    assert session.audio_bytes == 2 * RATE * (400 + 600) // 1000
    assert session.audio_seconds == pytest.approx(1.0, abs=1e-9)
    assert session.finalizes == 2 and session.closed_stream
    # Pipecat reports the audio it streamed, one report per final transcript: what the fake got.
    billed = [u.audio_seconds for u in usage(down, STTUsageMetricsData)]
    assert billed == [pytest.approx(0.4, abs=1e-9), pytest.approx(0.6, abs=1e-9)]
    assert sum(billed) == pytest.approx(session.audio_seconds, abs=1e-9)


async def test_deepgram_fake_endpoints_after_300_ms_of_silence_without_finalize():
    speech = ws_faults.tone_pcm16(RATE // 2, RATE)
    silence = bytes(2 * RATE * 600 // 1000)
    async with DeepgramFake() as fake:
        down, _ = await run_test(
            stt(fake), frames_to_send=[*audio_frames(speech + silence), SleepFrame(0.6)]
        )
    [frame] = transcripts(down)
    assert frame.text == fake.transcript and not frame.finalized
    [session] = fake.listen_sessions
    assert session.transcripts == [fake.transcript] and session.finalizes == 0


async def test_deepgram_stt_behind_silero_vad_transcribes_real_speech_once(librivox):
    clip = next(p for p in librivox if "0880" in p.name)
    with wave.open(str(clip)) as w:
        assert (w.getframerate(), w.getnchannels()) == (RATE, 1)
        pcm = w.readframes(w.getnframes()) + bytes(2 * RATE * 800 // 1000)
    async with DeepgramFake(transcript=librivox[clip]) as fake:
        vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.2)))
        down, _ = await run_test(
            Pipeline([vad, stt(fake)]), frames_to_send=[*audio_frames(pcm), SleepFrame(0.5)]
        )
    assert [f.text for f in transcripts(down)] == [librivox[clip]]
    assert any(isinstance(f, VADUserStoppedSpeakingFrame) for f in down)
    [session] = fake.listen_sessions
    assert session.finalizes >= 1 and session.audio_bytes == len(pcm)


# fault -> (error text, turns transcribed of 2, still usable). The listen fault strikes the
# first Results message; HANG holds the first connection 0.5 s, then closes it with 1011.
STT_FAULTS = {
    WireFault.HTTP_5XX: ("status_code: 503", 2, True),  # retried at once, nothing lost
    WireFault.HTTP_429: ("status 429", 0, False),  # any 4xx: no retry, service unusable
    WireFault.HANG: ("1011", 1, True),  # turn 1 lost silently; error only when the server closes
    WireFault.DISCONNECT: ("1011", 1, True),
    WireFault.GARBAGE: ("Expecting value", 1, True),  # SDK's json.loads fails; reconnects
    WireFault.PROVIDER_ERROR: ("1011", 1, True),
}


@pytest.mark.parametrize("fault", list(STT_FAULTS))
async def test_deepgram_stt_fault_surfaces_as_pinned_and_the_fake_serves_again(fault):
    error, heard, usable = STT_FAULTS[fault]
    async with DeepgramFake() as fake:
        fake.hang_s = 0.5
        fake.inject("listen", fault)
        service = stt(fake)
        down, up = await run_test(
            service,
            frames_to_send=[*utterance(), SleepFrame(1.2), *utterance(), SleepFrame(0.4)],
            start_timeout=10,
        )
    assert any(error in e for e in errors(up)), errors(up)
    assert [f.text for f in transcripts(down)] == [fake.transcript] * heard
    assert service.is_usable is usable
    if heard:  # the connection after the fault is served normally, on the fake's side too
        assert fake.listen_sessions[-1].transcripts == [fake.transcript] * heard


async def test_deepgram_stt_gives_up_after_three_refused_connections():
    async with DeepgramFake() as fake:
        fake.inject("listen", WireFault.HTTP_5XX, times=3)
        service = stt(fake)
        down, up = await run_test(service, frames_to_send=[*utterance()], start_timeout=10)
    assert len(fake.served("listen")) == 3 and fake.listen_sessions == []
    assert "failed to stay up 3 times" in errors(up)[-1]
    assert not service.is_usable and transcripts(down) == []


# --- TTS: Deepgram speak and Cartesia ----------------------------------------------------


async def test_deepgram_tts_audio_length_follows_characters():
    async with DeepgramFake() as fake:
        down, up = await run_test(
            deepgram_tts(fake),
            frames_to_send=[TTSSpeakFrame(S1), SleepFrame(0.5)],
            pipeline_params=USAGE,
        )
    [session] = fake.speak_sessions
    [flush] = session.flushes
    assert flush.text == S1 + " "  # Pipecat appends a space to each sentence
    assert flush.characters == len(S1) + 1 and flush.flushed
    assert audio_per_context(down) == [2 * fake.speak_samples(S1 + " ", RATE)]
    assert flush.audio_bytes == 2 * fake.speak_samples(S1 + " ", RATE)
    assert session.query["sample_rate"] == [str(RATE)]
    assert session.query["model"] == ["aura-2-helena-en"]
    assert session.headers["authorization"] == "Token dg-key"
    assert errors(up) == []
    # Pipecat 1.14's websocket DeepgramTTSService never reports character usage (only the HTTP
    # one does), so the characters billed must come from elsewhere, e.g. the text it was sent.
    assert usage(down, TTSUsageMetricsData) == []


async def test_cartesia_tts_audio_and_word_timestamps_follow_characters():
    async with CartesiaFake() as fake:
        down, up = await run_test(
            cartesia_tts(fake),
            frames_to_send=[TTSSpeakFrame(S1), SleepFrame(0.5)],
            pipeline_params=USAGE,
        )
    [context] = fake.contexts
    first = context.requests[0]
    assert first["model_id"] == "sonic-3" and first["voice"] == {"mode": "id", "id": VOICE}
    assert first["output_format"] == {
        "container": "raw",
        "encoding": "pcm_s16le",
        "sample_rate": RATE,
    }
    assert first["language"] == "en" and first["add_timestamps"] is True
    assert context.transcripts == [S1] and context.characters == len(S1) and context.done
    assert audio_per_context(down) == [2 * fake.samples(S1, RATE)] == [context.audio_bytes]
    assert [f.text for f in down if isinstance(f, TTSTextFrame)] == S1.split()
    headers = fake.sessions[0].headers
    assert headers["x-api-key"] == "ca-key" and headers["cartesia-version"]
    assert errors(up) == []
    assert usage(down, TTSUsageMetricsData) == [context.characters]


# fault -> (error text or None for no ErrorFrame, sentence-1 audio, connections accepted).
# Sentence-1 audio: "full", "cut" (the fake sent 3 chunks) or "none". Sentence 2 is always whole.
DEEPGRAM_TTS_FAULTS: dict[WireFault, tuple[str | None, str, int]] = {
    WireFault.HTTP_5XX: ("HTTP 503", "full", 1),  # run_tts reconnects on demand
    WireFault.HTTP_429: ("HTTP 429", "full", 1),
    WireFault.HANG: ("completed with no audio", "none", 1),  # + reconnect when the server closes
    WireFault.DISCONNECT: ("1011", "cut", 2),
    WireFault.GARBAGE: (None, "cut", 1),  # logged only; the context times out with partial audio
    WireFault.PROVIDER_ERROR: ("1011", "cut", 2),
}
CARTESIA_TTS_FAULTS: dict[WireFault, tuple[str | None, str, int]] = {
    WireFault.HTTP_5XX: ("HTTP 503", "full", 1),
    WireFault.HTTP_429: ("HTTP 429", "full", 1),
    WireFault.HANG: ("completed with no audio", "none", 1),
    WireFault.DISCONNECT: (None, "cut", 2),  # silent reconnect, no ErrorFrame
    WireFault.GARBAGE: (None, "cut", 2),  # json.loads fails in the receive loop: silent reconnect
    WireFault.PROVIDER_ERROR: ("fake provider error", "cut", 1),  # in-band error, socket kept
}
TTS_CASES = [("deepgram", f, *v) for f, v in DEEPGRAM_TTS_FAULTS.items()] + [
    ("cartesia", f, *v) for f, v in CARTESIA_TTS_FAULTS.items()
]


@pytest.mark.parametrize(("provider", "fault", "error", "first", "connections"), TTS_CASES)
async def test_tts_fault_surfaces_as_pinned_and_the_next_sentence_is_whole(
    provider, fault, error, first, connections
):
    fake = DeepgramFake() if provider == "deepgram" else CartesiaFake()
    route = "speak" if provider == "deepgram" else "tts"
    async with fake:
        fake.hang_s = 0.5
        fake.inject(route, fault, after=3)
        service = deepgram_tts(fake) if isinstance(fake, DeepgramFake) else cartesia_tts(fake)
        frames = [TTSSpeakFrame(S1), SleepFrame(1.2), TTSSpeakFrame(S2), SleepFrame(0.6)]
        down, up = await run_test(service, frames_to_send=frames, start_timeout=10)
    if isinstance(fake, DeepgramFake):
        whole = [2 * fake.speak_samples(s + " ", RATE) for s in (S1, S2)]
        accepted = len(fake.speak_sessions)
    else:
        whole = [2 * fake.samples(s, RATE) for s in (S1, S2)]
        accepted = len(fake.sessions)
    expected_first = {"full": [whole[0]], "cut": [3 * CHUNK_BYTES], "none": []}[first]
    assert audio_per_context(down) == [*expected_first, whole[1]]
    if error is None:
        assert errors(up) == []
    else:
        assert any(error in e for e in errors(up)), errors(up)
    assert accepted == connections
    assert service.is_usable


@pytest.mark.parametrize("provider", ["deepgram", "cartesia"])
async def test_tts_server_that_stays_silent_is_written_off_after_three_sentences(provider):
    fake = DeepgramFake() if provider == "deepgram" else CartesiaFake()
    async with fake:
        fake.inject("speak" if provider == "deepgram" else "tts", WireFault.HANG)
        service = deepgram_tts(fake) if isinstance(fake, DeepgramFake) else cartesia_tts(fake)
        frames: list[Frame] = []
        for text in (S1, S2, S1):
            frames += [TTSSpeakFrame(text), SleepFrame(0.5)]
        down, up = await run_test(service, frames_to_send=frames)
    assert audio_per_context(down) == []
    assert errors(up)[-1] == "3 consecutive TTS contexts completed with no audio"
    assert not service.is_usable


@pytest.mark.parametrize("provider", ["deepgram", "cartesia"])
async def test_tts_interruption_stops_the_fake_mid_sentence(provider):
    fake = DeepgramFake() if provider == "deepgram" else CartesiaFake()
    async with fake:
        fake.chunk_delay_s = 0.03  # 40 ms of audio every 30 ms: S1 takes about 1.2 s
        service = deepgram_tts(fake) if isinstance(fake, DeepgramFake) else cartesia_tts(fake)
        frames = [TTSSpeakFrame(S1), SleepFrame(0.5), InterruptionFrame(), SleepFrame(0.5)]
        down, _ = await run_test(service, frames_to_send=frames)
    if isinstance(fake, DeepgramFake):
        [session] = fake.speak_sessions
        assert session.clears == 1 and session.flushes[0].cleared
        sent = session.flushes[0].audio_bytes
        whole = 2 * fake.speak_samples(S1 + " ", RATE)
    else:
        [context] = fake.contexts
        assert context.cancelled and not context.done
        sent, whole = context.audio_bytes, 2 * fake.samples(S1, RATE)
    assert 0 < sent < whole
    assert sum(audio_per_context(down)) <= sent


# A connection that dies within 5 s of opening is a "quick failure" (QuickFailureTracker):
# three in a row and the service gives up for good.
QUICK_DROPS = {
    "deepgram-stt": ("listen", "failed to stay up 3 times in a row"),
    "deepgram-tts": ("speak", "failed 3 times immediately after connecting"),
    "cartesia-tts": ("tts", "failed 3 times immediately after connecting"),
}


def build(service_name: str, fake: Any) -> Any:
    if service_name == "cartesia-tts":
        return cartesia_tts(fake)
    return deepgram_tts(fake) if service_name == "deepgram-tts" else stt(fake)


@pytest.mark.parametrize("service_name", list(QUICK_DROPS))
async def test_three_quick_drops_in_a_row_make_the_service_unusable(service_name):
    route, error = QUICK_DROPS[service_name]
    fake = CartesiaFake() if service_name == "cartesia-tts" else DeepgramFake()
    async with fake:
        # STT: each connection drops at its first result; TTS: after 2 chunks of audio.
        fake.inject(route, WireFault.DISCONNECT, after=0 if route == "listen" else 2, times=3)
        service = build(service_name, fake)
        frames: list[Frame] = []
        for text in (S1, S2, S1, S2):
            frames += utterance() if route == "listen" else [TTSSpeakFrame(text)]
            frames.append(SleepFrame(0.6))
        down, up = await run_test(service, frames_to_send=frames, start_timeout=10)
    assert any(error in e for e in errors(up)), errors(up)
    assert not service.is_usable
    assert len(fake.served(route)) == 3  # no fourth connection is attempted
