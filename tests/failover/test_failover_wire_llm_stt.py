"""LLM and STT failover with Pipecat's real services against the loopback provider fakes.

LLM: Anthropic → OpenAI → local (OpenAI-compatible, as the local tier's llama.cpp server). The
primary's SDK client has ``max_retries=0``, so the failover policy is the only retry layer
(the SDK's own 2 retries, 0.5 s and 1 s apart, would otherwise run inside the TTFB watchdog's
time). STT: Deepgram →
OpenAI (segmented). Faults: 5xx and 429 outlasting the SDK's retries, hang, a stream dropped
or garbled mid-reply (LLM) or at the first result (STT).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from anthropic import AsyncAnthropic
from pipecat.frames.frames import (
    InputAudioRawFrame,
    LLMContextFrame,
    LLMTextFrame,
    STTMetadataFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame
from pipecat.services.anthropic.llm import AnthropicLLMService
from pipecat.services.deepgram import stt as deepgram_stt
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.tests.utils import SleepFrame, run_test

from processors.failover.deferred import deferred
from processors.failover.groups import failover_llm, failover_stt
from processors.failover.llm import CONTINUE_PROMPT
from testkit.failover_rig import POLICY, REPLY, message_text, reply
from testkit.providers import ws_faults
from testkit.providers.anthropic_fake import AnthropicFake
from testkit.providers.base import WireFault
from testkit.providers.deepgram_fake import DeepgramFake
from testkit.providers.openai_fake import OpenAIFake

RATE = 16000


def notices(down: list) -> list[dict]:
    return [f.data for f in down if isinstance(f, RTVIServerMessageFrame)]


async def run_group(group: list, frames: list, **params: Any) -> tuple[list, list]:
    switches: list = []

    async def on_switch(*args: str) -> None:
        switches.append(args)

    group[0].on_switch = on_switch
    down, _ = await run_test(
        Pipeline(group),
        frames_to_send=frames,
        start_timeout=10,
        pipeline_params=PipelineParams(**params),
    )
    return down, switches


LLM_FAULTS = {
    # fault: (after, times, reason)
    WireFault.HTTP_5XX: (0, 1, "server_error"),
    WireFault.HTTP_429: (0, 20, "rate_limit"),  # lasts through the policy's backoff
    WireFault.HANG: (0, 1, "timeout"),
    WireFault.DISCONNECT: (8, 1, "disconnect"),
    WireFault.GARBAGE: (8, 1, "malformed"),
}


@pytest.mark.parametrize("fault", list(LLM_FAULTS))
async def test_anthropic_fault_is_taken_over_by_openai_and_the_reply_comes_out_once(fault):
    after, times, reason = LLM_FAULTS[fault]
    async with (
        AnthropicFake(reply=reply, retry_after_s=0.05) as anthropic,
        OpenAIFake(reply=reply) as openai,
        OpenAIFake(reply=reply) as local,
    ):
        anthropic.hang_s = 5.0
        anthropic.inject("messages", fault, after=after, times=times)
        client = AsyncAnthropic(api_key="k", base_url=anthropic.base_url, max_retries=0)
        group = failover_llm(
            [
                ("anthropic", AnthropicLLMService(api_key="k", client=client)),
                ("openai", OpenAILLMService(api_key="k", base_url=openai.base_url)),
                ("local", OpenAILLMService(api_key="none", base_url=local.base_url)),
            ],
            POLICY,
        )
        context = LLMContext(messages=[{"role": "user", "content": "What first?"}])
        down, switches = await run_group(group, [LLMContextFrame(context), SleepFrame(2.5)])
        bodies = [r.body for r in openai.served("chat")]
    assert "".join(f.text for f in down if isinstance(f, LLMTextFrame)) == REPLY
    [body] = bodies
    if after:  # cut mid-reply: the backup was asked to continue the words already out
        assert message_text(body["messages"][-1]["content"]) == CONTINUE_PROMPT
        assert REPLY.startswith(message_text(body["messages"][-2]["content"]))
    else:
        assert message_text(body["messages"][-1]["content"]) == "What first?"
    assert local.served("chat") == []
    assert notices(down) == [
        {
            "type": "provider-switch",
            "role": "llm",
            "from": "anthropic",
            "to": "openai",
            "reason": reason,
        }
    ]
    assert switches == [("llm", "anthropic", "openai", reason)]


@pytest.fixture
def fast_deepgram_reconnect(monkeypatch):
    # DeepgramSTTService waits >= 4 s between connection attempts and takes no setting for it.
    monkeypatch.setattr(deepgram_stt, "exponential_backoff_time", lambda *a, **k: 0.05)


def audio(ms: int) -> list[InputAudioRawFrame]:
    pcm = ws_faults.tone_pcm16(RATE * ms // 1000, RATE)
    return [InputAudioRawFrame(c, RATE, 1) for c in ws_faults.chunks(pcm, 2 * RATE // 50)]


STT_FAULTS = {
    # Refusals strike the connection at start, before the learner speaks; the others strike
    # the first result of the utterance. After a 429 Pipecat's Deepgram STT gives up (any 4xx
    # leaves it unusable) and never reconnects on its own: the policy's retry finds it deaf
    # and the watchdog switches when the utterance gets no transcript.
    WireFault.HTTP_5XX: {"server_error"},
    WireFault.HTTP_429: {"rate_limit", "timeout"},
    WireFault.HANG: {"timeout"},
    WireFault.DISCONNECT: {"disconnect"},
    WireFault.GARBAGE: {"malformed"},
}
SPEECH_MS = 1200


@pytest.mark.parametrize(
    ("fault", "deferred_backup"),
    [(fault, False) for fault in STT_FAULTS]
    + [(WireFault.DISCONNECT, True), (WireFault.HANG, True)],
)
async def test_deepgram_fault_and_openai_transcribes_the_whole_utterance(
    fault, deferred_backup, fast_deepgram_reconnect
):
    """``deferred_backup``: OpenAI is built on first use, as a tier's chains build it."""
    async with DeepgramFake() as deepgram, OpenAIFake(retry_after_s=0.05) as openai:
        deepgram.hang_s = 5.0
        deepgram.inject("listen", fault, times=20 if fault is WireFault.HTTP_429 else 1)
        settings = DeepgramSTTService.Settings(model="nova-3-general")

        def backup() -> OpenAISTTService:
            return OpenAISTTService(api_key="k", base_url=openai.base_url)

        group = failover_stt(
            [
                (
                    "deepgram",
                    DeepgramSTTService(api_key="k", base_url=deepgram.base_url, settings=settings),
                ),
                (
                    "openai",
                    deferred("stt", backup, modules=(), provider="openai")
                    if deferred_backup
                    else backup(),
                ),
            ],
            POLICY,
        )
        frames = [
            SleepFrame(1.0),  # a refused connection is noticed at start
            *audio(300),
            VADUserStartedSpeakingFrame(start_secs=0.2),
            *audio(SPEECH_MS),
            VADUserStoppedSpeakingFrame(stop_secs=0.2),
            SleepFrame(2.0),
        ]
        down, switches = await run_group(group, frames, audio_in_sample_rate=RATE)
        uploads = [r.body for r in openai.served("transcriptions")]
    transcripts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert transcripts == [openai.transcript]
    # The upload held the whole utterance (plus Pipecat's 0.5 s of trailing silence).
    [upload] = uploads
    seconds = (upload["audio_bytes"] - 44) / 2 / RATE
    assert seconds >= SPEECH_MS / 1000 + 0.5 and math.isfinite(seconds)
    # The rest of the pipeline heard every chunk of audio once.
    assert sum(isinstance(f, InputAudioRawFrame) for f in down) == len(audio(300 + SPEECH_MS))
    [notice] = notices(down)
    assert (notice["role"], notice["from"], notice["to"]) == ("stt", "deepgram", "openai")
    assert notice["reason"] in STT_FAULTS[fault]
    # The user turn logic learns the backup's latency once it takes over (Pipecat's switcher
    # asks the new service for its metadata and lets only the active one's out).
    [switcher] = group
    metadata = [f for f in down if isinstance(f, STTMetadataFrame)]
    assert metadata and metadata[-1].service_name == switcher.services[1].name
    assert switches == [("stt", "deepgram", "openai", notice["reason"])]
