"""``DeferredService``: a failover backup that is built only when it first takes over.

A cloud session carries whole chains (``dpe_live``: Deepgram → OpenAI → local Whisper,
Claude → OpenAI → local, Cartesia → Deepgram → OpenAI → local → text), yet most sessions
never leave their primaries. Building every backup up front costs each session process the
backups' imports and clients: the OpenAI SDK (~13.5 MB resident, 0.57 s to import),
faster-whisper (~9.4 MB), Pipecat's Deepgram speak and Piper modules and the SDK clients
themselves, about 29 MB of the 245 MB a ``dpe_live`` WebRTC session peaked at
(``bench.session_memory``).

A :class:`DeferredService` stands in the group's branch in place of the backup. It holds a
zero-argument builder and the modules the builder imports. When the group first needs it
(:meth:`DeferredService.build`, awaited by :class:`processors.failover.switcher.
FailoverSwitcher` before it switches, or the first frame of work), it imports those modules
in a worker thread (the event loop keeps playing audio), builds the service, wraps it in a
nested Pipecat ``Pipeline`` set up with the session's ``FrameProcessorSetup``, starts it
with a copy of the session's ``StartFrame`` and waits until it has started (websockets
connected). From then on it is transparent:

- frames go through the inner service; what the inner service pushes leaves the stand-in;
- the identities the switcher checks are translated to the stand-in: an ``ErrorFrame``'s
  ``processor``, a ``ServiceSwitcherRequestMetadataFrame``'s ``service``, a
  ``ServiceMetadataFrame``'s ``service_name``;
- ``is_usable``/``set_usable``, ``on_usable_changed`` and ``on_disconnected`` are the inner
  service's; LLM function registrations and advertised tools made before the build are
  applied to the inner LLM when it is built (:class:`DeferredLLMService`).
"""

from __future__ import annotations

import asyncio
import copy
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    ServiceMetadataFrame,
    ServiceSwitcherRequestMetadataFrame,
    ServiceUpdateSettingsFrame,
    StartFrame,
)
from pipecat.pipeline.pipeline import Pipeline, PipelineSink, PipelineSource
from pipecat.processors.frame_processor import (
    FrameDirection,
    FrameProcessor,
    FrameProcessorSetup,
)

__all__ = ["START_TIMEOUT_S", "DeferredLLMService", "DeferredService", "deferred"]

START_TIMEOUT_S = 15.0
"""How long a built backup may take to start (connect its websocket, load a local model)."""

Builder = Callable[[], FrameProcessor]


class DeferredService(FrameProcessor):
    """Stands in a failover group for a service built on first use (see the module doc).

    Args:
        build: Builds the real service (called once, on the event loop).
        modules: Modules ``build`` imports; imported first in a worker thread.
        provider: The provider name (for logs).
        **kwargs: Passed to ``FrameProcessor``.

    Attributes:
        factory: ``build`` (calling it yourself makes a service outside the group).
        inner: The real service once built, else ``None``.
    """

    def __init__(
        self,
        build: Builder,
        *,
        modules: Sequence[str] = (),
        provider: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(enable_direct_mode=True, **kwargs)
        self.factory = build
        self._modules = tuple(modules)
        self.provider = provider
        self.inner: FrameProcessor | None = None
        self._pipeline: Pipeline | None = None
        self._setup_args: FrameProcessorSetup | None = None
        self._start: StartFrame | None = None
        self._started = asyncio.Event()
        self._building: asyncio.Lock | None = None
        self._held: list[Frame] = []  # settings updates that arrived before the build
        self._on_built: list[Callable[[FrameProcessor], None]] = []
        self._register_event_handler("on_disconnected")

    def __str__(self) -> str:
        inner = f"={self.inner}" if self.inner is not None else ""
        return f"{self.name}({self.provider}{inner})"

    @property
    def built(self) -> bool:
        """Whether the real service exists (it is built once and kept)."""
        return self.inner is not None

    def on_built(self, callback: Callable[[FrameProcessor], None]) -> None:
        """Call ``callback(inner)`` once the real service is built (at once if it is)."""
        if self.inner is not None:
            callback(self.inner)
        else:
            self._on_built.append(callback)

    # --- usability and events are the inner service's -------------------------------------

    @property
    def is_usable(self) -> bool:
        """The inner service's ``is_usable`` once built; before that, the stand-in's own."""
        return self.inner.is_usable if self.inner is not None else super().is_usable

    async def set_usable(self, is_usable: bool) -> None:
        """Set the inner service's usability once built; before that, the stand-in's own."""
        if self.inner is not None:
            await self.inner.set_usable(is_usable)
        else:
            await super().set_usable(is_usable)

    @property
    def produces_audio(self) -> bool:
        """What the inner service says (a text-only voice does not); ``True`` before it exists."""
        return bool(getattr(self.inner, "produces_audio", True))

    # --- lifecycle -------------------------------------------------------------------------

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Keep the session's setup for the inner pipeline."""
        await super().setup(setup)
        self._setup_args = setup
        self._building = asyncio.Lock()

    async def cleanup(self) -> None:
        """Clean up the inner pipeline, if one was built."""
        await super().cleanup()
        if self._pipeline is not None:
            await self._pipeline.cleanup()

    async def build(self) -> FrameProcessor:
        """Build, set up and start the real service once; return it.

        Raises:
            RuntimeError: called before the session's ``StartFrame`` reached the stand-in, or
                the service did not start within :data:`START_TIMEOUT_S`.
            Exception: whatever the builder or an import raises (the switcher then treats
                the link as unusable).
        """
        if self.inner is not None:
            return self.inner
        if self._setup_args is None or self._start is None or self._building is None:
            raise RuntimeError(f"{self} cannot be built before the pipeline has started")
        async with self._building:
            if self.inner is not None:
                return self.inner
            if self._modules:
                await asyncio.to_thread(_import_all, self._modules)
            inner = self.factory()
            pipeline = Pipeline(
                [inner],
                source=PipelineSource(self._from_inner, name=f"{self}::Source"),
                sink=PipelineSink(self._from_inner, name=f"{self}::Sink"),
            )
            await pipeline.setup(self._setup_args)
            self._wire_events(inner)
            self._pipeline = pipeline
            self.inner = inner
            await pipeline.queue_frame(copy.copy(self._start))
            try:
                await asyncio.wait_for(self._started.wait(), START_TIMEOUT_S)
            except TimeoutError:
                raise RuntimeError(f"{inner} did not start in {START_TIMEOUT_S:.0f} s") from None
            logger.info(f"{self}: built and started on first use")
            for callback in self._on_built:
                callback(inner)
            self._on_built.clear()
            held, self._held = self._held, []
            for frame in held:
                await pipeline.queue_frame(frame)
            return inner

    def _wire_events(self, inner: FrameProcessor) -> None:
        """Raise the stand-in's ``on_usable_changed``/``on_disconnected`` for the inner's."""

        async def usable_changed(_: FrameProcessor, is_usable: bool) -> None:
            await self._call_event_handler("on_usable_changed", is_usable)

        inner.add_event_handler("on_usable_changed", usable_changed)
        if "on_disconnected" in getattr(inner, "_event_handlers", {}):

            async def disconnected(_: FrameProcessor, *args: Any) -> None:
                await self._call_event_handler("on_disconnected", *args)

            inner.add_event_handler("on_disconnected", disconnected)

    # --- frames ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass ``frame`` to the inner service, building it first if this is work for it."""
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._start = frame
            await self.push_frame(frame, direction)  # the group waits for it on every branch
            return
        if self._pipeline is None:
            if isinstance(frame, EndFrame | CancelFrame):
                await self.push_frame(frame, direction)
                return
            if isinstance(frame, ServiceUpdateSettingsFrame):
                self._held.append(frame)  # applied once built; no reason to build now
                return
            await self.build()
        assert self._pipeline is not None and self.inner is not None
        if isinstance(frame, ServiceSwitcherRequestMetadataFrame) and frame.service is self:
            frame = ServiceSwitcherRequestMetadataFrame(service=self.inner)
        await self._pipeline.queue_frame(frame, direction)

    async def _from_inner(self, frame: Frame, direction: FrameDirection) -> None:
        """What the inner pipeline pushes out, in either direction, leaves the stand-in."""
        if isinstance(frame, StartFrame):
            self._started.set()  # the session's own StartFrame went on at setup
            return
        if isinstance(frame, ErrorFrame) and frame.processor is self.inner:
            frame.processor = self
        elif isinstance(frame, ServiceSwitcherRequestMetadataFrame) and frame.service is self.inner:
            frame.service = self
        elif isinstance(frame, ServiceMetadataFrame) and self.inner is not None:
            if frame.service_name == self.inner.name:
                frame.service_name = self.name
        await self.push_frame(frame, direction)


class DeferredLLMService(DeferredService):
    """A deferred LLM: function registrations and tools wait for the real LLM.

    ``LLMSwitcher`` registers functions on every LLM of its group and syncs the tools an
    ``LLMContext`` advertises to all of them; both are recorded here and applied to the real
    service when it is built, then passed straight through.
    """

    def __init__(self, build: Builder, **kwargs: Any) -> None:
        super().__init__(build, **kwargs)
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.on_built(self._replay_calls)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.inner is not None:
            getattr(self.inner, method)(*args, **kwargs)
        else:
            self._calls.append((method, args, kwargs))

    def _replay_calls(self, inner: FrameProcessor) -> None:
        for method, args, kwargs in self._calls:
            getattr(inner, method)(*args, **kwargs)
        self._calls.clear()

    def register_function(self, function_name: str | None, handler: Any, **kwargs: Any) -> None:
        """``LLMService.register_function`` on the real LLM (now or when it is built)."""
        self._call("register_function", function_name, handler, **kwargs)

    def register_direct_function(self, handler: Any, **kwargs: Any) -> None:
        """``LLMService.register_direct_function`` on the real LLM (now or when built)."""
        self._call("register_direct_function", handler, **kwargs)

    def unregister_function(self, function_name: str | None) -> None:
        """``LLMService.unregister_function`` on the real LLM (now or when built)."""
        self._call("unregister_function", function_name)

    def _sync_registered_tool_handlers(self, tools: Any) -> None:
        """Pipecat's ``LLMSwitcher`` hook: sync the advertised tools' handlers.

        Called with every ``LLMContextFrame``; before the build only the latest call is kept.
        """
        self._calls = [c for c in self._calls if c[0] != "_sync_registered_tool_handlers"]
        self._call("_sync_registered_tool_handlers", tools)

    async def run_inference(self, context: Any, **kwargs: Any) -> str | None:
        """``LLMService.run_inference`` on the real LLM, built first if need be."""
        inner = await self.build()
        result: str | None = await inner.run_inference(context, **kwargs)  # type: ignore[attr-defined]
        return result


def _import_all(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def deferred(
    role: str, build: Builder, *, modules: Sequence[str], provider: str
) -> DeferredService:
    """A stand-in for a ``role`` (``stt``, ``llm``, ``tts``) backup built by ``build`` on use."""
    cls = DeferredLLMService if role == "llm" else DeferredService
    return cls(build, modules=modules, provider=provider, name=f"Deferred{role.upper()}:{provider}")
