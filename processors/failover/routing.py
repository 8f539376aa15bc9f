"""The routing half of a failover group: who gets each frame, and whose output gets out.

:class:`RoutingSwitcher` keeps Pipecat's ``ServiceSwitcher`` layout (one branch per service,
gated by filters) and changes two things:

- **Routing at the door.** Each downstream frame is dispatched under a lock to the service
  that is active at that moment, so frames sent before a switch and replayed frames sent
  after it cannot overtake each other (the switcher's own filters decide later, in its
  queue).
- **An output gate per branch.** A frame a service merely passes on leaves through the branch
  it was sent to (an interruption sent to the old service still reaches the speaker); a frame
  a service *makes* leaves only while that service is active and not halted by a fault, so a
  failed provider's late audio, text or reply end never reaches the learner.

Every frame in and out goes through the role's :class:`processors.failover.tracker.Tracker`.
:class:`processors.failover.switcher.FailoverSwitcher` adds fault handling on top.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    ServiceSwitcherFrame,
    StartFrame,
)
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyManual
from pipecat.processors.filters.function_filter import FunctionFilter
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.failover.tracker import Tracker

_ROUTED_MAX = 4096
"""Frames remembered with the branch they were sent to (older ones have long left)."""

LIFECYCLE = (StartFrame, EndFrame, CancelFrame)

_Check = Callable[[Frame], Awaitable[bool]]


class RecentIds:
    """The last ``size`` frame ids added, as a set (``in`` and ``add``).

    Pipecat's ``ParallelPipeline`` remembers the id of every frame that leaves it (a plain
    set that is never pruned) so that a frame two branches pass on leaves once. In a
    failover group that is the learner's audio, every TTS chunk and every LLM token: about
    180,000 ids an hour per group, 10-20 MB over an hour's session. Here each frame goes
    down one branch (lifecycle frames, the only ones sent to every branch, are counted
    apart), so the recent ids are enough.
    """

    def __init__(self, size: int = _ROUTED_MAX) -> None:
        self._ids: OrderedDict[int, None] = OrderedDict()
        self._size = size

    def __contains__(self, frame_id: object) -> bool:
        return frame_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, frame_id: int) -> None:
        """Remember ``frame_id``, forgetting the oldest beyond ``size``."""
        self._ids[frame_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)


class FailoverStrategy(ServiceSwitcherStrategyManual):
    """Hands every error of the active service to the :class:`FailoverSwitcher` that owns it.

    Manual switching (``ManuallySwitchServiceFrame``) still works.

    Attributes:
        group: The owning switcher (set right after construction).
    """

    group: RoutingSwitcher | None = None

    async def handle_error(self, error: ErrorFrame) -> FrameProcessor | None:
        """Let the group decide; a truthy result tells ``ServiceSwitcher`` to absorb the error."""
        if self.group is None:
            return None
        return await self.group.on_service_error(error)

    async def activate(self, service: FrameProcessor) -> bool:
        """Make ``service`` active (refused if it cannot be given work); True on success."""
        return await self._set_active_if_available(service) is not None


class RoutingSwitcher(ServiceSwitcher[FailoverStrategy]):
    """A ``ServiceSwitcher`` that routes at the door and gates each branch's output.

    Args:
        services: The services, primary first.
        tracker: The role's tracker.

    Attributes:
        tracker: The tracker.
    """

    def __init__(self, services: list[FrameProcessor], tracker: Tracker) -> None:
        self._target: FrameProcessor | None = None
        self._routed: OrderedDict[int, FrameProcessor] = OrderedDict()
        self._injected: set[int] = set()
        self._halted = False
        self._stopping = False
        super().__init__(services, strategy_type=FailoverStrategy)
        self._seen_ids = RecentIds()  # type: ignore[assignment]  # never pruned upstream
        self.strategy.group = self
        self.tracker = tracker
        self._lock = asyncio.Lock()

    async def on_service_error(self, error: ErrorFrame) -> FrameProcessor | None:
        """Decide about an error of the active service (see the subclass); None passes it."""
        return None

    def _raise_fault(self, service: FrameProcessor, reason: str) -> None:
        """Act on a fault the tracker saw in a service's output (see the subclass)."""

    def _started(self) -> None:
        """Called once the ``StartFrame`` has gone through every branch."""

    # --- branches -----------------------------------------------------------------------

    def _make_pipeline_definitions(  # type: ignore[override]
        self, services: list[FrameProcessor], strategy: FailoverStrategy
    ) -> list[list[FrameProcessor]]:
        """One branch per service: door filter, service, upstream filter, output gate."""
        return [self._branch(service) for service in services]

    def _branch(self, service: FrameProcessor) -> list[FrameProcessor]:
        async def door(frame: Frame) -> bool:
            return service is (self._target or self.strategy.active_service)

        async def upward(frame: Frame) -> bool:
            return service is self.strategy.active_service

        async def gate(frame: Frame) -> bool:
            return self._gate(service, frame)

        def make(check: _Check, direction: FrameDirection) -> FunctionFilter:
            return FunctionFilter(
                filter=check,
                direction=direction,
                filter_system_frames=True,
                enable_direct_mode=True,
            )

        return [
            make(door, FrameDirection.DOWNSTREAM),
            service,
            make(upward, FrameDirection.UPSTREAM),
            make(gate, FrameDirection.DOWNSTREAM),
        ]

    def _gate(self, service: FrameProcessor, frame: Frame) -> bool:
        for injected in (self._injected, self.tracker.injected):
            if frame.id in injected:
                injected.discard(frame.id)
                return False
        owner = self._routed.get(frame.id)
        if owner is not None:
            return owner is service
        return service is self.strategy.active_service and not self._halted

    async def _dispatch(self, frames: list[Frame], target: FrameProcessor) -> None:
        """Send ``frames`` down ``target``'s branch, in order (call with the lock held)."""
        for frame in frames:
            self._routed[frame.id] = target
            self._routed.move_to_end(frame.id)
            while len(self._routed) > _ROUTED_MAX:
                self._routed.popitem(last=False)
            self._target = target
            try:
                await super().process_frame(frame, FrameDirection.DOWNSTREAM)
            finally:
                self._target = None

    # --- frames in and out --------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Route a frame: lifecycle to all, downstream work via the tracker, upstream as is."""
        if isinstance(frame, LIFECYCLE):
            if isinstance(frame, EndFrame | CancelFrame):
                self._stopping = True
            await super().process_frame(frame, direction)
            if isinstance(frame, StartFrame):
                self._started()
            return
        if direction is FrameDirection.UPSTREAM or isinstance(frame, ServiceSwitcherFrame):
            self.tracker.upstream(frame, time.monotonic())
            await super().process_frame(frame, direction)
            return
        async with self._lock:
            frames = self.tracker.inlet(frame, time.monotonic(), dispatch=not self._halted)
            await self._dispatch(frames, self.strategy.active_service)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Pass what leaves a service through the tracker (it may hold, drop or fault it)."""
        if direction is not FrameDirection.DOWNSTREAM or isinstance(frame, LIFECYCLE):
            await super().push_frame(frame, direction)
            return
        now = time.monotonic()
        confirmed = self.tracker.confirmed
        result = self.tracker.outlet(frame, now)
        if result.fault:
            self._raise_fault(self.strategy.active_service, result.fault)
        for out in result.emit:
            await super().push_frame(out, direction)
        if self.tracker.serial and self.tracker.confirmed != confirmed and not self._halted:
            async with self._lock:
                if not self._halted:  # work confirmed: hand over what waited for it
                    await self._dispatch(self.tracker.ready(now), self.strategy.active_service)
