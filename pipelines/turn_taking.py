"""Turn taking per persona language: when a learner turn starts, and when it ends.

Start. While the bot is silent, a turn starts at the learner's first voiced frame (VAD), so
the end-of-turn model hears the whole utterance. While the bot speaks, a turn (and so a
barge-in) starts only once STT has heard ``min_words_to_interrupt`` words: a one-word
backchannel ("ja", "mhm", "jo") does not cut the tutor off.

End. Smart-turn v3 decides for English and German (a pause longer than
``smart_turn_max_pause_ms`` ends the turn even when the model hears it as unfinished); Czech,
which smart-turn does not cover, ends a turn after a ``speech_timeout_ms`` pause.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from importlib import resources
from typing import Any

import numpy as np
import onnxruntime as ort
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState
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
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from config.personas import Persona
from config.settings import Settings

SMART_TURN_LANGUAGES = frozenset({"en", "de"})
"""Languages smart-turn v3 was trained on among ours (it covers 23, not Czech)."""


class InlineSileroVADAnalyzer(SileroVADAnalyzer):
    """Pipecat's Silero VAD, run on the event loop instead of a worker thread.

    Pipecat hands every input chunk (50 per second at 20 ms) to a one-thread executor. One
    Silero window (512 samples at 16 kHz, 256 at 8 kHz; ONNX Runtime with one thread) takes
    a fraction of a millisecond, less than the thread hand-off and the GIL contention it
    causes, and a chunk shorter than a window needs no inference at all.
    ``bench/capacity.py`` prints the CPU per session with Pipecat's executor as the baseline.
    """

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Append ``buffer`` (16-bit mono PCM at the analyzer's rate); return the VAD state."""
        return self._run_analyzer(buffer)


def _glibc_malloc_trim() -> Any:
    """Return glibc's ``malloc_trim``, or ``None`` on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_malloc_trim()


class LeanSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """Pipecat's bundled smart-turn v3.2 model, holding ~30 MB less between turns.

    One inference on 8 s of audio needs ~30-40 MB of scratch memory. Pipecat's session keeps
    it in ONNX Runtime's CPU arena for the life of the session; here the arena is off, and
    after each inference glibc's ``malloc_trim`` hands the freed pages back to the OS, so a
    session holds the model (~25 MB) and not its scratch space between turns (measured on
    this model: 112 MB → 84 MB resident after an inference in a bare process; the peak during
    the ~50 ms inference is unchanged). Same model, options and predictions otherwise.

    Args:
        **kwargs: ``params`` and ``sample_rate`` as for Pipecat's analyzers.
    """

    def __init__(self, **kwargs: Any):
        # LocalSmartTurnAnalyzerV3.__init__ (pipecat-ai 1.14.0) only finds the bundled model
        # and opens an ONNX session with the options below, arena on; we open it arena off.
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = False
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False
        model = resources.files("pipecat.audio.turn.smart_turn.data") / "smart-turn-v3.2-cpu.onnx"
        self._session = ort.InferenceSession(str(model), sess_options=options)

    def _predict_endpoint(self, audio_array: np.ndarray) -> dict[str, Any]:
        """Run the model (on Pipecat's smart-turn thread), then return its scratch memory."""
        try:
            return super()._predict_endpoint(audio_array)
        finally:
            if _MALLOC_TRIM is not None:
                _MALLOC_TRIM(0)


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
        analyzer = LeanSmartTurnAnalyzer(
            params=SmartTurnParams(stop_secs=settings.smart_turn_max_pause_ms / 1000)
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
