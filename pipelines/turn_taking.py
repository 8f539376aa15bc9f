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

import ctypes
import ctypes.util
import io
import threading
from collections import deque
from importlib import resources
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import (
    BaseSmartTurn,
    SmartTurnParams,
    SmartTurnTimeoutException,
)
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


QUIET_DBFS = -60.0
"""A Silero window whose RMS level is below this (dB full scale) is not scored while the VAD
is quiet and the smoothed volume is under ``VADParams.min_volume``: Pipecat's VAD would call
it silence whatever the model said. -60 dBFS is ten dB under that volume gate (0.6 of
Pipecat's -110..-10 LUFS scale: -50 LUFS); digital silence, muted or noise-suppressed
microphones, a quiet phone line and the softest Opus-coded pauses fall under it, speech
does not."""

REPLAY_WINDOWS = 64
"""Most skipped windows kept to be run through the model before the first loud window after a
silence (32 ms each at 16 kHz and at 8 kHz: 2.05 s). Pipecat resets the model's state after
every 2 s (``pipecat.audio.vad.silero._MODEL_RESET_INTERVAL_SECS``, 62.5 windows) of quiet
audio, so this holds every window since the last reset: the model meets the utterance in
exactly the state Pipecat's would be in (see :class:`InlineSileroVADAnalyzer`)."""


class InlineSileroVADAnalyzer(SileroVADAnalyzer):
    """Pipecat's Silero VAD, run on the event loop, not scoring windows of silence.

    Inline. Pipecat hands every input chunk (50 per second at 20 ms) to a one-thread
    executor. One Silero window (512 samples at 16 kHz, 256 at 8 kHz; ONNX Runtime with one
    thread) takes a fraction of a millisecond, less than the thread hand-off and the GIL
    contention it causes, and a chunk shorter than a window needs no inference at all.

    Silent windows. While the VAD is quiet and its smoothed volume is under ``min_volume``,
    a window below :data:`QUIET_DBFS` is not scored: Pipecat's decision (``confidence >=
    threshold and volume >= min_volume``) is "not speaking" either way. Most of a session is
    such silence (the learner listens), so this removes most of the VAD's inference.

    The model's recurrent state still matters at the next utterance: at a soft dip inside
    an utterance its confidence depends on the state it met the utterance in. A gate that
    reset the state on every skipped window split utterances that Pipecat's VAD kept whole
    (20 of 100 Opus-coded LibriVox cases), and one that replayed only the last 0.5 s split
    "he was not | an ill disposed young man" on the phone path. So every skipped window
    since Pipecat's last periodic reset (every 2 s of quiet audio, which
    :meth:`voice_confidence` keeps counting, a skipped window as confidence 0) is kept and
    run through the model before the first loud window after them: the model then meets
    the utterance in Pipecat's exact state, and the VAD decides exactly as Pipecat's does
    after digital silence (whose windows Pipecat also scores below its 0.1 reset bound).
    The cost is up to :data:`REPLAY_WINDOWS` inferences (~9 ms) at the start of an
    utterance; the rest of a long silence is never scored.
    ``tests/test_vad_gate.py`` compares the transitions with Pipecat's across window
    alignments; ``bench/capacity.py`` prints the CPU per session with Pipecat's executor
    and every window scored as the baseline.
    """

    _quiet_power = (32768 * 10 ** (QUIET_DBFS / 20)) ** 2
    """Mean square of int16 samples at :data:`QUIET_DBFS`."""

    def __init__(self, **kwargs: Any) -> None:
        """Take ``SileroVADAnalyzer``'s arguments (``sample_rate`` in Hz, ``params``)."""
        super().__init__(**kwargs)
        self._skipped: deque[bytes] = deque(maxlen=REPLAY_WINDOWS)
        self._skipped_count = 0

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Append ``buffer`` (16-bit mono PCM at the analyzer's rate); return the VAD state."""
        return self._run_analyzer(buffer)

    def voice_confidence(self, buffer: bytes) -> float:
        """Speech confidence (0..1) of one window; 0, not scored, when it is silent."""
        if self._vad_state == VADState.QUIET and self._prev_volume < self._params.min_volume:
            samples = np.frombuffer(buffer, np.int16).astype(np.float32)
            if float(np.dot(samples, samples)) < self._quiet_power * len(samples):
                self._maybe_reset_model(0.0)
                if self._windows_since_reset == 0:  # Pipecat's reset: what came before is moot
                    self._skipped.clear()
                    self._skipped_count = 0
                else:
                    self._skipped.append(buffer)
                    self._skipped_count += 1
                return 0.0
        if self._skipped_count:
            if self._skipped_count > len(self._skipped):  # a reset held back by loud windows
                self._model.reset_states()
            for window in self._skipped:
                audio = np.frombuffer(window, np.int16).astype(np.float32) / 32768.0
                self._model(audio, self.sample_rate)
            self._skipped.clear()
            self._skipped_count = 0
        return super().voice_confidence(buffer)


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


class RemoteSmartTurnAnalyzer(BaseSmartTurn):
    """Smart-turn v3.2 asked over HTTP: the server's shared model (:mod:`services.turn_service`).

    Sends each end-of-turn question (the learner's audio since speech start, ≤ 8 s, float32
    16 kHz) as ``numpy.save`` bytes, the wire format of Pipecat's ``HttpSmartTurnAnalyzer``;
    Pipecat's own class is not used because in 1.14 it looks for a running event loop on
    the smart-turn worker thread, finds none, and so answers "incomplete" every time.

    A busy service (many sessions pausing at once) only delays the answer: a request is given
    up to the turn's maximum pause (``params.stop_secs``, Pipecat's own timeout for its HTTP
    analyzer), after which the turn ends as that pause would have ended it. A service that is
    gone or answers with an error instead makes the session degrade to its own copy of the
    model (:class:`LeanSmartTurnAnalyzer`, loaded on that first failure) for the rest of the
    session, logged once: turn ends stay as good, memory grows by ~25 MB.

    Args:
        url: ``http://127.0.0.1:<port>/predict``.
        timeout_s: Seconds to wait for an answer; default ``params.stop_secs``.
        **kwargs: ``params`` and ``sample_rate`` as for Pipecat's analyzers.
    """

    def __init__(self, *, url: str, timeout_s: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.url = url
        # Used from Pipecat's smart-turn thread only (one request at a time per session).
        self._client = httpx.Client(timeout=timeout_s or self.params.stop_secs)
        self._fallback: LeanSmartTurnAnalyzer | None = None
        self._fallback_lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        """Whether the service failed and the session now runs its own model."""
        return self._fallback is not None

    def _predict_endpoint(self, audio_array: np.ndarray) -> dict[str, Any]:
        """Ask the service (blocking; Pipecat calls this on its smart-turn thread)."""
        if self._fallback is None:
            body = io.BytesIO()
            np.save(body, np.ascontiguousarray(audio_array, dtype=np.float32))
            try:
                r = self._client.post(
                    self.url,
                    content=body.getvalue(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                r.raise_for_status()
                answer = r.json()
                return {
                    "prediction": int(answer["prediction"]),
                    "probability": float(answer["probability"]),
                }
            except httpx.TimeoutException as e:
                logger.warning(f"smart-turn service {self.url} too slow; ending the turn")
                raise SmartTurnTimeoutException(str(e)) from None
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                logger.warning(f"smart-turn service {self.url} failed ({e!r}); using a local model")
                with self._fallback_lock:
                    if self._fallback is None:
                        self._fallback = LeanSmartTurnAnalyzer(sample_rate=self._init_sample_rate)
                        self._fallback.set_sample_rate(self.sample_rate)
        return self._fallback._predict_endpoint(audio_array)

    async def cleanup(self) -> None:
        """Close the HTTP client (and the fallback model's thread, if any)."""
        await super().cleanup()
        self._client.close()
        if self._fallback is not None:
            await self._fallback.cleanup()


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
