"""TTS failover tracking: one sentence is one unit of work, confirmed when its audio is whole.

Each sentence (an ``AggregatedTextFrame`` from the ``LLMTextProcessor``) is handed to the TTS as
a ``TTSSpeakFrame`` of its own. Inside an LLM turn that gives every sentence its own audio
context, ended by a ``TTSStoppedFrame`` with that context's id, in all Pipecat 1.14 TTS
services the chains use (HTTP ones close the context after the sentence; Cartesia ends it on
``done``, Deepgram on ``Flushed``, as ``flush_audio`` runs per speak frame). Without it the
sentences of a turn share one context and a service such as Deepgram's websocket reports no
boundary between them, so after a fault nobody could tell which sentences were heard.

Sentences are handed over one at a time, the next when the one before is confirmed (its audio
has been *made*, not played; providers make it several times faster than it plays, so the
next sentence is ready before the learner gets there). Pipelining them instead breaks
Deepgram's websocket, whose audio carries no context id: Pipecat files it under the context
playing at the moment it arrives, and inside an LLM turn a second open context loses its
audio to the first.

A sentence is confirmed when its context stops with at least the audio its characters need
(:attr:`FailoverPolicy.max_chars_per_audio_s`): Pipecat ends a context silently when a
websocket drops mid-sentence (Cartesia reconnects without an error) or the payload is garbage
(Deepgram logs it), so a short context is the only sign of a cut. The sentence's text frames
(``TTSTextFrame``, word progress) are held until then, so the assistant context and the
client's transcript get each sentence once, from whichever provider finished it.

A ``TTSSpeakFrame`` spoken outside an LLM turn (the greeting, a farewell) is committed to the
context by the ``LLMAssistantPushAggregationFrame`` Pipecat pushes as its context stops,
right *before* the ``TTSStoppedFrame``. It is held with the sentence's text, or it would
overtake the held text and the assistant aggregator would close an empty turn (the greeting
would be spoken but never recorded); a replay drops it, and the backup pushes its own.
"""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import (
    AggregatedTextFrame,
    AggregatedTextProgressFrame,
    Frame,
    LLMAssistantPushAggregationFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)

from processors.failover.policy import FailoverPolicy
from processors.failover.tracker import Item, Outlet, Tracker


def _speak(text: str, like: TTSSpeakFrame | AggregatedTextFrame) -> TTSSpeakFrame:
    """A fresh ``TTSSpeakFrame`` for ``text`` keeping ``like``'s context and interrupt flags."""
    frame = TTSSpeakFrame(
        text,
        append_to_context=bool(like.append_to_context),
        text_type=like.text_type,
    )
    frame.interruptible = like.interruptible
    return frame


def letters(text: str) -> int:
    """Count the characters that take time to say (letters and digits)."""
    return sum(1 for c in text if c.isalnum())


class TTSTracker(Tracker):
    """Follows sentences through the active TTS (see the module docstring).

    Attributes:
        produces_audio: Whether the active service speaks at all (the text-only link doesn't),
            set by the switcher on every switch.
    """

    role = "tts"
    serial = True

    def __init__(self, policy: FailoverPolicy) -> None:
        super().__init__(policy)
        self._warned_tokens = False
        self.turn_open = False

    def interrupted(self) -> None:
        """The reply was cut by the learner; the TTS services close their turn too."""
        super().interrupted()
        self.turn_open = False

    def _work_item(self, frame: Frame) -> Item | None:
        if isinstance(frame, AggregatedTextFrame) and not isinstance(frame, TTSTextFrame):
            if frame.skip_tts or not frame.text.strip():
                return None
            return Item(_speak(frame.text, frame), work=True, text=frame.text)
        if isinstance(frame, TTSSpeakFrame) and frame.text.strip():
            return Item(frame, work=True, text=frame.text)
        if isinstance(frame, LLMTextFrame) and not self._warned_tokens:
            self._warned_tokens = True
            logger.warning(
                "failover TTS got raw LLM tokens: put an LLMTextProcessor before it, or a fault "
                "cannot tell which sentences were spoken"
            )
        return None

    def _by_context(self, context_id: str | None) -> Item | None:
        if context_id is None:
            return None
        return next((it for it in self.items if it.work and it.context_id == context_id), None)

    def outlet(self, frame: Frame, now: float) -> Outlet:
        """Follow a frame leaving the TTS (noting whether an LLM turn is open downstream)."""
        if isinstance(frame, LLMFullResponseStartFrame | LLMFullResponseEndFrame):
            self.turn_open = isinstance(frame, LLMFullResponseStartFrame)
        return super().outlet(frame, now)

    def _outlet_work(self, frame: Frame, now: float) -> Outlet:
        if isinstance(frame, TTSTextFrame | AggregatedTextProgressFrame):
            item = self._by_context(frame.context_id)
            if item is None:
                return Outlet([frame])
            item.held.append(frame)
            return Outlet([])
        if isinstance(frame, LLMAssistantPushAggregationFrame):
            # Pushed as the sentence's context stops (see the module docstring).
            item = self.first_work()
            if item is None or item.context_id is None:
                return Outlet([frame])
            item.held.append(frame)
            return Outlet([])
        if isinstance(frame, AggregatedTextFrame):
            if frame.will_be_spoken and frame.context_id:
                self._link(frame, now)
            return Outlet([frame])
        if isinstance(frame, TTSAudioRawFrame):
            item = self._by_context(frame.context_id)
            if item is not None:
                channels = max(frame.num_channels, 1)
                item.audio_s += len(frame.audio) / (2 * channels * max(frame.sample_rate, 1))
                item.last_activity = now
            return Outlet([frame])
        if isinstance(frame, TTSStoppedFrame):
            item = self._by_context(frame.context_id)
            if item is None:
                return Outlet([frame])
            if not self._whole(item):
                logger.warning(
                    f"failover TTS: {item.audio_s:.2f} s of audio for {letters(item.text)} "
                    f"characters is a cut sentence: {item.text!r}"
                )
                return Outlet([], fault="truncated" if item.audio_s else "no_audio")
            held = item.held
            self._confirm(item, now)
            return Outlet([*held, frame])
        return Outlet([frame])

    def _link(self, announce: AggregatedTextFrame, now: float) -> None:
        """Tie the service's announcement of a sentence (with its context id) to the item."""
        for item in self.items:
            if (
                item.work
                and item.context_id is None
                and item.sent_at is not None
                and item.text == announce.text
            ):
                item.context_id = announce.context_id
                item.last_activity = now
                return

    def _whole(self, item: Item) -> bool:
        """Whether the sentence got the audio its characters need (always, for text-only)."""
        rate = self.policy.max_chars_per_audio_s
        if not self.produces_audio or rate <= 0:
            return True
        return item.audio_s >= letters(item.text) / rate

    def replay(self, now: float) -> list[Frame]:
        """The lost sentences, re-made; inside an LLM turn, first a start of the turn.

        The backup never saw the turn's ``LLMFullResponseStartFrame`` (it went through the
        failed service and on to the assistant aggregator). Without one, Pipecat's TTS treats
        each speak frame as a turn of its own and has the assistant aggregator commit every
        sentence as a separate message; the made-up start is dropped on its way out.
        """
        frames = super().replay(now)
        if self.turn_open and frames:
            start = LLMFullResponseStartFrame()
            self.injected.add(start.id)
            frames.insert(0, start)
        return frames

    def _replay_work(self, item: Item) -> None:
        assert isinstance(item.frame, TTSSpeakFrame)
        item.frame = _speak(item.text, item.frame)
        item.context_id = None
        item.audio_s = 0.0
        item.held = []

    def watchdog(self, now: float) -> str | None:
        """Time out a sentence with no first audio, no audio for a while, or too long overall.

        The clock of a sentence starts when it was dispatched or when the sentence before it
        was confirmed, whichever is later: a service speaks sentences in order.
        """
        super().watchdog(now)
        item = self.first_work()
        if item is None or item.sent_at is None:
            return None
        start = max(item.sent_at, self.last_confirm_at)
        active = max(start, item.last_activity or 0.0)
        if now - active > self.policy.ttfb_timeout_s or now - start > self.policy.request_cap_s:
            return "timeout"
        return None
