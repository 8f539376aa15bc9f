"""``FailoverSwitcher``: Pipecat's ``ServiceSwitcher`` that switches on any provider fault.

On top of the routing and output gating of :class:`processors.failover.routing.
RoutingSwitcher` it adds:

- **Faults from everywhere.** Every ``ErrorFrame`` of the active service (Pipecat's failover
  only acts on permanent errors), the tracker's watchdog (no first output, a stall, the cap),
  a cut sentence, and a TTS websocket dropping mid-sentence (Cartesia reconnects silently).
- **One controller task** handling faults in order: interrupt the failed service (drops its
  queue, cancels a hung request), wait out a 429 backoff and retry the same provider, or
  switch to the next provider and replay the lost work there, then send the learner one
  RTVI notice and call ``on_switch`` once. The same task runs the watchdog and the circuit
  breaker, which moves back to a failed provider after its cool-down once no work is in
  flight (notice reason ``recovered``).

What counts as work, and what to replay, is the role's :class:`processors.failover.tracker.
Tracker`. Build groups with :mod:`processors.failover.groups`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from loguru import logger
from pipecat.frames.frames import ErrorFrame, InterruptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame
from pipecat.utils.errors import ErrorCategory

from processors.failover.deferred import DeferredService
from processors.failover.policy import (
    FailoverPolicy,
    OnSwitch,
    classify_fault,
    is_provider_fault,
)
from processors.failover.routing import FailoverStrategy, RoutingSwitcher
from processors.failover.tracker import Tracker

__all__ = ["FailoverStrategy", "FailoverSwitcher"]

_VAGUE = {"truncated", "no_audio", "timeout", "disconnect", "error"}
"""Reasons a following ``ErrorFrame`` of the same fault may replace with a more precise one."""


class FailoverSwitcher(RoutingSwitcher):
    """A failover group: one of ``services`` works at a time; faults move work to the next.

    Args:
        role: ``stt``, ``llm`` or ``tts`` (notices and events carry it).
        services: ``(provider name, service)`` pairs, primary first.
        tracker: The role's tracker.
        policy: Timeouts, backoff and cool-down.
        on_switch: Awaited with ``(role, from, to, reason)`` after every switch.

    Attributes:
        on_switch: The callback above; may be set after construction (e.g. once the session
            process knows its session id).

    Raises:
        ValueError: fewer than two services, or a provider name used twice.
    """

    def __init__(
        self,
        role: str,
        services: Sequence[tuple[str, FrameProcessor]],
        tracker: Tracker,
        policy: FailoverPolicy,
        on_switch: OnSwitch | None = None,
    ) -> None:
        names = [name for name, _ in services]
        if len(services) < 2 or len(set(names)) != len(names):
            raise ValueError(f"a failover group needs 2+ distinct providers, got {names}")
        super().__init__([s for _, s in services], tracker)
        self.role = role
        self.policy = policy
        self._names = {id(s): name for name, s in services}
        self.on_switch = on_switch
        self._fault: tuple[FrameProcessor, str] | None = None  # raised, not yet handled
        self._fault_raised = asyncio.Event()
        self._open_until: dict[int, float] = {}
        self._permanent: set[int] = set()
        self._strikes = 0
        self._strike_mark = 0
        self._task: asyncio.Task[None] | None = None
        tracker.produces_audio = bool(getattr(self.services[0], "produces_audio", True))
        for service in self.services:
            if "on_disconnected" in getattr(service, "_event_handlers", {}):
                service.add_event_handler("on_disconnected", self._on_disconnected)

    def provider(self, service: FrameProcessor) -> str:
        """The provider name a service was given under."""
        return self._names[id(service)]

    @property
    def active_provider(self) -> str:
        """The provider name of the active service."""
        return self.provider(self.strategy.active_service)

    def _started(self) -> None:
        if self._task is None:
            self._task = self.create_task(self._control(), f"{self}::failover")

    # --- faults -------------------------------------------------------------------------

    async def on_service_error(self, error: ErrorFrame) -> FrameProcessor | None:
        """Take an ``ErrorFrame`` of the active service as a fault (absorbing it), or pass it."""
        service = error.processor
        if service is None or service is not self.strategy.active_service:
            return None
        if self._stopping or not is_provider_fault(error):
            return None
        if error.category is not None and error.category.is_permanent:
            self._permanent.add(id(service))
        reason = classify_fault(error)
        if not self._halted:
            logger.warning(
                f"{self}: {self.provider(service)} fault ({error.category}): {error.error}"
            )
            self._raise_fault(service, reason)
        elif self._fault is not None and self._fault[0] is service:
            # The error that explains a fault seen a moment earlier (a context that ended
            # short, say) names it better; a 429 must be known as one to be retried.
            if self._fault[1] in _VAGUE and reason not in _VAGUE:
                self._fault = (service, reason)
        return service

    async def _on_disconnected(self, service: FrameProcessor, *args: object) -> None:
        """A TTS websocket dropped: a fault if a sentence was in flight on the active one."""
        if service is self.strategy.active_service and self.tracker.first_work() is not None:
            self._raise_fault(service, "disconnect")

    def _raise_fault(self, service: FrameProcessor, reason: str) -> None:
        """Stop the active service's output at once and queue the fault for the controller."""
        if self._halted or self._stopping or service is not self.strategy.active_service:
            return
        self._halted = True
        self._fault = (service, reason)
        self._fault_raised.set()

    async def _control(self) -> None:
        """Handle faults in order; between them run the watchdog and the circuit breaker."""
        while True:
            try:
                await asyncio.wait_for(self._fault_raised.wait(), self.policy.watchdog_tick_s)
            except TimeoutError:
                await self._tick()
                continue
            await asyncio.sleep(0)  # let an error pushed right behind the fault name it
            self._fault_raised.clear()
            if self._fault is None:
                continue
            service, reason = self._fault
            self._fault = None
            try:
                await self._handle_fault(service, reason)
            except Exception as e:  # a bug here must not leave the group halted forever
                logger.exception(f"{self}: handling a {reason} fault failed: {e}")
                self._halted = False

    async def _tick(self) -> None:
        if self._halted or self._stopping:
            return
        now = time.monotonic()
        reason = self.tracker.watchdog(now)
        if reason:
            logger.warning(f"{self}: {self.active_provider} {reason} (watchdog)")
            self._raise_fault(self.strategy.active_service, reason)
        else:
            await self._recover(now)

    async def _handle_fault(self, failed: FrameProcessor, reason: str) -> None:
        await self._interrupt(failed)
        if reason == "rate_limit":
            if self.tracker.confirmed != self._strike_mark:
                self._strikes = 0
            if self._strikes < len(self.policy.rate_limit_backoff_s):
                delay = self.policy.rate_limit_backoff_s[self._strikes]
                self._strikes += 1
                self._strike_mark = self.tracker.confirmed
                logger.info(f"{self}: {self.provider(failed)} rate-limited, retry in {delay} s")
                await asyncio.sleep(delay)
                if await self._revive(failed):
                    async with self._lock:
                        await self._dispatch(self.tracker.replay(time.monotonic()), failed)
                        self._halted = False
                    return
        self._strikes = 0
        self._open_until[id(failed)] = time.monotonic() + self.policy.cooldown_s
        backup = await self._next_after(failed)
        if backup is None:
            await self._give_up(failed, reason)
            return
        await self._switch(failed, backup, reason, replay=True)

    async def _interrupt(self, service: FrameProcessor) -> None:
        """Drop the service's queued work and cancel what it is doing; its echo is dropped."""
        frame = InterruptionFrame()
        self._injected.add(frame.id)
        await service.queue_frame(frame)

    async def _revive(self, service: FrameProcessor) -> bool:
        """Make a service usable again unless its provider refused us for good.

        A backup not built yet (:class:`processors.failover.deferred.DeferredService`) is
        built and started here; one that cannot be built counts as refused for good.
        """
        if id(service) in self._permanent:
            return False
        if isinstance(service, DeferredService) and not service.built:
            try:
                await service.build()
            except Exception as e:
                logger.error(f"{self}: building backup {self.provider(service)} failed: {e}")
                self._permanent.add(id(service))
                return False
        if not service.is_usable:
            await service.set_usable(True)
        return service.is_usable

    async def _next_after(self, failed: FrameProcessor) -> FrameProcessor | None:
        """The next provider in chain order whose breaker is closed; else the soonest to close."""
        services = self.services
        start = services.index(failed)
        order = [services[(start + i) % len(services)] for i in range(1, len(services))]
        now = time.monotonic()
        ready = [s for s in order if self._open_until.get(id(s), 0.0) <= now]
        waiting = sorted(
            (s for s in order if s not in ready), key=lambda s: self._open_until[id(s)]
        )
        for candidate in ready + waiting:
            if await self._revive(candidate):
                return candidate
        return None

    async def _switch(
        self, old: FrameProcessor, new: FrameProcessor, reason: str, *, replay: bool
    ) -> None:
        async with self._lock:
            if not await self.strategy.activate(new):
                self._halted = False
                return
            self.tracker.produces_audio = bool(getattr(new, "produces_audio", True))
            frames = self.tracker.replay(time.monotonic()) if replay else []
            await self._dispatch(frames, new)
            self._halted = False
        await self._announce(old, new, reason)

    async def _announce(self, old: FrameProcessor, new: FrameProcessor, reason: str) -> None:
        """One RTVI notice to the learner's client and one ``on_switch`` call per switch."""
        before, after = self.provider(old), self.provider(new)
        logger.warning(f"{self}: {self.role} switched {before} -> {after} ({reason})")
        notice = {
            "type": "provider-switch",
            "role": self.role,
            "from": before,
            "to": after,
            "reason": reason,
        }
        await super().push_frame(RTVIServerMessageFrame(data=notice), FrameDirection.DOWNSTREAM)
        if self.on_switch is not None:
            try:
                await self.on_switch(self.role, before, after, reason)
            except Exception as e:
                logger.exception(f"{self}: on_switch failed: {e}")

    async def _give_up(self, failed: FrameProcessor, reason: str) -> None:
        """No provider can take over: drop the work and report it upstream."""
        self.tracker.items.clear()
        self._halted = False
        await self.push_error(
            f"{self.role}: {self.provider(failed)} failed ({reason}) and no provider can take over",
            category=ErrorCategory.UNKNOWN,
        )

    async def _recover(self, now: float) -> None:
        """Circuit breaker: once idle, go back to an earlier provider whose cool-down is over."""
        active = self.strategy.active_service
        earlier = self.services[: self.services.index(active)]
        if not earlier or not self.tracker.idle():
            return
        for service in earlier:
            if self._open_until.get(id(service), 0.0) > now or not await self._revive(service):
                continue
            await self._switch(active, service, "recovered", replay=False)
            return

    async def cleanup(self):
        """Stop the controller task, then clean up the services."""
        if self._task is not None:
            await self.cancel_task(self._task)
            self._task = None
        await super().cleanup()
