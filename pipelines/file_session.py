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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipecat.frames.frames import EndFrame
from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor
from pipecat.workers.runner import WorkerRunner

from config.personas import Persona, load_persona
from config.settings import Settings
from config.tiers import Tier, TierError, get_tier
from contracts.assessment import Assessment
from contracts.turns import TurnRecord, learner_turn_index
from pipelines.assessment import (
    ExaminerStep,
    TutorStep,
    local_scorer,
    local_window_scorer,
    tutoring_step,
)
from pipelines.local import local_llm, opening_messages, warm_persona_prompts
from pipelines.memory import (
    MAX_REVIEW_ITEMS,
    LearnerMemory,
    examiner_opening,
    memory_from_model,
    memory_messages,
    persona_for,
)
from pipelines.review import ReviewStep
from pipelines.session import build_session
from pipelines.tiers import build_tier_services
from processors.assessment import AssessmentProcessor
from services.assessment.dictionary import DICTIONARIES, load_dictionary
from services.assessment.gec import GrammarCorrector
from services.assessment.json_chat import JsonChat
from transports.file import (
    FileTransport,
    FileTransportParams,
    LearnerTurn,
    TypedTurn,
    load_learner_audio,
)
from weights.registry import PIPER_MODEL, WHISPER_MODEL

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


def _models(tier: Tier, persona: Persona, settings: Settings) -> dict[str, str]:
    """The primary model per role, as written to ``transcript.json``."""
    local = {
        "stt": WHISPER_MODEL,
        "llm": settings.llm_model,
        "tts": PIPER_MODEL if persona.language == "en" else ":".join(persona.voice_engine),
    }
    out = {}
    for role in ("stt", "llm", "tts"):
        link = tier.chain(role, persona.language)[0]
        out[role] = local[role] if link.provider == "local" else f"{link.provider}:{link.model}"
    return out


def _with_assessments(
    turns: Sequence[TurnRecord], assessments: Sequence[Assessment]
) -> list[dict[str, Any]]:
    """The turns as ``transcript.json`` has them: each learner turn with its ``assessment``.

    An assessment belongs to the first learner turn not yet matched whose text it assessed.
    """
    pending = list(assessments)
    out = []
    for turn in turns:
        row = turn.to_dict()
        if turn.role == "learner":
            found = next((a for a in pending if a.text.strip() == turn.text.strip()), None)
            if found is not None:
                pending.remove(found)
            row["assessment"] = found.to_dict() if found is not None else None
        out.append(row)
    return out


async def _tutoring_step(
    base: Persona,
    persona: Persona,
    chat: JsonChat,
    level: str | None,
    settings: Settings,
    memory: LearnerMemory | None = None,
) -> TutorStep | ExaminerStep | None:
    """The persona's tutoring step, its dictionary or verdict scorer loaded off the loop.

    ``base`` is the packaged persona, ``persona`` the one for this learner
    (:func:`pipelines.memory.persona_for`); the examiner asks the greeting's question first,
    then skips what ``memory`` says was asked before and returns to weak tasks.
    """
    if persona.role == "tutor" and persona.language in DICTIONARIES:
        await asyncio.to_thread(load_dictionary, persona.language)
    first = examiner_opening(base, memory)[1] or base.greeting
    step = tutoring_step(persona, chat, level, first_question=first)
    if isinstance(step, ExaminerStep):
        if memory is not None:
            step.asked, step.weak = list(memory.acs_asked), list(memory.acs_weak_tasks)
        step.grader.scorer = await asyncio.to_thread(local_scorer, settings)
    elif isinstance(step, TutorStep) and isinstance(step.assessor, GrammarCorrector):
        step.assessor.window = await asyncio.to_thread(
            local_window_scorer, settings, persona.language
        )
    return step


async def _join_memory(memory: Memory, persona: Persona, tier: str) -> tuple[LearnerMemory, str]:
    """The learner's memory from the store, and a new session row for this file session.

    Raises:
        ValueError: a review session with no review item due.
    """
    store, learner = memory.store, memory.learner
    due = await store.due_review_items(learner.id, limit=MAX_REVIEW_ITEMS)
    if memory.mode == "review" and not due:
        raise ValueError(f"no review items are due for {learner.name}")
    model = await store.learner_model(learner.id)
    remembered = memory_from_model(
        model, [d.to_dict() for d in due], review_session=memory.mode == "review"
    )
    info, _token = await store.create_session(
        learner.id, learner.owner_key_id, persona.id, tier, "file", memory.mode
    )
    await store.set_session_status(info.id, "active")
    return remembered, info.id


def review_drill_for(
    persona: Persona, memory: LearnerMemory | None, store: Any, session_id: str | None
) -> ReviewStep:
    """A review drill of ``memory``'s due items whose answers ``store`` reschedules."""

    async def on_review(item_id: int, right: bool, answer: str) -> None:
        if session_id is not None:
            await store.review_item(session_id, item_id, right, answer)

    return ReviewStep(persona, list(memory.review) if memory else [], None, on_review)


def _writers(
    store: Any, session_id: str, session: Callable[[], Any]
) -> tuple[Callable[[TurnRecord], Awaitable[None]], Callable[[Assessment], Awaitable[None]]]:
    """``on_turn`` and ``on_assessment`` that store the session's turns and assessments."""

    async def on_turn(turn: TurnRecord) -> None:
        await store.add_turn(session_id, turn)

    async def on_assessment(assessment: Assessment) -> None:
        index = learner_turn_index(session().recorder.turns, assessment.text)
        await store.add_assessment(session_id, assessment.to_dict(), index)

    return on_turn, on_assessment


def _prepare(
    audio_paths: Sequence[Path | TypedTurn], sample_rate: int, out_dir: Path
) -> list[LearnerTurn]:
    """Load every recording (failing before any model loads) and create ``out_dir``."""
    turns = [
        p if isinstance(p, TypedTurn) else load_learner_audio(p, sample_rate) for p in audio_paths
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    return turns


def _input(item: Path | TypedTurn, offset_ms: int) -> dict[str, Any]:
    """One ``transcript.json`` input: ``{"path", "offset_ms"}`` or ``{"typed", "offset_ms"}``."""
    if isinstance(item, TypedTurn):
        return {"typed": item.text, "offset_ms": offset_ms}
    return {"path": str(item), "offset_ms": offset_ms}


@dataclass
class Memory:
    """A file session that joins a learner's memory in the store (``--learner``).

    Attributes:
        store: The open store (the server's: SQLite by default, ``DATABASE_URL``).
        learner: The learner; the session, its turns and assessments are stored as theirs.
        mode: ``conversation`` or ``review`` (drill the due review items).
        on_ended: Awaited with the session id and the LLM server's URL once the session has
            ended and its outputs are written (the CLI writes the report then).
    """

    store: Any
    learner: Any
    mode: str = "conversation"
    on_ended: Callable[[str, str], Awaitable[None]] | None = None


async def run_file_session(
    persona_id: str,
    audio_paths: Sequence[Path | TypedTurn],
    out_dir: Path,
    settings: Settings,
    *,
    level: str | None = None,
    llm_base_url: str | None = None,
    params: FileTransportParams | None = None,
    tier: str = "local",
    assessment: bool = True,
    memory: Memory | None = None,
) -> SessionResult:
    """Run a session where each file is one learner turn; write the outputs to ``out_dir``.

    Args:
        persona_id: e.g. ``german-tutor``.
        audio_paths: Learner turns in order: recordings (WAV/FLAC/OGG, any rate, mono or
            stereo) or typed turns (:class:`~transports.file.TypedTurn`, no STT).
        out_dir: Created if missing; receives ``transcript.json``, ``bot.wav`` (mono) and
            ``conversation.wav`` (stereo: learner left, bot right), both at 24000 Hz.
        settings: Runtime settings.
        level: Learner CEFR level (persona default if ``None``).
        llm_base_url: Use this OpenAI-compatible server instead of starting llama.cpp.
        params: Learner-side pacing.
        tier: Which providers serve the session (``config/tiers.yaml``); cloud tiers need
            their keys in the environment.
        assessment: Assess each learner turn before the reply (the tutoring step); ``False``
            only to measure what it costs (``bench.voice_to_voice --assessment both``).
        memory: Store the session as the learner's, and start it from what the store knows
            of them (greeting, prompt, due review items); ``None``: a session on its own.

    Raises:
        config.tiers.TierError: unknown tier or a missing provider key.
        config.personas.PersonaError: unknown or invalid persona.
        ValueError: no learner turn, or a review session with nothing due.
        transports.file.AudioFileError: a recording is unusable.
        weights.registry.ModelNotInstalledError: a model is not installed.
        services.llama_server.LLMServerError: the local LLM server failed to start.
    """
    base: Persona = load_persona(persona_id)
    tier_config = get_tier(tier)
    missing = tier_config.missing_env()
    if missing:
        raise TierError(f"tier {tier!r} needs {', '.join(missing)} to be set")
    if not audio_paths:
        raise ValueError("give at least one learner turn (--audio FILE or --say TEXT)")
    params = params or FileTransportParams()
    recordings = await asyncio.to_thread(_prepare, audio_paths, params.sample_rate, out_dir)
    if llm_base_url:
        settings = settings.model_copy(update={"llm_base_url": llm_base_url})

    remembered, session_id = None, None
    if memory is not None:
        remembered, session_id = await _join_memory(memory, base, tier)
        level = level or memory.learner.cefr_level
    drill = None
    if memory is not None and memory.mode == "review":
        drill = review_drill_for(base, remembered, memory.store, session_id)
    persona = persona_for(
        base, remembered, drill.opening(remembered.name if remembered else None) if drill else None
    )
    record = memory_messages(remembered)

    started = datetime.now(UTC)
    try:
        async with local_llm(settings) as base_url:
            if tier_config.llm[0].provider == "local" and settings.llm_warm_up:
                await warm_persona_prompts(
                    base_url, {persona.id: opening_messages(persona, level, record)}
                )
            services = build_tier_services(
                tier, persona, settings, local_base_url=base_url, level=level
            )
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

            chat = JsonChat(base_url)
            step: Any = (
                await _tutoring_step(base, persona, chat, level, settings, remembered)
                if assessment
                else None
            )
            if drill is not None:
                drill.inner = step
                step = drill
            on_assessment = on_turn = None
            if memory is not None and session_id is not None:
                on_turn, on_assessment = _writers(memory.store, session_id, lambda: session)
            assessor = AssessmentProcessor(step, on_assessment) if step is not None else None
            session = build_session(
                persona,
                stt=services.stt,
                llm=services.llm,
                tts=services.tts,
                transport=transport,
                settings=settings,
                recorders=[audio],
                audio_out_sample_rate=OUTPUT_SAMPLE_RATE,
                assessment=assessor,
                record=record,
                on_turn=on_turn,
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
            if assessor is not None:
                await assessor.drain()
            await chat.aclose()
            result = _write_outputs(
                out_dir,
                tracks,
                session.recorder.turns,
                assessor,
                persona,
                tier,
                tier_config,
                settings,
                level,
                started,
                audio_paths,
                transport,
                session_id,
            )
            if memory is not None and session_id is not None:
                await memory.store.set_session_status(session_id, "ended", "recordings done")
                if memory.on_ended is not None:
                    await memory.on_ended(session_id, base_url)
    except BaseException as e:
        # A session stored as the learner's must not stay live when this one fails.
        if memory is not None and session_id is not None:
            await memory.store.set_session_status(session_id, "failed", f"failed: {e!r}")
        raise
    return result


def _write_outputs(
    out_dir: Path,
    tracks: dict[str, bytes],
    turns: list[TurnRecord],
    assessor: AssessmentProcessor | None,
    persona: Persona,
    tier: str,
    tier_config: Tier,
    settings: Settings,
    level: str | None,
    started: datetime,
    audio_paths: Sequence[Path | TypedTurn],
    transport: FileTransport,
    session_id: str | None,
) -> SessionResult:
    """Write ``bot.wav``, ``conversation.wav`` and ``transcript.json``; return the result."""
    _write_wav(out_dir / "bot.wav", tracks.get("bot", b""), OUTPUT_SAMPLE_RATE, 1)
    _write_wav(out_dir / "conversation.wav", tracks.get("conversation", b""), OUTPUT_SAMPLE_RATE, 2)
    transcript: dict[str, Any] = {
        "schema_version": TRANSCRIPT_SCHEMA_VERSION,
        "persona": persona.id,
        "language": persona.language,
        "cefr_level": level or persona.cefr_level,
        "tier": tier,
        "started_at": started.isoformat(),
        "models": _models(tier_config, persona, settings),
        "inputs": [
            _input(p, off)
            for p, off in zip(audio_paths, transport.input().turn_offsets_ms, strict=False)
        ],
        "audio": {
            "bot": "bot.wav",
            "conversation": "conversation.wav",
            "sample_rate": OUTPUT_SAMPLE_RATE,
        },
        "turns": _with_assessments(turns, assessor.assessments if assessor else []),
        "summary": _summary(turns),
    }
    if session_id is not None:
        transcript["session_id"] = session_id
    (out_dir / "transcript.json").write_text(
        json.dumps(transcript, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return SessionResult(transcript=transcript, out_dir=out_dir, turns=list(turns))
