"""The speech-to-speech session: persona + the ``realtime`` tier + transport → one pipeline.

``input → user aggregator → OpenAI Realtime → output → [recorders] → assistant aggregator``.
One model hears the learner and speaks the reply (no STT or TTS of ours). Turn taking is
OpenAI's server VAD: the service turns ``input_audio_buffer.speech_started/stopped`` into
proposed turn frames, which Pipecat's external turn strategies on the user aggregator
resolve into learner turns and barge-ins (the ``realtime-openai`` example's pattern, with
``realtime_service_mode``: the learner's words reach the context from the service's input
transcription when the reply starts). The session is the same
:class:`~pipelines.session.SessionPipeline` as the cascaded one; a dead provider connection
ends it (``services.openai_realtime``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    LLMMessagesAppendFrame,
)
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.worker import PipelineWorker, ProcessorUnusablePolicy
from pipecat.processors.aggregators.llm_context import LLMContext, LLMContextMessage
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.openai.realtime import events
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import ExternalUserTurnStartStrategy
from pipecat.turns.user_stop import ExternalUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from config.personas import Persona
from config.settings import Settings
from config.tiers import TierError, get_tier
from contracts.turns import TurnRecord
from pipelines.providers import _key
from pipelines.session import SessionPipeline, build_worker
from pipelines.tools import OnToolCall, ToolCall, register_tools, tools_schema
from services.openai_realtime import DEFAULT_READY_TIMEOUT_S, RealtimeLLMService

REALTIME_SAMPLE_RATE = 24000
"""Hz; the Realtime API's PCM format both ways (other input rates are resampled by Pipecat)."""
GOODBYE_TIMEOUT_S = 12.0
"""Longest wait for a farewell to be spoken before the session ends anyway, seconds (the
server kills a session ``runtime.supervisor.END_GRACE_S`` = 20 s after asking it to end)."""


class BotSpeech:
    """Counts the bot's utterances, to tell when a farewell has been spoken.

    Their ``BotStartedSpeakingFrame`` and ``BotStoppedSpeakingFrame`` are counted when they
    reach the end of the pipeline (the worker's ``on_frame_reached_downstream`` event).

    Args:
        worker: The session's worker.
    """

    def __init__(self, worker: PipelineWorker) -> None:
        self.started = 0
        """Utterances begun so far."""
        self.stopped = 0
        """Utterances ended so far (played out, or cut off by a barge-in)."""
        self._changed = asyncio.Event()
        worker.add_reached_downstream_filter((BotStartedSpeakingFrame, BotStoppedSpeakingFrame))
        worker.add_event_handler("on_frame_reached_downstream", self._on_frame)

    async def _on_frame(self, _worker: Any, frame: Frame) -> None:
        if isinstance(frame, BotStartedSpeakingFrame):
            self.started += 1
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.stopped += 1
        self._changed.set()

    async def utterance_after(self, started: int) -> None:
        """Return once an utterance begun after the first ``started`` ones has ended."""
        while not (self.started > started and self.stopped >= self.started):
            self._changed.clear()
            await self._changed.wait()


@dataclass
class RealtimeSessionPipeline(SessionPipeline):
    """A speech-to-speech session (the fields of :class:`SessionPipeline`, plus these).

    Attributes:
        llm: The realtime service.
        tool_calls: Every call of a persona tool, in order.
        bot_speech: The bot's utterances so far (when a farewell has been spoken).
    """

    llm: RealtimeLLMService | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    bot_speech: BotSpeech | None = None
    _goodbye: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def greet(self) -> None:
        """Ask the model to open with the persona's greeting; it is spoken and recorded."""
        await self.say(self.persona.greeting)

    async def say(self, text: str) -> None:
        """Ask the model to say ``text`` now (there is no TTS to hand a ``TTSSpeakFrame`` to).

        It is spoken in the model's voice and recorded as a bot turn. To end the session
        after it (a farewell), use :meth:`say_goodbye`.
        """
        assert self.llm is not None
        message: LLMContextMessage = {"role": "developer", "content": say_request(text)}
        # Into the service, not the pipeline's start: the user aggregator would keep the
        # append; past the service it reaches the assistant aggregator, which asks for the
        # response once the bot is not speaking (Pipecat's realtime append path).
        await self.llm.queue_frame(LLMMessagesAppendFrame([message], run_llm=True))

    async def say_goodbye(self, text: str, timeout_s: float = GOODBYE_TIMEOUT_S) -> None:
        """Say ``text`` (a farewell), then end the session once the bot has stopped speaking.

        Returns at once: the wait for the farewell's ``BotStoppedSpeakingFrame`` (at most
        ``timeout_s`` seconds, then the session ends anyway) runs in a task, since callers
        such as :class:`pipelines.quota.SessionQuota` run inside the pipeline's observers. A
        second call while a farewell is under way does nothing.
        """
        if self._goodbye is not None:
            return
        assert self.bot_speech is not None
        before = self.bot_speech.started
        await self.say(text)
        self._goodbye = asyncio.create_task(self._end_after(before, timeout_s), name="goodbye")

    async def _end_after(self, utterances: int, timeout_s: float) -> None:
        assert self.bot_speech is not None
        try:
            await asyncio.wait_for(self.bot_speech.utterance_after(utterances), timeout_s)
        except TimeoutError:
            logger.warning(f"farewell not spoken within {timeout_s:g} s: ending the session")
        await self.worker.queue_frames([EndFrame()])


def realtime_instructions(persona: Persona, level: str | None = None) -> str:
    """The session instructions: the rendered system prompt, then the few-shot examples.

    The cascaded LLM gets the examples as earlier turns; a realtime session would receive
    them packed into one "previously saved conversation" message (Pipecat's adapter), which
    reads as something already said, so they go into the instructions instead.
    """
    prompt = persona.render_system_prompt(level)
    if not persona.examples:
        return prompt
    shown = "\n\n".join(f"Learner: {ex.learner}\nYou: {ex.reply}" for ex in persona.examples)
    return f"{prompt}\n\nExamples of good replies (not part of this conversation):\n\n{shown}"


def say_request(text: str) -> str:
    """The developer message that makes the model say ``text`` (the greeting, a farewell)."""
    return f'Say exactly "{text}" now, then wait for the learner.'


def build_realtime_session(
    persona: Persona,
    *,
    transport: BaseTransport,
    settings: Settings,
    tier: str = "realtime",
    level: str | None = None,
    recorders: Sequence[FrameProcessor] = (),
    observers: Sequence[BaseObserver] = (),
    audio_in_sample_rate: int = REALTIME_SAMPLE_RATE,
    audio_out_sample_rate: int = REALTIME_SAMPLE_RATE,
    idle_timeout_secs: float | None = 300,
    on_turn: Callable[[TurnRecord], Awaitable[None]] | None = None,
    on_tool_call: OnToolCall | None = None,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
) -> RealtimeSessionPipeline:
    """Assemble one speech-to-speech session on the tier's realtime link.

    Args:
        persona: The tutor or examiner: instructions, tools, language (voice, transcription).
        transport: Where audio comes from and goes to.
        settings: ``openai_realtime_url`` (``None``: Pipecat's ``wss://api.openai.com/v1/
            realtime``) and ``speech_timeout_ms`` (the server VAD's ``silence_duration_ms``).
        tier: A ``kind: speech_to_speech`` tier of ``config/tiers.yaml``.
        level: The learner's CEFR level; the persona default when ``None``.
        recorders: Processors placed right after ``transport.output()``.
        observers: Extra observers added to the worker.
        audio_in_sample_rate: Input rate in Hz.
        audio_out_sample_rate: Output rate in Hz.
        idle_timeout_secs: End the session after this many seconds without activity.
        on_turn: Awaited with each turn as soon as it completes.
        on_tool_call: Awaited with each persona tool call (e.g. to store it).
        ready_timeout_s: Seconds the provider may take to accept the session configuration.

    Returns:
        The built session; run ``session.worker`` with a ``WorkerRunner``, then ``greet()``.

    Raises:
        TierError: unknown tier, not speech-to-speech, no voice for the persona's language,
            or ``OPENAI_API_KEY`` unset.
    """
    tier_config = get_tier(tier)
    link = tier_config.realtime
    if link is None:
        raise TierError(f"tier {tier!r} is a pipeline tier; use pipelines.session")
    if link.provider != "openai" or not link.speaks(persona.language):
        raise TierError(f"tier {tier!r} cannot speak {persona.language!r} with {link.provider}")
    session_properties = events.SessionProperties(
        audio=events.AudioConfiguration(
            input=events.AudioInput(
                transcription=events.InputAudioTranscription(language=persona.language),
                turn_detection=events.TurnDetection(silence_duration_ms=settings.speech_timeout_ms),
            ),
            output=events.AudioOutput(voice=link.voices.get(persona.language)),
        ),
        tools=tools_schema(persona),
    )
    endpoint: dict[str, Any] = {}
    if settings.openai_realtime_url:
        endpoint["base_url"] = settings.openai_realtime_url
    llm = RealtimeLLMService(
        api_key=_key(link),
        settings=RealtimeLLMService.Settings(
            model=link.model,
            system_instruction=realtime_instructions(persona, level),
            session_properties=session_properties,
        ),
        ready_timeout_s=ready_timeout_s,
        **endpoint,
    )
    tool_calls = register_tools(llm, persona, on_tool_call)
    context = LLMContext()
    # Pipecat's ExternalUserTurnStrategies as realtime mode adjusts them (no waiting for the
    # transcript), given up front so the default smart-turn model is never loaded.
    strategies = UserTurnStrategies(
        start=[ExternalUserTurnStartStrategy()],
        stop=[ExternalUserTurnStopStrategy(wait_for_transcript=False)],
    )
    pair = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(user_turn_strategies=strategies),
        realtime_service_mode=True,
    )
    user_aggregator, assistant_aggregator = pair.user(), pair.assistant()
    processors: list[FrameProcessor] = [
        transport.input(),
        user_aggregator,
        llm,
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
        realtime=True,
        # No failover for a speech-to-speech model: a dead connection ends the session.
        processor_unusable_policy=ProcessorUnusablePolicy.END,
    )
    return RealtimeSessionPipeline(
        persona=persona,
        worker=worker,
        context=context,
        user_aggregator=user_aggregator,
        assistant_aggregator=assistant_aggregator,
        recorder=recorder,
        processors=processors,
        llm=llm,
        tool_calls=tool_calls,
        bot_speech=BotSpeech(worker),
    )
