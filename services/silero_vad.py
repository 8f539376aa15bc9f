"""Silero VAD run inline on the event loop, skipping the model on windows of silence.

Pipecat's ``SileroVADAnalyzer`` scores every 32 ms window; most of a session is silence, so
:class:`InlineSileroVADAnalyzer` leaves quiet windows unscored and replays them through the
model before the next loud one, so its decisions are the ones Pipecat's would be.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState

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
    ``tests/pipeline/test_vad_gate.py`` compares the transitions with Pipecat's across window
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
