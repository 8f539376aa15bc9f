"""Pipecat's real OpenAI and Anthropic LLM services against the loopback provider fakes.

Each test runs the service in a pipeline, sends one context per turn, and checks what the
service pushes: the reply text, the usage metrics, and how each injected fault surfaces.
The SDKs' own retries (2 by default, on 5xx/429/connection errors before the response starts)
are part of what is observed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from anthropic import AsyncAnthropic
from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame, LLMTextFrame
from pipecat.metrics.metrics import LLMUsageMetricsData
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.anthropic.llm import AnthropicLLMService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.errors import ErrorCategory

from testkit.providers.anthropic_fake import AnthropicFake
from testkit.providers.base import FakeProvider, WireFault
from testkit.providers.openai_fake import OpenAIFake, text_chunks
from testkit.providers.pipeline_probe import ServiceProbe, run_service

QUESTION = "What is the CTAF frequency?"  # 5 words


def echo(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if not isinstance(content, str):
        content = " ".join(part.get("text", "") for part in content)
    return f"Roger, {content} Tune 122.8 on the CTAF."


REPLY = echo({"messages": [{"content": QUESTION}]})
CHUNKS = text_chunks(REPLY)


@dataclass
class Rig:
    fake: FakeProvider
    route: str
    build: Callable[..., Any]

    def fake_usage(self) -> tuple[int, int]:
        if isinstance(self.fake, OpenAIFake):
            u = self.fake.last_usage or {}
            return u["prompt_tokens"], u["completion_tokens"]
        assert isinstance(self.fake, AnthropicFake) and self.fake.usage
        return self.fake.usage["input_tokens"], self.fake.usage["output_tokens"]


@pytest.fixture(params=["openai", "anthropic"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    openai = OpenAIFake(reply=echo, retry_after_s=0.2)
    anthropic = AnthropicFake(reply=echo, retry_after_s=0.2)

    def build_openai(**kw: Any) -> OpenAILLMService:
        return OpenAILLMService(api_key="test", base_url=openai.base_url, **kw)

    def build_anthropic(**kw: Any) -> AnthropicLLMService:
        client = AsyncAnthropic(api_key="test", base_url=anthropic.base_url)
        return AnthropicLLMService(api_key="test", client=client, **kw)

    if request.param == "openai":
        rig = Rig(openai, "chat", build_openai)
    else:
        rig = Rig(anthropic, "messages", build_anthropic)
    rig.fake.hang_s = 2.5
    async with rig.fake:
        yield rig


async def ask(probe: ServiceProbe) -> int:
    context = LLMContext(messages=[{"role": "user", "content": QUESTION}])
    return await probe.send(LLMContextFrame(context))


async def ended(probe: ServiceProbe, mark: int, within: float = 15.0) -> bool:
    return await probe.wait_for(lambda: bool(probe.of(LLMFullResponseEndFrame, mark)), within)


def text(probe: ServiceProbe, mark: int) -> str:
    return "".join(f.text for f in probe.of(LLMTextFrame, mark))


def usage(probe: ServiceProbe, mark: int) -> list[tuple[int, int]]:
    data = probe.usage(LLMUsageMetricsData, mark)
    return [(d.value.prompt_tokens, d.value.completion_tokens) for d in data]


async def served_normally(rig: Rig, probe: ServiceProbe) -> None:
    """The request after a fault gets the whole reply and no error."""
    mark = await ask(probe)
    assert await ended(probe, mark)
    assert text(probe, mark) == REPLY
    assert not probe.errors(mark)
    assert usage(probe, mark) == [rig.fake_usage()]


async def test_reply_streams_as_text_frames_and_usage_matches_the_fake(rig: Rig) -> None:
    async with run_service(rig.build()) as probe:
        mark = await ask(probe)
        assert await ended(probe, mark)
        assert [f.text for f in probe.of(LLMTextFrame, mark)] == CHUNKS
        assert text(probe, mark) == REPLY
        assert rig.fake_usage() == (5, len(CHUNKS))
        assert usage(probe, mark) == [(5, len(CHUNKS))]
        assert not probe.errors()
    body = rig.fake.served(rig.route)[0].body
    assert body["stream"] is True
    if rig.route == "chat":
        assert body["stream_options"] == {"include_usage": True}


async def test_out_of_band_inference_uses_the_non_streaming_reply(rig: Rig) -> None:
    context = LLMContext(messages=[{"role": "user", "content": QUESTION}])
    assert await rig.build().run_inference(context) == REPLY
    assert not rig.fake.served(rig.route)[0].body.get("stream")


async def test_one_5xx_is_retried_by_the_sdk_and_never_reaches_the_pipeline(rig: Rig) -> None:
    rig.fake.inject(rig.route, WireFault.HTTP_5XX)
    async with run_service(rig.build()) as probe:
        mark = await ask(probe)
        assert await ended(probe, mark)
        assert text(probe, mark) == REPLY
        assert not probe.errors()
    assert len(rig.fake.served(rig.route)) == 2


@pytest.mark.parametrize(
    "fault, status, category",
    [
        (WireFault.HTTP_5XX, "500", ErrorCategory.SERVER),
        (WireFault.HTTP_429, "429", ErrorCategory.RATE_LIMIT),
    ],
)
async def test_http_error_outlasting_sdk_retries_pushes_one_error_frame(
    rig: Rig, fault: WireFault, status: str, category: ErrorCategory
) -> None:
    service = rig.build()
    rig.fake.inject(rig.route, fault, times=3)  # the first try and the SDK's 2 retries
    async with run_service(service) as probe:
        mark = await ask(probe)
        assert await ended(probe, mark)
        assert text(probe, mark) == ""
        [error] = probe.errors(mark)
        assert error.category is category
        assert f"Error code: {status}" in error.error
        assert usage(probe, mark) == []
        assert len(rig.fake.served(rig.route)) == 3
        assert service.is_usable
        await served_normally(rig, probe)


async def test_anthropic_529_overloaded_is_a_server_error() -> None:
    async with AnthropicFake(reply=REPLY, status_5xx=529) as fake:
        fake.inject("messages", WireFault.HTTP_5XX, times=3)
        client = AsyncAnthropic(api_key="test", base_url=fake.base_url)
        async with run_service(AnthropicLLMService(api_key="test", client=client)) as probe:
            mark = await ask(probe)
            assert await ended(probe, mark)
            [error] = probe.errors(mark)
            assert error.category is ErrorCategory.SERVER
            assert "overloaded_error" in error.error


@pytest.mark.parametrize(
    "fault", [WireFault.DISCONNECT, WireFault.GARBAGE, WireFault.PROVIDER_ERROR]
)
async def test_mid_stream_fault_keeps_partial_text_and_pushes_one_error_frame(
    rig: Rig, fault: WireFault
) -> None:
    rig.fake.inject(rig.route, fault, after=2)
    async with run_service(rig.build()) as probe:
        mark = await ask(probe)
        assert await ended(probe, mark)
        assert text(probe, mark) == "".join(CHUNKS[:2])
        [error] = probe.errors(mark)
        assert error.category is ErrorCategory.UNKNOWN
        prompt, _ = rig.fake_usage()
        # OpenAI sends usage only in the last chunk; Anthropic's message_start carried
        # input_tokens and output_tokens 1, which Pipecat reports for the cut-off turn.
        assert usage(probe, mark) == ([] if rig.route == "chat" else [(prompt, 1)])
        assert len(rig.fake.served(rig.route)) == 1  # a started stream is never retried
        await served_normally(rig, probe)


async def test_disconnect_after_last_chunk_is_still_an_error_not_a_clean_end(rig: Rig) -> None:
    rig.fake.inject(rig.route, WireFault.DISCONNECT, after=len(CHUNKS))
    async with run_service(rig.build()) as probe:
        mark = await ask(probe)
        assert await ended(probe, mark)
        assert text(probe, mark) == REPLY
        assert len(probe.errors(mark)) == 1


async def test_hang_before_headers_stalls_silently_until_the_provider_answers(rig: Rig) -> None:
    rig.fake.inject(rig.route, WireFault.HANG)
    async with run_service(rig.build()) as probe:
        mark = await ask(probe)
        assert not await ended(probe, mark, within=1.5)
        assert text(probe, mark) == "" and not probe.errors(mark)
        assert await ended(probe, mark)  # hang_s = 2.5: the late answer is used
        assert text(probe, mark) == REPLY
        await served_normally(rig, probe)


async def test_hang_before_headers_with_retry_on_timeout_reissues_the_request(rig: Rig) -> None:
    rig.fake.inject(rig.route, WireFault.HANG)
    service = rig.build(retry_on_timeout=True, retry_timeout_secs=0.5)
    async with run_service(service) as probe:
        mark = await ask(probe)
        assert await ended(probe, mark)
        assert text(probe, mark) == REPLY and not probe.errors(mark)
        assert len(rig.fake.served(rig.route)) == 2


async def test_mid_stream_hang_stalls_even_with_retry_on_timeout(rig: Rig) -> None:
    rig.fake.inject(rig.route, WireFault.HANG, after=2)
    service = rig.build(retry_on_timeout=True, retry_timeout_secs=0.5)
    async with run_service(service) as probe:
        mark = await ask(probe)
        assert not await ended(probe, mark, within=1.5)
        assert text(probe, mark) == "".join(CHUNKS[:2]) and not probe.errors(mark)
        assert len(rig.fake.served(rig.route)) == 1
        assert await ended(probe, mark)
        assert text(probe, mark) == REPLY


async def test_anthropic_service_ignores_a_base_url_keyword() -> None:
    # Pipecat's AnthropicLLMService has no base_url: the keyword is swallowed, so tests
    # (and the failover code) must pass client=AsyncAnthropic(base_url=...).
    service = AnthropicLLMService(api_key="test", base_url="http://127.0.0.1:9")
    assert "api.anthropic.com" in str(service._client.base_url)
