"""Each cloud tier completes a spoken turn against loopback fakes of its providers.

The real Pipecat services (OpenAI, Anthropic, Deepgram, Cartesia) talk to fakes speaking each
provider's wire protocol (``testkit/providers/``); the learner is a real LibriVox recording played
in real time through the file transport, so VAD and turn taking run as in production.
"""

from __future__ import annotations

import json
import wave
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from config.settings import Settings
from pipelines.file_session import run_file_session
from testkit.providers.anthropic_fake import AnthropicFake
from testkit.providers.openai_fake import OpenAIFake

pytestmark = pytest.mark.e2e

TRANSCRIPT = "What do I need for a night flight in Class E airspace?"
REPLY = "You need position lights and an anti-collision light. What else would you check?"


def _voiced_seconds(path: Path) -> float:
    import numpy as np

    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    frame = rate // 50
    n = len(pcm) // frame
    rms = np.sqrt(np.mean(pcm[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    return float((rms > 100).sum() / 50)


@pytest.fixture
def clip(librivox: dict[Path, str]) -> Path:
    return next(p for p in librivox if "0880" in p.name)


async def _fakes(stack: AsyncExitStack, monkeypatch: pytest.MonkeyPatch) -> dict:
    openai = await stack.enter_async_context(OpenAIFake())
    anthropic = await stack.enter_async_context(AnthropicFake())
    openai.reply = REPLY
    openai.transcript = TRANSCRIPT
    anthropic.reply = REPLY
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.setenv(name, f"test-{name.lower()}")
    return {"openai": openai, "anthropic": anthropic}


async def test_ground_school_turn_openai_stt_claude_openai_tts(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncExitStack() as stack:
        fakes = await _fakes(stack, monkeypatch)
        settings = Settings(
            home=Path.home() / ".cache" / "voxtutor",
            openai_base_url=fakes["openai"].base_url,
            anthropic_base_url=fakes["anthropic"].base_url,
            # The chain's local LLM backup; never used here, but no llama.cpp start either.
            llm_base_url=fakes["openai"].base_url,
        )
        out = tmp_path / "out"
        result = await run_file_session(
            "aviation-examiner", [clip], out, settings, tier="ground_school"
        )
        transcript = json.loads((out / "transcript.json").read_text())

    assert transcript["tier"] == "ground_school"
    assert transcript["models"]["llm"] == "anthropic:claude-sonnet-4-6"
    turns = [(t.role, t.text) for t in result.turns]
    assert turns[0][0] == "bot"  # the greeting
    assert ("learner", TRANSCRIPT) in turns
    assert turns[-1] == ("bot", REPLY)
    # STT: the learner's audio reached OpenAI's transcription endpoint as a WAV upload.
    stt = fakes["openai"].served("transcriptions")
    assert stt and stt[0].body["model"] == "gpt-4o-transcribe"
    # LLM: Claude got the persona's system prompt and the learner's words.
    sent = fakes["anthropic"].served("messages")[-1].body
    assert "examiner" in json.dumps(sent["system"]).lower()
    assert TRANSCRIPT in json.dumps(sent["messages"])
    # TTS: greeting and reply were synthesized by OpenAI and played.
    spoken = [r.body["input"] for r in fakes["openai"].served("speech")]
    assert REPLY in " ".join(spoken) or any(s in REPLY for s in spoken)
    assert _voiced_seconds(out / "bot.wav") > 2.0


@pytest.mark.parametrize("tier", ["checkride_prep", "dpe_live"])
async def test_deepgram_tiers_turn_with_keyterms(
    tier: str, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testkit.providers.cartesia_fake import CartesiaFake
    from testkit.providers.deepgram_fake import DeepgramFake

    async with AsyncExitStack() as stack:
        fakes = await _fakes(stack, monkeypatch)
        deepgram = await stack.enter_async_context(DeepgramFake(transcript=TRANSCRIPT))
        cartesia = await stack.enter_async_context(CartesiaFake())
        settings = Settings(
            home=Path.home() / ".cache" / "voxtutor",
            openai_base_url=fakes["openai"].base_url,
            anthropic_base_url=fakes["anthropic"].base_url,
            deepgram_base_url=deepgram.base_url,
            cartesia_url=cartesia.url,
            llm_base_url=fakes["openai"].base_url,
        )
        out = tmp_path / "out"
        result = await run_file_session("aviation-examiner", [clip], out, settings, tier=tier)
        listen = deepgram.served("listen")
        # Text each TTS was asked to speak (a websocket may connect without speaking).
        by_deepgram = [f.text for x in deepgram.speak_sessions for f in x.flushes]
        by_cartesia = [t for c in cartesia.contexts for t in c.transcripts]

    turns = [(t.role, t.text) for t in result.turns]
    assert turns[0][0] == "bot"  # the greeting, spoken outside an LLM turn, is recorded too
    assert ("learner", TRANSCRIPT) in turns
    assert turns[-1] == ("bot", REPLY)
    # Nova-3 with the examiner's keyterms (``keyterm`` query parameters) on the listen websocket.
    assert listen and deepgram.listen_sessions
    first = deepgram.listen_sessions[0]
    assert first.param("model") == "nova-3-general"
    assert {"METAR", "VOR"} <= set(first.keyterms)
    # The tier's primary TTS spoke; the other one was never asked.
    primary, other = (
        (by_deepgram, by_cartesia) if tier == "checkride_prep" else (by_cartesia, by_deepgram)
    )
    assert REPLY.split(". ")[0] in " ".join(primary)
    assert not other
    assert not fakes["openai"].served("speech")
    assert _voiced_seconds(out / "bot.wav") > 2.0
