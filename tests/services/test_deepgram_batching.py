"""voxtutor's Deepgram STT sends 100 ms websocket messages and loses no audio, no turn end.

:class:`services.deepgram_stt.BatchedDeepgramSTTService` against the loopback Deepgram fake:
real speech behind Silero VAD is transcribed once with a tenth of Pipecat's messages per
second of audio, and the audio held when the VAD stops reaches Deepgram before ``Finalize``.
"""

from __future__ import annotations

import math
import wave

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.tests.utils import SleepFrame, run_test

from services.deepgram_stt import SEND_MS, BatchedDeepgramSTTService
from testkit.providers import ws_faults
from testkit.providers.deepgram_fake import DeepgramFake

RATE = 16000
CHUNK = 2 * RATE // 50  # 20 ms, as WebRTC and the phone serializers deliver it


def frames(pcm: bytes) -> list[Frame]:
    return [InputAudioRawFrame(c, RATE, 1) for c in ws_faults.chunks(pcm, CHUNK)]


def batched(fake: DeepgramFake) -> BatchedDeepgramSTTService:
    settings = DeepgramSTTService.Settings(model="nova-3-general", interim_results=True)
    return BatchedDeepgramSTTService(api_key="dg-key", base_url=fake.base_url, settings=settings)


async def test_real_speech_is_transcribed_once_in_100_ms_messages(librivox):
    clip = next(p for p in librivox if "0880" in p.name)
    with wave.open(str(clip)) as w:
        pcm = w.readframes(w.getnframes()) + bytes(2 * RATE * 800 // 1000)
    async with DeepgramFake(transcript=librivox[clip]) as fake:
        vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.2)))
        down, _ = await run_test(
            Pipeline([vad, batched(fake)]), frames_to_send=[*frames(pcm), SleepFrame(0.5)]
        )
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == [librivox[clip]]
    [session] = fake.listen_sessions
    assert session.finalizes >= 1
    # Every byte arrived (the tail at the service's stop), in 100 ms messages, not 20 ms ones.
    assert session.audio_bytes == len(pcm)
    per_message = 2 * RATE * SEND_MS // 1000
    assert session.audio_messages <= math.ceil(len(pcm) / per_message) + session.finalizes
    assert session.audio_messages < len(pcm) / CHUNK / 4


async def test_held_audio_reaches_deepgram_before_finalize():
    # 330 ms of speech: 30 ms of it is still held when the VAD stops.
    speech = ws_faults.tone_pcm16(RATE * 330 // 1000, RATE)
    turn = [VADUserStartedSpeakingFrame(), *frames(speech), VADUserStoppedSpeakingFrame()]
    async with DeepgramFake() as fake:
        down, _ = await run_test(batched(fake), frames_to_send=[*turn, SleepFrame(0.6)])
    [session] = fake.listen_sessions
    assert session.finalized_at == [len(speech)]
    assert session.audio_messages == 4  # 100 + 100 + 100 + the 30 ms flushed at the stop
    [final] = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert final.finalized and final.text == fake.transcript
