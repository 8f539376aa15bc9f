"""The session builder: persona + tier + transport → one Pipecat pipeline, ready to run.

``input → STT → user aggregator (Silero VAD + turn strategy) → LLM → sentence aggregator →
TTS → output → [recorders] → assistant aggregator``. Turn taking follows the persona's
language (``pipelines.turn_taking``); barge-in is Pipecat's ``InterruptionFrame``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame, TTSSpeakFrame
from pipecat.observers.base_observer import BaseObserver
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker, ProcessorUnusablePolicy
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.aggregators.llm_text_processor import LLMTextProcessor
from pipecat.processors.filters.function_filter import FunctionFilter
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from config.personas import Persona
from config.settings import Settings
from contracts.turns import TurnRecord
from observers.dispatch import use_selective_dispatch
from observers.turn_recorder import TurnRecorderObserver
from pipelines.turn_taking import turn_strategies
from processors.sentence_aggregator import FIRST_CLAUSE_CHARS, SentenceAggregator
from processors.typed_turns import TypedTurns
from services.silero_vad import InlineSileroVADAnalyzer


@dataclass
class SessionPipeline:
    """One session's built pipeline: the Pipecat worker to run, and the parts to inspect.

    Attributes:
        persona: Who the bot is.
        worker: The ``PipelineWorker`` to hand to a ``WorkerRunner``.
        context: The LLM context (system prompt, few-shot turns, then the conversation).
        user_aggregator: Holds VAD and the turn strategies.
        assistant_aggregator: Writes what the bot actually said into the context.
        recorder: Collects turns with timings, voice-to-voice latency and TTFB.
        processors: The pipeline's processors in order, for inspection.
    """

    persona: Persona
    worker: PipelineWorker
    context: LLMContext
    user_aggregator: LLMUserAggregator
    assistant_aggregator: LLMAssistantAggregator
    recorder: TurnRecorderObserver
    processors: list[FrameProcessor] = field(default_factory=list)

    async def greet(self) -> None:
        """Queue the persona's greeting; it is spoken and appended to the context."""
        await self.worker.queue_frames([TTSSpeakFrame(self.persona.greeting)])

    async def say_goodbye(self, text: str) -> None:
        """Say ``text`` (a farewell), then end the session once it has been spoken."""
        await self.worker.queue_frames([TTSSpeakFrame(text), EndFrame()])


def _group(part: FrameProcessor | Sequence[FrameProcessor]) -> list[FrameProcessor]:
    return [part] if isinstance(part, FrameProcessor) else list(part)


async def _not_input_audio(frame: Frame) -> bool:
    return not isinstance(frame, InputAudioRawFrame)


def input_audio_stop() -> FunctionFilter:
    """A processor that ends the learner's audio frames' trip down the pipeline.

    Pipecat's user aggregator pushes every ``InputAudioRawFrame`` (50 per second at 20 ms
    chunks) on downstream, through the LLM, the sentence aggregator, the TTS and the output
    transport, none of which use it; stopping it right after the aggregator saves those hops
    (``bench/capacity.py`` prints the CPU per session with and without).
    """
    return FunctionFilter(_not_input_audio, filter_system_frames=True)


def build_session(
    persona: Persona,
    *,
    stt: FrameProcessor | Sequence[FrameProcessor],
    llm: FrameProcessor | Sequence[FrameProcessor],
    tts: FrameProcessor | Sequence[FrameProcessor],
    transport: BaseTransport,
    settings: Settings,
    recorders: Sequence[FrameProcessor] = (),
    observers: Sequence[BaseObserver] = (),
    audio_in_sample_rate: int = 16000,
    audio_out_sample_rate: int = 24000,
    idle_timeout_secs: float | None = 300,
    on_turn: Callable[[TurnRecord], Awaitable[None]] | None = None,
    user_turn_strategies: UserTurnStrategies | None = None,
    rtvi: bool = True,
    pipecat_defaults: bool = False,
    assessment: FrameProcessor | None = None,
    record: Sequence[dict[str, str]] = (),
) -> SessionPipeline:
    """Assemble one tutoring session.

    Args:
        persona: The tutor or examiner.
        stt: Speech-to-text service (frames of 16-bit PCM in, ``TranscriptionFrame`` out), or
            the processors of a failover group standing in its place (``pipelines.tiers``).
        llm: LLM service reading the shared ``LLMContext``; it carries the persona's system
            prompt as its system instruction (see :func:`pipelines.local.llama_cpp_llm`); or a
            failover group.
        tts: Text-to-speech service; receives one sentence per ``AggregatedTextFrame``; or a
            failover group.
        transport: Where audio comes from and goes to (file, WebRTC, phone).
        settings: VAD and turn-taking knobs.
        recorders: Processors placed right after ``transport.output()`` (they see learner
            and bot audio on one timeline).
        observers: Extra observers (metrics, logging) added to the worker.
        audio_in_sample_rate: Input rate in Hz (Silero VAD needs 16000 or 8000).
        audio_out_sample_rate: Output rate in Hz; TTS audio is resampled to it.
        idle_timeout_secs: End the session after this many seconds without activity.
        on_turn: Awaited with each turn as soon as it completes (e.g. to store it).
        user_turn_strategies: When a learner turn starts and ends; ``None`` → the persona's
            (:func:`pipelines.turn_taking.turn_strategies`). Phone calls pass their own.
        rtvi: Add Pipecat's RTVI processor and observer (transcript, bot output and notices
            for a browser client). A phone call has no RTVI client: ``False`` saves a
            processor every frame passes and an observer every push reaches.
        pipecat_defaults: Build the CPU baseline of ``bench/capacity.py``: what Pipecat
            does where voxtutor saves CPU. By default Silero VAD runs on the event loop
            (:class:`~services.silero_vad.InlineSileroVADAnalyzer`), not in a worker
            thread; the learner's audio frames stop after the user aggregator
            (:func:`input_audio_stop`; they go on anyway when ``recorders`` are given); and
            frame events reach only the observers that use them
            (:mod:`observers.dispatch`).
        assessment: The tutoring step's processor
            (:class:`processors.assessment.AssessmentProcessor`), placed between the user
            aggregator and the LLM; ``None``: the reply model alone answers each turn.
        record: Messages the context starts with, before the few-shot turns: the learner
            record (:func:`pipelines.memory.memory_messages`, data, never instructions).

    Returns:
        The built :class:`SessionPipeline`; run ``session.worker`` with a ``WorkerRunner``.
    """
    context = LLMContext(messages=[*record, *persona.initial_messages()])  # type: ignore[list-item]
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=(SileroVADAnalyzer if pipecat_defaults else InlineSileroVADAnalyzer)(
                sample_rate=audio_in_sample_rate,
                params=VADParams(stop_secs=settings.vad_stop_ms / 1000),
            ),
            user_turn_strategies=user_turn_strategies or turn_strategies(persona, settings),
        ),
    )
    processors: list[FrameProcessor] = [
        transport.input(),
        *([TypedTurns()] if rtvi else []),  # the learner app's text mode (RTVI send-text)
        *_group(stt),
        user_aggregator,
        # Recorders after the output need the learner's audio; nothing else downstream does.
        *([] if recorders or pipecat_defaults else [input_audio_stop()]),
        *([assessment] if assessment is not None else []),
        *_group(llm),
        LLMTextProcessor(
            text_aggregator=SentenceAggregator(
                first_clause_chars=FIRST_CLAUSE_CHARS if settings.first_clause else None
            )
        ),
        *_group(tts),
        transport.output(),
        *recorders,
        assistant_aggregator,
    ]
    worker, recorder = build_worker(
        processors,
        user_aggregator,
        assistant_aggregator,
        observers=observers,
        audio_in_sample_rate=audio_in_sample_rate,
        audio_out_sample_rate=audio_out_sample_rate,
        idle_timeout_secs=idle_timeout_secs,
        on_turn=on_turn,
        rtvi=rtvi,
        selective_dispatch=not pipecat_defaults,
    )
    return SessionPipeline(
        persona=persona,
        worker=worker,
        context=context,
        user_aggregator=user_aggregator,
        assistant_aggregator=assistant_aggregator,
        recorder=recorder,
        processors=processors,
    )


def build_worker(
    processors: Sequence[FrameProcessor],
    user_aggregator: LLMUserAggregator,
    assistant_aggregator: LLMAssistantAggregator,
    *,
    observers: Sequence[BaseObserver] = (),
    audio_in_sample_rate: int = 16000,
    audio_out_sample_rate: int = 24000,
    idle_timeout_secs: float | None = 300,
    on_turn: Callable[[TurnRecord], Awaitable[None]] | None = None,
    realtime: bool = False,
    processor_unusable_policy: ProcessorUnusablePolicy = ProcessorUnusablePolicy.CONTINUE,
    rtvi: bool = True,
    selective_dispatch: bool = True,
) -> tuple[PipelineWorker, TurnRecorderObserver]:
    """Wrap ``processors`` in a worker with metrics, the turn recorder and latency observer.

    Shared by the cascaded session (:func:`build_session`) and the speech-to-speech one
    (``pipelines.realtime``).

    Args:
        processors: The pipeline, in order.
        user_aggregator: The user half of the context aggregator pair.
        assistant_aggregator: The assistant half.
        observers: Extra observers.
        audio_in_sample_rate: Input rate in Hz.
        audio_out_sample_rate: Output rate in Hz.
        idle_timeout_secs: End the session after this many seconds without activity.
        on_turn: Awaited with each turn as soon as it completes.
        realtime: The LLM is a speech-to-speech service (see
            :meth:`TurnRecorderObserver.attach`).
        processor_unusable_policy: What the worker does when a processor reports a permanent
            error (``END`` where no failover can replace it).
        rtvi: Let Pipecat add its RTVI processor and observer (``enable_rtvi``).
        selective_dispatch: Send frame events only to the observers that use them
            (:func:`observers.dispatch.use_selective_dispatch`); ``False`` keeps Pipecat's.

    Returns:
        The worker and its turn recorder.
    """
    recorder = TurnRecorderObserver(on_turn=on_turn)
    recorder.attach(user_aggregator, assistant_aggregator, realtime=realtime)
    latency = UserBotLatencyObserver()
    recorder.attach_latency(latency)
    worker = PipelineWorker(
        Pipeline(list(processors)),
        params=PipelineParams(
            audio_in_sample_rate=audio_in_sample_rate,
            audio_out_sample_rate=audio_out_sample_rate,
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
        observers=[recorder, latency, *observers],
        idle_timeout_secs=idle_timeout_secs,
        processor_unusable_policy=processor_unusable_policy,
        enable_rtvi=rtvi,
    )
    if selective_dispatch:
        use_selective_dispatch(worker)
    return worker, recorder
