"""The usage meter on Pipecat's real provider services, against the loopback provider fakes.

Each test runs one real service in a pipeline with the meter writing to a real store, and
checks that the stored rows equal what the fake counted (tokens, characters, audio seconds)
and that the cost is the fake's count times the price in ``config/prices.yaml``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from anthropic import AsyncAnthropic
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    TextFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyFailover
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.anthropic.llm import AnthropicLLMService
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.deepgram.tts import DeepgramTTSService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.tests.utils import SleepFrame, run_test

from config.prices import load_prices
from observers.usage_meter import (
    UsageMeterObserver,
    provider_map,
    provider_of,
    usage_observer,
)
from services.text_only_tts import TextOnlyTTSService
from store import Store, UsageEventInfo
from testkit.providers import ws_faults
from testkit.providers.anthropic_fake import AnthropicFake
from testkit.providers.cartesia_fake import CartesiaFake
from testkit.providers.deepgram_fake import DeepgramFake
from testkit.providers.openai_fake import OpenAIFake
from testkit.providers.pipeline_probe import run_service

PRICES = load_prices()
StoreSession = tuple[Store, str]
RATE = 16000
SENTENCE = "Check the METAR before you go."
QUESTION = "What is the CTAF frequency?"


@dataclass
class Metered:
    store: Store
    session_id: str
    meter: UsageMeterObserver
    rows: list[UsageEventInfo] = field(default_factory=list)

    async def cost(self) -> Decimal:
        report = await self.store.usage_report("session", PRICES)
        [group] = report.groups
        assert group.unpriced == 0
        return group.cost


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[tuple[Store, str]]:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}")
    key, _ = await store.create_api_key("usage")
    learner = await store.create_learner(key.id, "Jana", "en")
    s, _ = await store.create_session(learner.id, key.id, "aviation-examiner", "dpe_live", "webrtc")
    yield store, s.id
    await store.close()


async def wait_until(done: Callable[[], bool], within: float = 20.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not done():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def metered_run(
    session: tuple[Store, str],
    service: FrameProcessor,
    frames: list[Frame],
    done: Callable[[UsageMeterObserver], bool],
    *more: tuple[list[Frame], Callable[[UsageMeterObserver], bool]],
    services: Any = None,
    **params: Any,
) -> Metered:
    """Run ``service`` alone with the session's meter, send ``frames``, end when ``done``.

    ``more`` are further ``(frames, done)`` steps, each sent once the previous one is done.
    """
    store, session_id = session
    meter = usage_observer(store, session_id, services)
    async with run_service(service, observers=[meter], **params) as probe:
        for step_frames, step_done in [(frames, done), *more]:
            await probe.send(*step_frames)
            assert await wait_until(partial(step_done, meter)), f"{meter.rows_written} rows"
    await meter.flush()
    return Metered(store, session_id, meter, await store.list_usage_events(session_id))


def rows_of(m: Metered) -> list[tuple[str, str, str, str, float]]:
    return [(r.service, r.provider, r.model, r.metric, r.quantity) for r in m.rows]


def ask() -> LLMContextFrame:
    return LLMContextFrame(LLMContext(messages=[{"role": "user", "content": QUESTION}]))


# -- LLM tokens -----------------------------------------------------------------------------


async def test_openai_llm_tokens_are_stored_as_the_fake_counted_them(
    session: StoreSession,
) -> None:
    async with OpenAIFake() as fake:
        llm = OpenAILLMService(
            api_key="test",
            base_url=fake.base_url,
            settings=OpenAILLMService.Settings(model="gpt-4.1-mini"),
        )
        m = await metered_run(session, llm, [ask()], lambda meter: meter.rows_written >= 2)
    usage = fake.last_usage
    assert usage is not None and usage["prompt_tokens"] == 5
    assert rows_of(m) == [
        ("llm", "openai", "gpt-4.1-mini", "prompt_tokens", usage["prompt_tokens"]),
        ("llm", "openai", "gpt-4.1-mini", "completion_tokens", usage["completion_tokens"]),
    ]
    hand = usage["prompt_tokens"] * Decimal("0.40") + usage["completion_tokens"] * Decimal("1.60")
    assert await m.cost() == hand / 1_000_000


async def test_anthropic_llm_tokens_are_stored_as_the_fake_counted_them(
    session: StoreSession,
) -> None:
    async with AnthropicFake() as fake:
        llm = AnthropicLLMService(
            api_key="test",
            client=AsyncAnthropic(api_key="test", base_url=fake.base_url),
            settings=AnthropicLLMService.Settings(model="claude-sonnet-4-6", max_tokens=100),
        )
        m = await metered_run(session, llm, [ask()], lambda meter: meter.rows_written >= 2)
    assert fake.usage is not None
    assert rows_of(m) == [
        ("llm", "anthropic", "claude-sonnet-4-6", "prompt_tokens", fake.usage["input_tokens"]),
        ("llm", "anthropic", "claude-sonnet-4-6", "completion_tokens", fake.usage["output_tokens"]),
    ]
    hand = fake.usage["input_tokens"] * 3 + fake.usage["output_tokens"] * 15
    assert await m.cost() == Decimal(hand) / 1_000_000


# -- STT audio seconds ----------------------------------------------------------------------


def utterance(ms: int) -> list[Frame]:
    tone = ws_faults.tone_pcm16(RATE * ms // 1000, RATE)
    chunks = ws_faults.chunks(tone, 2 * RATE // 50)
    return [
        VADUserStartedSpeakingFrame(),
        *[InputAudioRawFrame(c, RATE, 1) for c in chunks],
        VADUserStoppedSpeakingFrame(),
    ]


async def test_deepgram_stt_seconds_are_the_audio_the_fake_received(
    session: StoreSession,
) -> None:
    async with DeepgramFake() as fake:
        stt = DeepgramSTTService(
            api_key="dg-key",
            base_url=fake.base_url,
            settings=DeepgramSTTService.Settings(model="nova-3-general"),
        )
        m = await metered_run(
            session,
            stt,
            utterance(400),
            lambda meter: meter.rows_written >= 1,
            (utterance(600), lambda meter: meter.rows_written >= 2),
            audio_in_sample_rate=RATE,
        )
        [listen] = fake.listen_sessions
    assert [r[:4] for r in rows_of(m)] == [
        ("stt", "deepgram", "nova-3-general", "audio_seconds")
    ] * 2
    assert [r.quantity for r in m.rows] == [pytest.approx(0.4), pytest.approx(0.6)]
    assert sum(r.quantity for r in m.rows) == pytest.approx(listen.audio_seconds, abs=1e-9)
    assert await m.cost() == Decimal("0.0077") / 60  # 1.000000 s of Nova-3


async def test_openai_stt_seconds_are_the_audio_uploaded_with_its_padding(
    session: StoreSession,
) -> None:
    async with OpenAIFake(transcript="Cleared to land.") as fake:
        stt = OpenAISTTService(
            api_key="test",
            base_url=fake.base_url,
            settings=OpenAISTTService.Settings(model="gpt-4o-transcribe"),
        )
        m = await metered_run(
            session, stt, utterance(500), lambda meter: meter.rows_written >= 1,
            audio_in_sample_rate=RATE,
        )  # fmt: skip
    uploaded = fake.usage["transcriptions"]["audio_seconds"]
    assert uploaded > 0.5  # the segment is padded with silence before upload
    [row] = rows_of(m)
    assert row[:4] == ("stt", "openai", "gpt-4o-transcribe", "audio_seconds")
    assert row[4] == pytest.approx(uploaded, abs=1e-6)


# -- TTS characters -------------------------------------------------------------------------


@pytest.mark.parametrize("hooked", ["by the tier services", "when the pipeline sets it up"])
async def test_deepgram_websocket_tts_characters_are_metered_from_the_text_sent(
    session: StoreSession, hooked: str
) -> None:
    # Pipecat 1.14's websocket DeepgramTTSService reports no character usage of its own.
    async with DeepgramFake() as fake:
        tts = DeepgramTTSService(
            api_key="dg-key", base_url=fake.base_url, sample_rate=RATE, stop_frame_timeout_s=0.3
        )
        m = await metered_run(
            session,
            tts,
            [TTSSpeakFrame(SENTENCE), TTSSpeakFrame("Then tune the VOR.")],
            lambda meter: meter.rows_written >= 2,
            services=_Single(tts, "deepgram") if hooked.startswith("by") else None,
        )
        flushes = [f for s in fake.speak_sessions for f in s.flushes]
    assert [f.characters for f in flushes] == [len(SENTENCE) + 1, len("Then tune the VOR.") + 1]
    model = "aura-2-helena-en"  # Pipecat's default voice, which is Deepgram's model
    assert [s.query["model"] for s in fake.speak_sessions] == [[model]]
    assert rows_of(m) == [("tts", "deepgram", model, "characters", f.characters) for f in flushes]
    assert await m.cost() == Decimal(sum(f.characters for f in flushes)) * Decimal("0.030") / 1000


async def test_cartesia_tts_characters_equal_what_the_fake_bills(
    session: StoreSession,
) -> None:
    async with CartesiaFake() as fake:
        tts = CartesiaTTSService(
            api_key="ca-key",
            url=fake.url,
            sample_rate=RATE,
            stop_frame_timeout_s=0.3,
            settings=CartesiaTTSService.Settings(
                voice="a0e99841-438c-4a64-b679-ae501e7d6091", model="sonic-3"
            ),
        )
        m = await metered_run(
            session, tts, [TTSSpeakFrame(SENTENCE)], lambda meter: meter.rows_written >= 1
        )
        [context] = fake.contexts
    assert rows_of(m) == [("tts", "cartesia", "sonic-3", "characters", context.characters)]
    assert await m.cost() == Decimal(context.characters) * Decimal("0.039") / 1000


async def test_openai_tts_characters_equal_what_the_fake_bills(
    session: StoreSession,
) -> None:
    async with OpenAIFake() as fake:
        tts = OpenAITTSService(
            api_key="test",
            base_url=fake.base_url,
            settings=OpenAITTSService.Settings(model="gpt-4o-mini-tts", voice="onyx"),
        )
        m = await metered_run(
            session, tts, [TTSSpeakFrame(SENTENCE)], lambda meter: meter.rows_written >= 1,
            audio_out_sample_rate=24000,
        )  # fmt: skip
    characters = fake.usage["speech"]["characters"]
    assert rows_of(m) == [("tts", "openai", "gpt-4o-mini-tts", "characters", characters)]


# -- provider names ---------------------------------------------------------------------------


@dataclass
class _Single:
    """The shape of ``pipelines.tiers.TierServices`` for one TTS service."""

    service: FrameProcessor
    name: str

    @property
    def stt(self) -> list[FrameProcessor]:
        return []

    @property
    def llm(self) -> list[FrameProcessor]:
        return []

    @property
    def tts(self) -> list[FrameProcessor]:
        return [self.service]

    @property
    def providers(self) -> dict[str, list[str]]:
        return {"tts": [self.name]}


@dataclass
class _Tier:
    stt: list[FrameProcessor]
    llm: list[FrameProcessor]
    tts: list[FrameProcessor]
    providers: dict[str, list[str]]


def test_providers_come_from_the_tier_chain_then_from_the_service_module() -> None:
    deepgram = DeepgramSTTService(api_key="k")
    openai_stt = OpenAISTTService(api_key="k")
    local_llm = OpenAILLMService(api_key="local", base_url="http://127.0.0.1:9/v1")
    text = TextOnlyTTSService()
    tier = _Tier(
        stt=[ServiceSwitcher([deepgram, openai_stt], ServiceSwitcherStrategyFailover)],
        llm=[local_llm],
        tts=[text],
        providers={"stt": ["deepgram", "openai"], "llm": ["local"], "tts": ["text"]},
    )
    names = provider_map(tier)
    assert [provider_of(s, names) for s in (deepgram, openai_stt, local_llm, text)] == [
        "deepgram",
        "openai",
        "local",  # an OpenAI client pointed at llama.cpp: only the chain knows
        "text",
    ]
    assert [provider_of(s) for s in (deepgram, openai_stt, local_llm, text)] == [
        "deepgram",
        "openai",
        "openai",
        "text",
    ]
    assert provider_of(object()) == "unknown"


class ReportingService(FrameProcessor):
    """Reports fixed usage, as a real service would, for every ``TextFrame`` it gets."""

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame):
            tokens = LLMTokenUsage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
            await self.start_llm_usage_metrics(tokens)
            await self.start_tts_usage_metrics(frame.text)
        await self.push_frame(frame, direction)


async def test_service_metrics_records_become_rows_in_order_despite_a_failed_write() -> None:
    written: list[tuple[str, str, str, float]] = []

    async def flaky(row: Any) -> None:
        await asyncio.sleep(0.02 if row.metric == "prompt_tokens" else 0)  # slow first write
        if row.metric == "completion_tokens":
            raise RuntimeError("database went away")
        written.append((row.service, row.provider, row.metric, row.quantity))

    service = ReportingService()
    meter = UsageMeterObserver(flaky, {id(service): "anthropic"})
    await run_test(
        service,
        frames_to_send=[TextFrame("twelve chars"), SleepFrame(0.2)],
        observers=[meter],
        pipeline_params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
    )
    await meter.flush()
    assert written == [
        ("llm", "anthropic", "prompt_tokens", 7),
        ("tts", "anthropic", "characters", 12),
    ]
    assert meter.rows_written == 2
