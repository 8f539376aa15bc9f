"""Turn recorder: one record per learner or bot turn, with timings, latency and TTFB.

It listens to the user and assistant aggregators (what was said, what was actually spoken),
to VAD and bot-speaking frames (when), and to Pipecat's ``UserBotLatencyObserver`` (voice-to-
voice latency from the learner's last word to the bot's first audio, and each service's TTFB
within that interval). A turn is handed to ``on_turn`` as soon as it completes, so a store
can persist it before the session ends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    AggregatedTextFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    MetricsFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.processors.aggregators.llm_response_universal import (
    AssistantTurnStoppedMessage,
    LLMAssistantAggregator,
    LLMUserAggregator,
    UserTurnMessageAddedMessage,
    UserTurnStoppedMessage,
)
from pipecat.processors.frame_processor import FrameDirection

from contracts.turns import TurnRecord


def service_kind(processor_name: str) -> str:
    """Map a processor name such as ``LocalWhisperSTTService#0`` to ``stt``/``llm``/``tts``."""
    for kind in ("STT", "LLM", "TTS"):
        if kind in processor_name:
            return kind.lower()
    return processor_name


class TurnRecorderObserver(BaseObserver):
    """Collects :class:`TurnRecord` s; call :meth:`attach` with the aggregator pair.

    Args:
        on_turn: Awaited with each turn as soon as it completes (learner: when the turn
            ends; bot: when its text is final and its audio has stopped).
        clock: Monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        on_turn: Callable[[TurnRecord], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ):
        super().__init__(observe_every_push=False, **kwargs)
        self.turns: list[TurnRecord] = []
        self._on_turn = on_turn
        self._clock = clock
        self._t0: float | None = None
        self._learner_start: float | None = None
        self._learner_end: float | None = None
        self._learner_in_turn = False
        self._bot_speaking = False
        self._bot_start: float | None = None
        self._bot_end: float | None = None
        self._pending_bot: TurnRecord | None = None
        self._latency_s: float | None = None
        self._cycle_ttfb: dict[str, int] = {}
        self._turn_ttfb: dict[str, int] | None = None
        self._realtime = False
        self._in_flight: list[str] = []
        """The text the TTS made for the bot turn under way, in order (frames are observed
        on their first push, so not when the transport releases them)."""
        self._cut_short = False

    # -- wiring ---------------------------------------------------------------------------

    def attach(
        self, user: LLMUserAggregator, assistant: LLMAssistantAggregator, *, realtime: bool = False
    ) -> None:
        """Subscribe to the aggregators' turn events.

        Args:
            user: The user aggregator.
            assistant: The assistant aggregator.
            realtime: The LLM is a speech-to-speech service that detects speech itself: there
                are no VAD frames, so the learner's turn spans ``UserStarted/Stopped
                SpeakingFrame``; and Pipecat writes the learner's words only when the reply
                starts, so they are taken from ``on_user_turn_message_added``.
        """
        self._realtime = realtime
        if realtime:
            user.add_event_handler("on_user_turn_message_added", self._on_user_message_added)
        else:
            user.add_event_handler("on_user_turn_stopped", self._on_user_turn_stopped)
        assistant.add_event_handler("on_assistant_turn_stopped", self._on_assistant_turn_stopped)

    def attach_latency(self, latency: UserBotLatencyObserver) -> None:
        """Take voice-to-voice latency from Pipecat's latency observer."""
        latency.add_event_handler("on_latency_measured", self._on_latency_measured)

    # -- time -----------------------------------------------------------------------------

    def _ms(self, t: float | None) -> int | None:
        if t is None or self._t0 is None:
            return None
        return max(0, round((t - self._t0) * 1000))

    async def on_pipeline_started(self) -> None:
        """Start the session clock."""
        self._t0 = self._clock()

    async def on_push_frame(self, data: FramePushed) -> None:
        """Track when the learner and the bot speak (downstream copies only)."""
        if data.direction != FrameDirection.DOWNSTREAM:
            return
        frame = data.frame
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        if isinstance(frame, MetricsFrame):
            for m in frame.data:
                if isinstance(m, TTFBMetricsData) and m.value > 0:
                    self._cycle_ttfb.setdefault(service_kind(m.processor), round(m.value * 1000))
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._cycle_ttfb = {}  # a new learner → bot cycle
            # Until a user turn starts, the latest speech is the candidate start: earlier
            # speech that started no turn (a backchannel under the bot) is not part of it.
            if not self._learner_in_turn:
                self._learner_start = now - frame.start_secs
                self._learner_end = None
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._learner_in_turn = True
            if self._realtime and self._learner_start is None:
                self._learner_start = now
        elif isinstance(frame, UserStoppedSpeakingFrame):
            if self._realtime and self._learner_end is None:
                self._learner_end = now
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._learner_end = now - frame.stop_secs
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            if self._bot_start is None:
                self._bot_start = now
                self._turn_ttfb, self._cycle_ttfb = self._cycle_ttfb, {}
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            self._bot_end = now
            self._cut_short = False
            if self._pending_bot is not None:
                await self._finish_bot(self._pending_bot)
        elif isinstance(frame, AggregatedTextFrame):
            # A sentence on its way to be spoken (the TTS's own, or its TTSTextFrame).
            self._in_flight.append(frame.text)
        elif isinstance(frame, InterruptionFrame):
            self._in_flight.clear()  # the transport drops what it had queued

    # -- events ---------------------------------------------------------------------------

    async def _on_user_turn_stopped(
        self, _aggregator: Any, _strategy: Any, message: UserTurnStoppedMessage
    ) -> None:
        await self._learner_turn(message.content)

    async def _on_user_message_added(
        self, _aggregator: Any, message: UserTurnMessageAddedMessage
    ) -> None:
        await self._learner_turn(message.content)

    async def _learner_turn(self, content: str | None) -> None:
        text = (content or "").strip()
        self._learner_in_turn = False
        if not text:
            self._learner_start = self._learner_end = None
            return
        end = self._learner_end if self._learner_end is not None else self._clock()
        record = TurnRecord(
            index=len(self.turns),
            role="learner",
            text=text,
            start_ms=self._ms(self._learner_start),
            end_ms=self._ms(end),
        )
        self._learner_start = self._learner_end = None
        await self._emit(record)

    async def _on_latency_measured(self, _observer: Any, latency_s: float) -> None:
        self._latency_s = latency_s

    async def _on_assistant_turn_stopped(
        self, _aggregator: Any, message: AssistantTurnStoppedMessage
    ) -> None:
        text = message.content.strip()
        if not text:
            # Cut off (a hang-up) before the transport released any of its text: kept for
            # flush(), which stores the sentence that was being spoken.
            self._cut_short = message.interrupted and self._bot_speaking
            if not self._cut_short:
                self._bot_start = None
            return
        record = TurnRecord(index=-1, role="bot", text=text, interrupted=message.interrupted)
        if self._latency_s is not None:
            record.latency_ms = round(self._latency_s * 1000)
            record.ttfb_ms = self._turn_ttfb or {}
        self._latency_s = self._turn_ttfb = None
        if self._bot_speaking:
            self._pending_bot = record  # finished when its audio stops
        else:
            await self._finish_bot(record)

    async def _finish_bot(self, record: TurnRecord) -> None:
        self._pending_bot = None
        self._in_flight.clear()
        record.index = len(self.turns)
        record.start_ms = self._ms(self._bot_start)
        record.end_ms = self._ms(self._bot_end)
        self._bot_start = self._bot_end = None
        await self._emit(record)

    async def _emit(self, record: TurnRecord) -> None:
        self.turns.append(record)
        if self._on_turn is not None:
            await self._on_turn(record)

    async def flush(self) -> None:
        """Emit a bot turn still waiting for its audio to stop (call at session end).

        A turn cut off while its first sentence was playing (the caller hung up) has no
        released text: it is stored with that sentence, marked interrupted.
        """
        if self._bot_speaking and self._bot_end is None:
            self._bot_end = self._clock()  # the audio stopped with the session
        if self._pending_bot is not None:
            await self._finish_bot(self._pending_bot)
        elif self._cut_short and self._in_flight:
            self._cut_short = False
            cut = TurnRecord(index=-1, role="bot", text=self._in_flight[0], interrupted=True)
            self._in_flight.clear()
            await self._finish_bot(cut)
