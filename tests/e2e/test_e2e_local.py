"""End to end on real speech through the real local stack (Whisper, llama.cpp, Piper/espeak).

Slow by nature (real-time audio, real models): about a minute each on 2 cores.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jiwer
import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf

from config.acs import load_acs_bank
from config.settings import Settings
from contracts.assessment import GRADES
from pipelines.file_session import run_file_session
from services.llama_server import LlamaServer
from transports.file import FileTransportParams
from weights.registry import model_path

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

GERMAN_LEARNER = "Gestern ich bin mit meinem Freund in die Stadt gefahren."
"""A learner sentence with a word-order mistake (synthetic: spoken by espeak-ng)."""


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower().replace("-", " ")).split())


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(words(reference), words(hypothesis))


def voiced_seconds(path: Path, frame_ms: int = 20, threshold: float = 0.01) -> float:
    """Seconds of audio whose 20 ms RMS exceeds ``threshold`` (full scale 1.0)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    n = rate * frame_ms // 1000
    frames = mono[: len(mono) // n * n].reshape(-1, n)
    rms = np.sqrt((frames**2).mean(axis=1))
    return float((rms > threshold).sum() * frame_ms / 1000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm_url(tmp_path_factory):
    """One llama.cpp server (the default 1.5B model) shared by the sessions, as in prod."""
    settings = Settings()
    server = LlamaServer(
        model_path(settings.llm_model, settings.home),
        log_path=tmp_path_factory.mktemp("llm") / "llama-server.log",
    )
    async with server:
        yield server.base_url


def check_transcript(out: Path, reference: str) -> dict:
    transcript = json.loads((out / "transcript.json").read_text())
    turns = transcript["turns"]
    assert turns[0]["role"] == "bot"  # the bot greets first
    learner = [t for t in turns if t["role"] == "learner"]
    bot = [t for t in turns if t["role"] == "bot"][1:]  # replies after the greeting
    assert len(learner) == 1, turns
    assert wer(reference, learner[0]["text"]) <= 0.3, learner[0]["text"]
    assert bot, "the bot did not answer"
    reply = bot[0]
    assert reply["text"].strip()
    assert reply["latency_ms"] > 0
    # The reply starts with what the tutoring step says (a correction, the examiner's grade),
    # so the LLM's first token may come after the first audio: STT and TTS are always timed.
    assert set(reply["ttfb_ms"]) >= {"stt", "tts"}
    assert learner[0]["assessment"] is not None, "the learner turn was not assessed"
    assert reply["start_ms"] >= learner[0]["end_ms"]
    assert voiced_seconds(out / "bot.wav") >= 1.0
    conv, rate = sf.read(str(out / "conversation.wav"))
    assert conv.ndim == 2 and conv.shape[1] == 2 and rate == 24000
    return reply


async def test_english_examiner_hears_real_speech_and_answers(llm_url, librivox, tmp_path):
    clip, text = next((p, t) for p, t in librivox.items() if "0880" in p.name)
    out = tmp_path / "en"
    await run_file_session(
        "aviation-examiner",
        [clip],
        out,
        Settings(),
        llm_base_url=llm_url,
        params=FileTransportParams(reply_timeout_s=60),
    )
    check_transcript(out, text)
    # The examiner grades against the bank: the greeting's question, matched to a bank task,
    # and a verdict said from the grade.
    learner = next(t for t in json.loads((out / "transcript.json").read_text())["turns"][1:])
    grade = learner["assessment"]["grade"]
    assert grade["task"].startswith("PA.") and grade["grade"] in GRADES
    # The reply starts with the examiner's verdict, said from the grade (not by the LLM).
    turns = json.loads((out / "transcript.json").read_text())["turns"]
    said = " ".join(t["text"] for t in turns[1:] if t["role"] == "bot")
    verdict = {
        "satisfactory": "That's correct.",
        "probe": "That's part of it.",
        "unsatisfactory": "That's not correct.",
    }[grade["grade"]]
    assert verdict in said, said
    if grade["grade"] == "unsatisfactory":
        assert any(q.reference in said for q in load_acs_bank().questions)


@pytest.fixture
def german_learner_wav(tmp_path) -> Path:
    """The learner sentence spoken by espeak-ng (synthetic: no packaged German recording)."""
    wav = tmp_path / "learner-de.wav"
    subprocess.run(
        ["espeak-ng", "-v", "de", "-s", "150", "-w", str(wav), GERMAN_LEARNER], check=True
    )
    return wav


async def test_german_tutor_answers_a_learner_sentence_synthetic(
    llm_url, german_learner_wav, tmp_path
):
    out = tmp_path / "de"
    await run_file_session(
        "german-tutor",
        [german_learner_wav],
        out,
        Settings(),
        llm_base_url=llm_url,
        params=FileTransportParams(reply_timeout_s=60),
    )
    check_transcript(out, GERMAN_LEARNER)
