"""Turn taking per persona language: when a learner turn starts, and when it ends.

Start. While the bot is silent, a turn starts at the learner's first voiced frame (VAD), so
the end-of-turn model hears the whole utterance. While the bot speaks, a turn (and so a
barge-in) starts only once STT has heard ``min_words_to_interrupt`` words: a one-word
backchannel ("ja", "mhm", "jo") does not cut the tutor off.

End. Smart-turn v3 decides for English and German (a pause longer than
``smart_turn_max_pause_ms`` ends the turn even when the model hears it as unfinished); Czech,
which smart-turn does not cover, ends a turn after a ``speech_timeout_ms`` pause. The model
is the server's shared one when ``smart_turn_url`` is set (:mod:`services.turn_service`),
else a copy in the session process.
"""

from __future__ import annotations

from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    VADUserStartedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import MinWordsUserTurnStartStrategy, VADUserTurnStartStrategy
from pipecat.turns.user_stop import (
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import (
    UserTurnStrategies,
    default_user_turn_start_strategies,
)

from config.personas import Persona
from config.settings import Settings
from services.smart_turn import LeanSmartTurnAnalyzer, RemoteSmartTurnAnalyzer

SMART_TURN_LANGUAGES = frozenset({"en", "de"})
"""Languages smart-turn v3 was trained on among ours (it covers 23, not Czech)."""


class QuietBotVADUserTurnStartStrategy(VADUserTurnStartStrategy):
    """Start the learner's turn on VAD speech onset, but only while the bot is silent.

    While the bot speaks this strategy stays out of the way, leaving the decision to
    interrupt to :class:`MinWordsUserTurnStartStrategy`.
    """

    def __init__(self, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._bot_speaking = False

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        """Track the bot's speech; start a turn on VAD onset when it is silent."""
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, VADUserStartedSpeakingFrame) and not self._bot_speaking:
            await self.trigger_user_turn_started()
            return ProcessFrameResult.STOP
        return ProcessFrameResult.CONTINUE


def turn_strategies(persona: Persona, settings: Settings) -> UserTurnStrategies:
    """Return the turn start/stop strategies for the persona's language (see module doc)."""
    stop: TurnAnalyzerUserTurnStopStrategy | SpeechTimeoutUserTurnStopStrategy
    if persona.language in SMART_TURN_LANGUAGES:
        params = SmartTurnParams(stop_secs=settings.smart_turn_max_pause_ms / 1000)
        analyzer: BaseSmartTurn = (
            RemoteSmartTurnAnalyzer(url=settings.smart_turn_url, params=params)
            if settings.smart_turn_url
            else LeanSmartTurnAnalyzer(params=params)
        )
        stop = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer)
    else:
        stop = SpeechTimeoutUserTurnStopStrategy(
            user_speech_timeout=settings.speech_timeout_ms / 1000
        )
    return UserTurnStrategies(
        start=[
            QuietBotVADUserTurnStartStrategy(),
            MinWordsUserTurnStartStrategy(min_words=settings.min_words_to_interrupt),
        ],
        stop=[stop],
    )


def phone_turn_strategies(persona: Persona, settings: Settings) -> UserTurnStrategies:
    """The persona's end-of-turn rule, with barge-in at voice onset (Pipecat's default start).

    A phone caller's speech interrupts the bot at voice onset so the carrier's playout buffer
    is cleared within half a second of the caller speaking over the bot; a word count
    (``min_words_to_interrupt``) cannot give that, since Whisper transcribes only once the
    caller pauses.
    """
    return UserTurnStrategies(
        start=default_user_turn_start_strategies(),
        stop=turn_strategies(persona, settings).stop,
    )
