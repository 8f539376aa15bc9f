"""What a failover group has handed its active service and not yet seen come back.

A :class:`Tracker` sees every frame entering a failover group (:meth:`Tracker.inlet`) and every
frame leaving it (:meth:`Tracker.outlet`), in order. From that it knows the work in flight
(a sentence, an LLM request, the learner's utterance), whether the service is stalling
(:meth:`Tracker.watchdog`) and what must be sent again after a fault (:meth:`Tracker.replay`).
Subclasses per role: :mod:`processors.failover.tts`, :mod:`processors.failover.llm`,
:mod:`processors.failover.stt`. Trackers never await: the switcher calls them from several
tasks, and a synchronous call is atomic on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    ServiceUpdateSettingsFrame,
    SystemFrame,
)

from processors.failover.policy import FailoverPolicy


@dataclass(eq=False)
class Item:
    """One unit handed to the service: work (a sentence, a request) or a frame passing by.

    Attributes:
        frame: The frame dispatched (for work, rebuilt by each replay).
        work: True for work the service must do; False for a frame it only passes on.
        sent_at: When it was dispatched (monotonic seconds); ``None`` while held back.
        last_activity: When the service last showed progress on it (monotonic seconds).
        text: TTS: the sentence; LLM: the reply text emitted so far.
        context_id: TTS: the audio context the service opened for it.
        audio_s: TTS: seconds of audio received for it.
        held: TTS: text frames held until the sentence is confirmed whole.
        base: LLM: the request's original ``LLMContext``.
        joining: LLM: buffered start of a continuation, checked for repeats (None: not joining).
        repeats: LLM: texts a continuation must not repeat (already emitted).
    """

    frame: Frame
    work: bool
    sent_at: float | None = None
    last_activity: float | None = None
    text: str = ""
    context_id: str | None = None
    audio_s: float = 0.0
    held: list[Frame] = field(default_factory=list)
    base: object = None
    joining: str | None = None
    repeats: tuple[str, ...] = ()


@dataclass
class Outlet:
    """What the switcher does with one frame leaving the active service.

    Attributes:
        emit: Frames to push on, in order (empty: drop or hold the frame).
        fault: A fault reason (see :data:`processors.failover.policy.REASONS`), or None.
    """

    emit: list[Frame]
    fault: str | None = None


class Tracker:
    """Base tracker: frames passing through the service, in dispatch order.

    Subclasses override :meth:`_work_item` to recognise work, :meth:`_outlet_work` to follow
    it, :meth:`_replay_work` to rebuild it, plus :meth:`watchdog` and :meth:`idle`.

    Attributes:
        role: ``stt``, ``llm`` or ``tts``.
        items: Work and passing frames not yet seen leaving the group, in dispatch order.
        confirmed: Work units completed so far (a 429 backoff resets when it grows).
        last_confirm_at: When work last completed (monotonic seconds).
        injected: Ids of frames the tracker made up for a replay that must not leave the group.
    """

    role = "?"
    serial = False
    """Whether one unit of work at a time is handed over (later frames wait for it)."""

    def __init__(self, policy: FailoverPolicy) -> None:
        self.policy = policy
        self.items: list[Item] = []
        self.confirmed = 0
        self.last_confirm_at = 0.0
        self.injected: set[int] = set()
        self.produces_audio = True

    # --- entering the group -------------------------------------------------------------

    def inlet(self, frame: Frame, now: float, dispatch: bool) -> list[Frame]:
        """Note a downstream frame entering the group; return the frames to dispatch now.

        System frames always go through (an interruption must reach the service). Other
        frames become items; while ``dispatch`` is False (a fault is being handled) they are
        held and go out with the next :meth:`replay`.

        Args:
            frame: The frame.
            now: Monotonic time in seconds.
            dispatch: Whether the active service may be given work now.
        """
        if isinstance(frame, SystemFrame):
            if isinstance(frame, InterruptionFrame):
                self.interrupted()
            self._inlet_system(frame, now)
            return [frame]
        if isinstance(frame, ServiceUpdateSettingsFrame):
            return [frame]
        item = self._work_item(frame) or Item(frame, work=False)
        self.items.append(item)
        return self.ready(now) if dispatch else []

    def ready(self, now: float) -> list[Frame]:
        """Mark and return the held items that may be dispatched now, in order.

        Everything may go at once, unless the tracker is :attr:`serial`: then nothing passes a
        unit of work still in flight.
        """
        frames: list[Frame] = []
        for item in self.items:
            if item.sent_at is not None:
                if item.work and self.serial:
                    return frames
                continue
            item.sent_at = now
            frames.append(item.frame)
            if item.work and self.serial:
                return frames
        return frames

    def upstream(self, frame: Frame, now: float) -> None:
        """Note an upstream frame entering the group from below (VAD events for the STT)."""

    def interrupted(self) -> None:
        """The learner barged in: the work in flight is cancelled, nothing will be replayed."""
        self.items.clear()

    def _inlet_system(self, frame: SystemFrame, now: float) -> None:
        """Note a system frame (input audio for the STT)."""

    def _work_item(self, frame: Frame) -> Item | None:
        """Return an item for ``frame`` if it is work for the service, else None."""
        return None

    # --- leaving the group --------------------------------------------------------------

    def outlet(self, frame: Frame, now: float) -> Outlet:
        """Follow a frame leaving the active service; say what to push and whether it faulted.

        Args:
            frame: The frame the service pushed downstream.
            now: Monotonic time in seconds.
        """
        for i, item in enumerate(self.items):
            if not item.work and item.frame.id == frame.id:
                del self.items[i]
                return Outlet([frame])
        return self._outlet_work(frame, now)

    def _outlet_work(self, frame: Frame, now: float) -> Outlet:
        return Outlet([frame])

    def _confirm(self, item: Item, now: float) -> None:
        """Work ``item`` is done: forget it (and work before it the service silently dropped)."""
        index = self.items.index(item)
        self.items[: index + 1] = [it for it in self.items[:index] if not it.work]
        self.confirmed += 1
        self.last_confirm_at = now

    def first_work(self) -> Item | None:
        """The oldest dispatched work item, or None."""
        return next((it for it in self.items if it.work and it.sent_at is not None), None)

    # --- faults and replay --------------------------------------------------------------

    def watchdog(self, now: float) -> str | None:
        """Return ``"timeout"`` if the service is stalling, else None (also prunes items)."""
        cap = self.policy.request_cap_s
        # A passing frame the service never sent on within the cap was consumed by it.
        self.items = [
            it
            for it in self.items
            if it.work or it.sent_at is None or now - it.sent_at <= cap + self.policy.ttfb_timeout_s
        ]
        return None

    def replay(self, now: float) -> list[Frame]:
        """Return everything to send (again) to the service taking over, in order.

        Work is rebuilt (new frames, so late output of the failed attempt cannot be mistaken
        for the new one); passing frames are sent as they are. A :attr:`serial` tracker
        returns up to the first unit of work; the rest follows through :meth:`ready`.

        Args:
            now: Monotonic time in seconds.
        """
        for item in self.items:
            if item.work:
                self._replay_work(item)
            item.sent_at = None
            item.last_activity = None
        return self.ready(now)

    def _replay_work(self, item: Item) -> None:
        """Rebuild ``item.frame`` for a new attempt (subclasses)."""

    def idle(self) -> bool:
        """Whether no work is in flight (a safe moment to move back to the primary)."""
        return not any(it.work for it in self.items)
