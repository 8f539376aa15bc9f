"""TTS failover with Pipecat's real TTS services against the loopback provider fakes.

Chains of the tiers: dpe_live's Cartesia → Deepgram → OpenAI (websocket faults on Cartesia:
refused handshake 5xx/429, hang, dropped connection, garbage, in-band error), and
ground_school's OpenAI → text-only (HTTP faults on OpenAI's speech endpoint). The reply must
come out once, in order, with the sentence that failed spoken whole by the backup.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pipecat.frames.frames import (
    AggregatedTextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.tts import DeepgramTTSService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.tests.utils import SleepFrame, run_test

from processors.failover.groups import failover_tts
from services.text_only_tts import TextOnlyTTSService
from testkit.failover_rig import POLICY, REPLY, SENTENCES
from testkit.providers.base import WireFault
from testkit.providers.cartesia_fake import CartesiaFake
from testkit.providers.deepgram_fake import DeepgramFake
from testkit.providers.openai_fake import OpenAIFake

RATE = 16000
MS_PER_CHAR = 5  # fast fakes: a sentence is 0.15-0.25 s of audio
FAST: dict[str, Any] = {
    "sample_rate": RATE,
    "stop_frame_timeout_s": 0.3,
}
WS_FAST: dict[str, Any] = {
    **FAST,
    "reconnect_backoff_min_wait": 0.05,
    "reconnect_backoff_max_wait": 0.1,
}


def reply_frames(wait: float) -> list:
    return [
        LLMFullResponseStartFrame(),
        *[AggregatedTextFrame(s, "sentence") for s in SENTENCES],
        LLMFullResponseEndFrame(),
        SleepFrame(wait),
    ]


def spoken_text(down: list) -> str:
    """Everything the TTS group said, as text (Cartesia reports words, the others sentences)."""
    return " ".join(f.text.strip() for f in down if isinstance(f, TTSTextFrame))


def notices(down: list) -> list[dict]:
    return [f.data for f in down if isinstance(f, RTVIServerMessageFrame)]


async def run_group(group: list, wait: float) -> tuple[list, list]:
    switches: list = []

    async def on_switch(*args: str) -> None:
        switches.append(args)

    group[0].on_switch = on_switch
    down, _ = await run_test(Pipeline(group), frames_to_send=reply_frames(wait), start_timeout=10)
    return down, switches


CARTESIA_FAULTS = {
    WireFault.HTTP_5XX: {"server_error"},
    WireFault.HTTP_429: {"rate_limit"},
    WireFault.HANG: {"timeout", "no_audio", "disconnect"},  # silent socket, closed after 1 s
    WireFault.DISCONNECT: {"disconnect", "truncated", "timeout"},
    WireFault.GARBAGE: {"disconnect", "truncated", "timeout"},
    WireFault.PROVIDER_ERROR: {"error", "server_error"},
}


@pytest.mark.parametrize("fault", list(CARTESIA_FAULTS))
async def test_cartesia_fault_mid_reply_goes_to_deepgram_and_nothing_is_lost(fault):
    async with CartesiaFake() as cartesia, DeepgramFake() as deepgram, OpenAIFake() as openai:
        for fake in (cartesia, deepgram, openai):
            fake.ms_per_char = MS_PER_CHAR
        cartesia.hang_s = 1.0
        # Mid-reply: 3 chunks into the second sentence (websocket faults strike chunk n of the
        # connection); a refusal lasts, so Pipecat's reconnect on demand is refused too.
        first = -(-cartesia.samples(SENTENCES[0], RATE) // (RATE * cartesia.chunk_ms // 1000))
        refusal = fault in (WireFault.HTTP_5XX, WireFault.HTTP_429)
        cartesia.inject("tts", fault, after=first + 3, times=10 if refusal else 1)
        settings = CartesiaTTSService.Settings(voice="a0e99841", model="sonic-3")
        group = failover_tts(
            [
                (
                    "cartesia",
                    CartesiaTTSService(api_key="k", url=cartesia.url, settings=settings, **WS_FAST),
                ),
                (
                    "deepgram",
                    DeepgramTTSService(api_key="k", base_url=deepgram.base_url, **WS_FAST),
                ),
                ("openai", OpenAITTSService(api_key="k", base_url=openai.base_url, **FAST)),
            ],
            POLICY,
        )
        down, switches = await run_group(group, wait=2.5)
    assert spoken_text(down) == REPLY
    finished_by_cartesia = {
        t for s in cartesia.sessions for c in s.contexts.values() if c.done for t in c.transcripts
    }
    by_deepgram = [f.text.strip() for s in deepgram.speak_sessions for f in s.flushes]
    assert sorted(by_deepgram) == sorted(set(by_deepgram))  # none twice
    assert set(SENTENCES) - finished_by_cartesia <= set(by_deepgram)
    assert SENTENCES[1] in by_deepgram or refusal or fault is WireFault.HANG
    assert openai.served("speech") == []
    [notice] = notices(down)
    assert (notice["from"], notice["to"]) == ("cartesia", "deepgram")
    assert notice["reason"] in CARTESIA_FAULTS[fault]
    assert switches == [("tts", "cartesia", "deepgram", notice["reason"])]


OPENAI_FAULTS = {
    # times: enough to outlast the SDK's 2 retries (and, for 429, the policy's 3). The SDK's
    # 5xx retries (0.5 s, 1 s) outlast the tests' 0.3 s context timeout, so the empty context
    # may be seen before the error (with Pipecat's 3 s default the error comes first).
    WireFault.HTTP_5XX: (3, {"server_error", "no_audio"}),
    WireFault.HTTP_429: (12, {"rate_limit"}),
    WireFault.DISCONNECT: (1, {"disconnect"}),
    WireFault.HANG: (1, {"truncated", "no_audio"}),  # Pipecat reads in chunks: maybe none yet
}


@pytest.mark.parametrize("fault", list(OPENAI_FAULTS))
async def test_openai_speech_fault_mid_reply_falls_back_to_text(fault):
    times, reasons = OPENAI_FAULTS[fault]
    async with OpenAIFake(ms_per_char=MS_PER_CHAR, retry_after_s=0.05) as openai:
        openai.hang_s = 5.0
        ok = openai.audio_bytes_for(SENTENCES[0]) // openai.chunk_bytes
        text = TextOnlyTTSService()
        group = failover_tts(
            [
                ("openai", OpenAITTSService(api_key="k", base_url=openai.base_url, **FAST)),
                ("text", text),
            ],
            POLICY,
        )
        served: list[int] = []
        original = openai.take_fault

        def take_fault(route: str):  # fail from the second sentence on
            served.append(1)
            return original(route) if len(served) > 1 else None

        openai.take_fault = take_fault  # type: ignore[method-assign]
        openai.inject("speech", fault, after=min(ok, 1), times=times)
        down, switches = await run_group(group, wait=2.5)
    assert spoken_text(down) == REPLY
    assert text.sentences[0] == SENTENCES[1] and text.sentences.count(SENTENCES[1]) == 1
    inputs = [r.body["input"] for r in openai.served("speech") if isinstance(r.body, dict)]
    assert inputs[0] == SENTENCES[0]
    [notice] = notices(down)
    assert (notice["role"], notice["from"], notice["to"]) == ("tts", "openai", "text")
    assert notice["reason"] in reasons
    assert switches == [("tts", "openai", "text", notice["reason"])]
    assert re.sub(r"\s+", " ", spoken_text(down)).count(SENTENCES[1]) == 1
