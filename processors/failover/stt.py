"""STT failover tracking: the learner's current utterance is the unit of work.

Input audio is kept from :attr:`FailoverPolicy.stt_preroll_s` before the VAD's start of speech
until a transcript for it leaves the group (a transcript in mid-utterance, from a streaming
STT's own endpointing, starts the buffer afresh). After a fault the buffer is replayed into
the backup between a made-up ``VADUserStartedSpeakingFrame`` and, if the learner has stopped,
``VADUserStoppedSpeakingFrame`` (segmented STTs such as OpenAI's transcribe on it; Deepgram
finalizes on it), followed by live audio. Those VAD frames and the replayed audio the rest of
the pipeline already heard are dropped on the way out, so the user aggregator's VAD and turn
logic see each chunk once.

The VAD runs in the user aggregator, after the STT: its events reach the STT travelling
upstream, and the group watches them there (or downstream, when a test injects them).

Watchdog: a transcript is due within :attr:`FailoverPolicy.ttfb_timeout_s` of the end of an
utterance of at least :attr:`FailoverPolicy.stt_min_speech_s` of speech, counted since the
utterance's last transcript (a streaming STT's own endpoint may answer mid-utterance). A
replayed utterance is not timed again, so a noise that no provider transcribes costs one
switch, not the chain.
"""

from __future__ import annotations

from collections import deque

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    SystemFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

from processors.failover.policy import FailoverPolicy
from processors.failover.tracker import Outlet, Tracker


def _seconds(frame: InputAudioRawFrame) -> float:
    return len(frame.audio) / (2 * max(frame.num_channels, 1) * max(frame.sample_rate, 1))


class STTTracker(Tracker):
    """Follows the learner's utterances through the active STT (see the module docstring)."""

    role = "stt"

    def __init__(self, policy: FailoverPolicy) -> None:
        super().__init__(policy)
        self._ring: deque[InputAudioRawFrame] = deque()
        self._ring_s = 0.0
        self.utterance: list[InputAudioRawFrame] | None = None
        self.speaking = False
        self._stopped_at: float | None = None
        self._speech_s = 0.0
        self._replayed = False
        self._emitted: set[int] = set()

    def _inlet_system(self, frame: SystemFrame, now: float) -> None:
        if isinstance(frame, InputAudioRawFrame):
            self._ring.append(frame)
            self._ring_s += _seconds(frame)
            keep = self.policy.stt_preroll_s
            while self._ring and self._ring_s - _seconds(self._ring[0]) >= keep:
                old = self._ring.popleft()
                self._ring_s -= _seconds(old)
                if self.utterance is None:
                    self._emitted.discard(old.id)
            if self.utterance is not None:
                self.utterance.append(frame)
            if self.speaking:
                self._speech_s += _seconds(frame)
        else:
            self._vad(frame, now)

    def upstream(self, frame: Frame, now: float) -> None:
        """Watch the VAD's events coming up from the user aggregator."""
        self._vad(frame, now)

    def _vad(self, frame: Frame, now: float) -> None:
        if frame.id in self.injected:
            return
        if isinstance(frame, VADUserStartedSpeakingFrame) and not self.speaking:
            self.speaking = True
            self.utterance = list(self._ring)
            self._speech_s = frame.start_secs
            self._stopped_at = None
            self._replayed = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self.speaking:
            self.speaking = False
            self._stopped_at = now
            self._speech_s -= frame.stop_secs

    def _outlet_work(self, frame: Frame, now: float) -> Outlet:
        if isinstance(frame, InputAudioRawFrame):
            if frame.id in self._emitted:
                return Outlet([])  # replayed audio the pipeline already heard
            self._emitted.add(frame.id)
            if len(self._emitted) > 4 * (len(self._ring) + len(self.utterance or ())) + 64:
                self._prune()
            return Outlet([frame])
        if isinstance(frame, TranscriptionFrame) and not isinstance(
            frame, InterimTranscriptionFrame
        ):
            self.confirmed += 1
            self.last_confirm_at = now
            if self.speaking:
                # Answered so far: only speech after this transcript may still be owed one
                # (a short tail after a streaming STT's own endpoint may get none).
                self.utterance = []
                self._speech_s = 0.0
            elif self._stopped_at is not None:
                self._done()
        return Outlet([frame])

    def _done(self) -> None:
        self.utterance = None
        self._stopped_at = None
        self._replayed = False
        self._prune()

    def _prune(self) -> None:
        """Forget emitted ids of audio that can no longer be replayed."""
        live = {f.id for f in self._ring}
        live.update(f.id for f in self.utterance or ())
        self._emitted &= live

    def replay(self, now: float) -> list[Frame]:
        """The utterance so far (framed by VAD events), then any frames held back."""
        frames: list[Frame] = []
        if self.utterance is not None:
            start = VADUserStartedSpeakingFrame(start_secs=0.0)
            self.injected.add(start.id)
            frames.append(start)
            frames.extend(self.utterance)
            if not self.speaking:
                stop = VADUserStoppedSpeakingFrame(stop_secs=0.0)
                self.injected.add(stop.id)
                frames.append(stop)
                self._stopped_at = now
            self._replayed = True
        return frames + super().replay(now)

    def watchdog(self, now: float) -> str | None:
        """Time out when no transcript follows an utterance long enough to be speech."""
        super().watchdog(now)
        if self._stopped_at is not None and now - self._stopped_at > self.policy.request_cap_s:
            self._done()  # nothing came for it (noise, or a replay nobody answered): move on
            return None
        if (
            self._stopped_at is not None
            and not self._replayed
            and self._speech_s >= self.policy.stt_min_speech_s
            and now - self._stopped_at > self.policy.ttfb_timeout_s
        ):
            return "timeout"
        return None

    def idle(self) -> bool:
        """Whether the learner is silent and no transcript is awaited."""
        return not self.speaking and self._stopped_at is None and super().idle()
