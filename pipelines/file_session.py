"""Run one tutoring session on recorded learner turns (the ``voxtutor session`` command).

Loads and checks the recordings first (a bad file fails before any model loads), makes sure
an LLM server is up (starts the local llama.cpp one unless ``llm_base_url`` is set), builds
the session pipeline on a :class:`~transports.file.FileTransport`, lets the bot greet and
answer each recording, and writes ``transcript.json``, ``bot.wav`` and ``conversation.wav``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from loguru import logger
from pipecat.frames.frames import EndFrame
from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor
from pipecat.workers.runner import WorkerRunner

from config.personas import Persona, load_persona
from config.settings import Settings
from observers.turn_recorder import TurnRecord
from pipelines.local import PIPER_MODEL, WHISPER_MODEL, build_local_services, local_llm
from pipelines.session import build_session
from services.llama_server import warm_up
from transports.file import FileTransport, FileTransportParams, load_learner_audio

TRANSCRIPT_SCHEMA_VERSION = 1
OUTPUT_SAMPLE_RATE = 24000
"""Bot audio rate in Hz (Pipecat's default output rate)."""


@dataclass
class SessionResult:
    """What a file session produced.

    Attributes:
        transcript: The ``transcript.json`` document.
        out_dir: Where the files were written.
        turns: The turns, in order.
    """

    transcript: dict[str, Any]
    out_dir: Path
    turns: list[TurnRecord] = field(default_factory=list)


def _write_wav(path: Path, pcm: bytes, sample_rate: int, channels: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)


def _summary(turns: Sequence[TurnRecord]) -> dict[str, Any]:
    lat = [t.latency_ms for t in turns if t.role == "bot" and t.latency_ms is not None]
    return {
        "learner_turns": sum(t.role == "learner" for t in turns),
        "bot_turns": sum(t.role == "bot" for t in turns),
        "median_latency_ms": round(statistics.median(lat)) if lat else None,
        "max_latency_ms": max(lat) if lat else None,
    }


def _prepare(audio_paths: Sequence[Path], sample_rate: int, out_dir: Path) -> list[Any]:
    """Load every recording (failing before any model loads) and create ``out_dir``."""
    recordings = [load_learner_audio(p, sample_rate) for p in audio_paths]
    out_dir.mkdir(parents=True, exist_ok=True)
    return recordings


async def run_file_session(
    persona_id: str,
    audio_paths: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    *,
    level: str | None = None,
    llm_base_url: str | None = None,
    params: FileTransportParams | None = None,
) -> SessionResult:
    """Run a session where each file is one learner turn; write the outputs to ``out_dir``.

    Args:
        persona_id: e.g. ``german-tutor``.
        audio_paths: Learner recordings (WAV/FLAC/OGG, any rate, mono or stereo).
        out_dir: Created if missing; receives ``transcript.json``, ``bot.wav`` (mono) and
            ``conversation.wav`` (stereo: learner left, bot right), both at 24000 Hz.
        settings: Runtime settings.
        level: Learner CEFR level (persona default if ``None``).
        llm_base_url: Use this OpenAI-compatible server instead of starting llama.cpp.
        params: Learner-side pacing.

    Raises:
        config.personas.PersonaError: unknown or invalid persona.
        transports.file.AudioFileError: a recording is unusable.
        models.registry.ModelNotInstalledError: a model is not installed.
        services.llama_server.LLMServerError: the local LLM server failed to start.
    """
    persona: Persona = load_persona(persona_id)
    if not audio_paths:
        raise ValueError("give at least one learner recording (--audio FILE)")
    params = params or FileTransportParams()
    recordings = await asyncio.to_thread(_prepare, audio_paths, params.sample_rate, out_dir)
    if llm_base_url:
        settings = settings.model_copy(update={"llm_base_url": llm_base_url})

    started = datetime.now(UTC)
    async with local_llm(settings) as base_url:
        opening = [
            {"role": "system", "content": persona.render_system_prompt(level)},
            *persona.initial_messages(),
            {"role": "assistant", "content": persona.greeting},
        ]
        try:
            took = await warm_up(base_url, opening)
            logger.info(f"LLM warm-up (prompt evaluation) took {took:.2f} s")
        except httpx.HTTPError as e:
            logger.warning(f"LLM warm-up failed, the first turn will be slower: {e}")
        services = build_local_services(persona, settings, base_url, level)
        transport = FileTransport(recordings, params, output_sample_rate=OUTPUT_SAMPLE_RATE)
        audio = AudioBufferProcessor(
            sample_rate=OUTPUT_SAMPLE_RATE, num_channels=2, auto_start_recording=True
        )
        tracks: dict[str, bytes] = {}

        @audio.event_handler("on_track_audio_data")
        async def _tracks(_p: Any, user: bytes, bot: bytes, rate: int, _ch: int) -> None:
            tracks.update(user=user, bot=bot)

        @audio.event_handler("on_audio_data")
        async def _merged(_p: Any, merged: bytes, rate: int, _ch: int) -> None:
            tracks["conversation"] = merged

        session = build_session(
            persona,
            stt=services.stt,
            llm=services.llm,
            tts=services.tts,
            transport=transport,
            settings=settings,
            recorders=[audio],
            audio_out_sample_rate=OUTPUT_SAMPLE_RATE,
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(session.worker)
        await session.greet()

        async def _end_when_done() -> None:
            await transport.done.wait()
            await session.worker.queue_frame(EndFrame())

        ender = asyncio.create_task(_end_when_done())
        try:
            await runner.run()
        finally:
            ender.cancel()
        await session.recorder.flush()

    turns = session.recorder.turns
    _write_wav(out_dir / "bot.wav", tracks.get("bot", b""), OUTPUT_SAMPLE_RATE, 1)
    _write_wav(out_dir / "conversation.wav", tracks.get("conversation", b""), OUTPUT_SAMPLE_RATE, 2)
    transcript: dict[str, Any] = {
        "schema_version": TRANSCRIPT_SCHEMA_VERSION,
        "persona": persona.id,
        "language": persona.language,
        "cefr_level": level or persona.cefr_level,
        "tier": "local",
        "started_at": started.isoformat(),
        "models": {
            "stt": WHISPER_MODEL,
            "llm": settings.llm_model,
            "tts": (PIPER_MODEL if persona.language == "en" else f"espeak-ng:{persona.voice}"),
        },
        "inputs": [
            {"path": str(p), "offset_ms": off}
            for p, off in zip(audio_paths, transport.input().turn_offsets_ms, strict=False)
        ],
        "audio": {
            "bot": "bot.wav",
            "conversation": "conversation.wav",
            "sample_rate": OUTPUT_SAMPLE_RATE,
        },
        "turns": [t.to_dict() for t in turns],
        "summary": _summary(turns),
    }
    (out_dir / "transcript.json").write_text(
        json.dumps(transcript, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return SessionResult(transcript=transcript, out_dir=out_dir, turns=list(turns))
