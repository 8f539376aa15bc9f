"""A cascaded tier's failover groups, as ``build_tier_services`` builds them, on the wire fakes.

dpe_live for the Czech tutor: Deepgram → OpenAI → local Whisper hears, Claude → OpenAI → local
answers, Cartesia → OpenAI → espeak-ng → text-only speaks (Aura-2 has no Czech voice). Each
link is the real Pipecat service talking to a loopback fake of its provider
(``testkit/providers/``). A fault on the primary TTS or LLM in the middle of the reply must leave
the learner with the whole reply, each sentence once, one ``provider-switch`` RTVI message and
one ``on_switch`` call.
"""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from config.personas import load_persona
from config.settings import Settings
from pipelines.tiers import build_tier_services
from processors.failover.deferred import DeferredService
from processors.failover.groups import FailoverLLMSwitcher, FailoverSwitcher
from processors.failover.llm import CONTINUE_PROMPT
from services.piper_tts import LocalPiperTTSService
from services.text_only_tts import TextOnlyTTSService
from services.whisper_stt import LocalWhisperSTTService
from testkit.failover_rig import (
    POLICY,
    REPLY,
    SENTENCES,
    Run,
    message_text,
    reply,
    run_session,
    user_says,
)
from testkit.providers.anthropic_fake import AnthropicFake
from testkit.providers.base import WireFault
from testkit.providers.cartesia_fake import CartesiaFake
from testkit.providers.deepgram_fake import DeepgramFake
from testkit.providers.openai_fake import OpenAIFake

RATE = 16000
"""The rig's output rate, at which Cartesia is asked to speak."""
MS_PER_CHAR = 8
"""Fast fake voices: a sentence is 0.2-0.4 s of audio (the rig's policy expects 8 ms/char)."""
FAILOVER = replace(POLICY, cooldown_s=60.0)
"""The default policy at a tenth, but no return to the primary while the test runs."""


def sdk_retries(service: Any) -> int:
    """``max_retries`` of the OpenAI/Anthropic SDK client a Pipecat service calls."""
    return int(service._client.max_retries)


def heard(run: Run) -> str:
    """The reply as it reached the speaker (Cartesia reports words, the others sentences)."""
    return re.sub(r"\s+", " ", " ".join(t.strip() for t in run.watch.sentences)).strip()


def switch_messages(run: Run) -> list[dict]:
    """``provider-switch`` RTVI server messages that reached the output transport."""
    return [
        m["data"]
        for m in run.watch.rtvi
        if m.get("type") == "server-message" and m["data"].get("type") == "provider-switch"
    ]


async def _run_dpe_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault_on: str) -> dict:
    """Run one learner turn on dpe_live with ``fault_on`` (tts or llm) failing mid-reply."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.setenv(name, f"test-{name.lower()}")
    switches: list[tuple[str, str, str, str]] = []

    async def on_switch(role: str, old: str, new: str, reason: str) -> None:
        switches.append((role, old, new, reason))

    async with AsyncExitStack() as stack:
        anthropic = await stack.enter_async_context(AnthropicFake(reply=reply))
        openai = await stack.enter_async_context(OpenAIFake(reply=reply, ms_per_char=MS_PER_CHAR))
        deepgram = await stack.enter_async_context(DeepgramFake())
        cartesia = await stack.enter_async_context(CartesiaFake())
        cartesia.ms_per_char = MS_PER_CHAR
        if fault_on == "tts":
            # Three chunks into the second sentence, the Cartesia websocket drops.
            first = -(-cartesia.samples(SENTENCES[0], RATE) // (RATE * cartesia.chunk_ms // 1000))
            cartesia.inject("tts", WireFault.DISCONNECT, after=first + 3)
        else:
            # Eight tokens into the reply (inside the second sentence), Claude's stream drops.
            anthropic.inject("messages", WireFault.DISCONNECT, after=8)
        settings = Settings(
            home=Path.home() / ".cache" / "voxtutor",
            openai_base_url=openai.base_url,
            anthropic_base_url=anthropic.base_url,
            deepgram_base_url=deepgram.base_url,
            cartesia_url=cartesia.url,
        )
        services = build_tier_services(
            "dpe_live",
            load_persona("czech-tutor"),
            settings,
            local_base_url=openai.base_url,
            on_switch=on_switch,
            policy=FAILOVER,
        )
        run = await run_session(
            tmp_path,
            [user_says("Co mám udělat před letem?"), 3.0],
            stt=services.stt,
            llm=services.llm,
            tts=services.tts,
        )
        by_cartesia = [
            (t, c.done)
            for s in cartesia.sessions
            for c in s.contexts.values()
            for t in c.transcripts
        ]
        speech = [r.body["input"] for r in openai.served("speech") if isinstance(r.body, dict)]
        chats = [r.body for r in openai.served("chat")]
    return {
        "run": run,
        "services": services,
        "switches": switches,
        "by_cartesia": by_cartesia,
        "speech": speech,
        "chats": chats,
    }


async def test_dpe_live_groups_are_our_failover_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.setenv(name, f"test-{name.lower()}")
    settings = Settings(home=Path.home() / ".cache" / "voxtutor")
    services = build_tier_services("dpe_live", load_persona("czech-tutor"), settings)
    [stt], [llm], [tts] = services.stt, services.llm, services.tts
    assert isinstance(stt, FailoverSwitcher) and isinstance(tts, FailoverSwitcher)
    assert isinstance(llm, FailoverLLMSwitcher)
    assert [stt.provider(s) for s in stt.services] == ["deepgram", "openai", "local"]
    assert [llm.provider(s) for s in llm.services] == ["anthropic", "openai", "local"]
    # No Czech Aura-2 voice; the text-only link ends the chain.
    assert [tts.provider(s) for s in tts.services] == ["cartesia", "openai", "local", "text"]
    assert services.providers["tts"] == ["cartesia", "openai", "local", "text"]
    # The default policy's numbers when no policy is given.
    assert (tts.policy.ttfb_timeout_s, tts.policy.request_cap_s) == (5.0, 20.0)
    assert tts.policy.rate_limit_backoff_s == (1.0, 2.0, 4.0)
    # Backups are built when a failover first reaches them; the text-only voice costs nothing.
    backups = [*stt.services[1:], *llm.services[1:], *tts.services[1:3]]
    assert all(isinstance(s, DeferredService) and not s.built for s in backups)
    assert isinstance(tts.services[3], TextOnlyTTSService)
    # SDK retries are off where a backup stands behind the link, kept on the last SDK link.
    anthropic = llm.services[0]
    openai_llm, local_llm = (s.factory() for s in llm.services[1:])
    assert sdk_retries(anthropic) == 0 and sdk_retries(openai_llm) == 0
    assert sdk_retries(local_llm) == 2  # the OpenAI SDK's default
    assert sdk_retries(stt.services[1].factory()) == 0  # OpenAI transcription
    assert sdk_retries(tts.services[1].factory()) == 0  # OpenAI speech
    # The local Whisper backup's model stays unloaded even once the service is made.
    whisper = stt.services[2].factory()
    assert isinstance(whisper, LocalWhisperSTTService)
    assert not whisper.loaded


async def test_a_local_backup_voice_loads_only_when_it_takes_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ground_school for the examiner: OpenAI's voice fails, Piper loads and speaks the reply."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, f"test-{name.lower()}")
    async with AsyncExitStack() as stack:
        anthropic = await stack.enter_async_context(AnthropicFake(reply=reply))
        openai = await stack.enter_async_context(OpenAIFake(reply=reply, ms_per_char=MS_PER_CHAR))
        openai.inject("speech", WireFault.HTTP_5XX, times=10)
        settings = Settings(
            home=Path.home() / ".cache" / "voxtutor",
            openai_base_url=openai.base_url,
            anthropic_base_url=anthropic.base_url,
        )
        services = build_tier_services(
            "ground_school",
            load_persona("aviation-examiner"),
            settings,
            # The default 5 s TTFB watchdog and 20 s cap: loading the voice (1-2 s) is part of
            # the first sentence, which the scaled test cap (2 s) would cut off.
            policy=replace(FAILOVER, ttfb_timeout_s=5.0, request_cap_s=20.0),
        )
        [tts] = services.tts
        assert isinstance(tts, FailoverSwitcher)
        standin = tts.services[1]
        assert isinstance(standin, DeferredService)
        assert not standin.built, "a backup voice must not be built before it is needed"
        run = await run_session(
            tmp_path,
            [user_says("What do I check before a flight?"), 8.0],
            stt=services.stt,
            llm=services.llm,
            tts=services.tts,
        )
    piper = standin.inner
    assert isinstance(piper, LocalPiperTTSService) and piper.loaded
    assert [(n["from"], n["to"]) for n in run.watch.notices] == [("openai", "local")]
    assert heard(run) == REPLY
    # Piper spoke the reply: ~120 characters are several seconds of 16 kHz audio.
    assert run.watch.audio_bytes > 3 * 16000 * 2


async def test_a_tts_fault_mid_reply_is_finished_by_the_backup_voice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await _run_dpe_live(tmp_path, monkeypatch, "tts")
    run: Run = out["run"]
    # The turn completed: heard whole, once, and stored in the context as one reply.
    assert heard(run) == REPLY
    assert run.assistant() == [REPLY]
    # The sentence Cartesia failed on was spoken once, by OpenAI's voice; nothing twice.
    finished_by_cartesia = {t for t, done in out["by_cartesia"] if done}
    assert SENTENCES[1] not in finished_by_cartesia
    assert out["speech"].count(SENTENCES[1]) == 1
    assert sorted(out["speech"]) == sorted(set(out["speech"]))
    assert set(SENTENCES) <= finished_by_cartesia | set(out["speech"])
    # One notice to the client and one on_switch call.
    [message] = switch_messages(run)
    assert (message["role"], message["from"], message["to"]) == ("tts", "cartesia", "openai")
    assert message["reason"] in {"disconnect", "truncated", "timeout"}
    assert out["switches"] == [("tts", "cartesia", "openai", message["reason"])]


async def test_an_llm_fault_mid_reply_is_continued_by_the_backup_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await _run_dpe_live(tmp_path, monkeypatch, "llm")
    run: Run = out["run"]
    assert heard(run) == REPLY
    assert run.assistant() == [REPLY]
    # OpenAI was asked once, to continue the words already out, not to start again.
    [chat] = out["chats"]
    assert message_text(chat["messages"][-1]["content"]) == CONTINUE_PROMPT
    # Cartesia spoke each sentence once, the one cut in the LLM's stream included.
    spoken = [t.strip() for t, _ in out["by_cartesia"]]
    assert spoken == SENTENCES
    assert out["speech"] == []
    [message] = switch_messages(run)
    assert (message["role"], message["from"], message["to"]) == ("llm", "anthropic", "openai")
    assert message["reason"] == "disconnect"
    assert out["switches"] == [("llm", "anthropic", "openai", "disconnect")]
