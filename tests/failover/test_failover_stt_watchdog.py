"""The STT watchdog waits for a transcript only for speech that none has answered yet.

A streaming STT (Deepgram) endpoints on its own: a final transcript can arrive while the
learner is still speaking, and the tail after it may be too short or too quiet to transcribe
(Deepgram then answers ``Finalize`` with an empty result, which Pipecat drops). The watchdog
must not call that tail a fault; a long tail that gets no transcript still is one.
"""

from __future__ import annotations

from pipecat.frames.frames import (
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

from processors.failover.policy import FailoverPolicy
from processors.failover.stt import STTTracker
from testkit.failover_fakes import numbered_audio

POLICY = FailoverPolicy()
"""The default policy's numbers: 5 s for a transcript, 0.6 s of speech before one is due."""


def speak(tracker: STTTracker, seconds: float, now: float) -> float:
    """Feed ``seconds`` of 20 ms frames through the tracker; return the time after them."""
    for frame in numbered_audio(0, round(seconds / 0.02)):
        tracker.inlet(frame, now, dispatch=True)
        tracker.outlet(frame, now)
        now += 0.02
    return now


def transcript(tracker: STTTracker, now: float) -> None:
    tracker.outlet(TranscriptionFrame("Check the METAR.", "learner", "t"), now)


def utterance(tail_s: float, *, mid_transcript: bool) -> tuple[STTTracker, float]:
    """2 s of speech, maybe a transcript then, ``tail_s`` more, then the VAD's stop."""
    tracker = STTTracker(POLICY)
    tracker.upstream(VADUserStartedSpeakingFrame(start_secs=0.2), 0.0)
    now = speak(tracker, 2.0, 0.0)
    if mid_transcript:
        transcript(tracker, now)
    now = speak(tracker, tail_s + 0.2, now)  # the VAD stops 0.2 s after the last speech
    tracker.upstream(VADUserStoppedSpeakingFrame(stop_secs=0.2), now)
    return tracker, now


def test_a_short_tail_after_a_mid_utterance_transcript_is_no_fault() -> None:
    tracker, stopped = utterance(0.3, mid_transcript=True)
    assert tracker.watchdog(stopped + POLICY.ttfb_timeout_s + 1) is None


def test_a_long_tail_after_a_mid_utterance_transcript_still_needs_one() -> None:
    tracker, stopped = utterance(1.5, mid_transcript=True)
    assert tracker.watchdog(stopped + POLICY.ttfb_timeout_s - 1) is None
    assert tracker.watchdog(stopped + POLICY.ttfb_timeout_s + 1) == "timeout"


def test_an_utterance_nobody_transcribed_is_a_fault() -> None:
    tracker, stopped = utterance(0.3, mid_transcript=False)
    assert tracker.watchdog(stopped + POLICY.ttfb_timeout_s + 1) == "timeout"


def test_a_transcript_after_the_stop_ends_the_wait() -> None:
    tracker, stopped = utterance(1.5, mid_transcript=True)
    transcript(tracker, stopped + 1)
    assert tracker.watchdog(stopped + POLICY.ttfb_timeout_s + 1) is None
    assert tracker.idle()
