"""Run one real Pipecat service in a one-processor pipeline and watch what it pushes.

The provider-fake tests point a real service at a loopback fake, queue frames into a
:class:`PipelineWorker` under a :class:`WorkerRunner` (the project's idiom), and wait for the
frames the service pushes, in either direction (``ErrorFrame`` travels upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pipecat.frames.frames import EndFrame, ErrorFrame, Frame, MetricsFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner


class ServiceProbe(BaseObserver):
    """Records every frame ``service`` pushes, and lets a test wait for one.

    Attributes:
        frames: The frames pushed by the service, in order (both directions).
        worker: The running worker (set by :func:`run_service`).
    """

    def __init__(self, service: FrameProcessor) -> None:
        super().__init__()
        self.service = service
        self.frames: list[Frame] = []
        self.worker: PipelineWorker | None = None
        self._pushed = asyncio.Event()

    async def on_push_frame(self, data: FramePushed) -> None:
        """Record frames whose source is the service."""
        if data.source is self.service:
            self.frames.append(data.frame)
            self._pushed.set()

    def of(self, kind: type[Frame], since: int = 0) -> list[Any]:
        """Frames of type ``kind`` pushed at index ``since`` or later."""
        return [f for f in self.frames[since:] if isinstance(f, kind)]

    def errors(self, since: int = 0) -> list[ErrorFrame]:
        """``ErrorFrame``s pushed at index ``since`` or later."""
        return self.of(ErrorFrame, since)

    def usage(self, kind: type, since: int = 0) -> list[Any]:
        """Metrics data items of type ``kind`` (e.g. ``LLMUsageMetricsData``) since ``since``."""
        return [d for f in self.of(MetricsFrame, since) for d in f.data if isinstance(d, kind)]

    async def wait_for(self, done: Callable[[], bool], within: float) -> bool:
        """Wait until ``done()`` holds (True) or ``within`` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not done():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._pushed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pushed.wait(), left)
        return True

    async def send(self, *frames: Frame) -> int:
        """Queue ``frames`` downstream; returns the index of the next frame to be pushed."""
        assert self.worker is not None
        mark = len(self.frames)
        await self.worker.queue_frames(list(frames))
        return mark


@contextlib.asynccontextmanager
async def run_service(
    service: FrameProcessor, *, observers: Sequence[BaseObserver] = (), **params: Any
) -> AsyncIterator[ServiceProbe]:
    """Run ``service`` alone in a pipeline with usage metrics on; yield its probe.

    Args:
        service: The processor under test.
        observers: Further observers on the worker (e.g. the usage meter).
        **params: Extra :class:`PipelineParams` fields (e.g. ``audio_in_sample_rate``).

    On exit an ``EndFrame`` ends the pipeline (cancelled if it has not ended in 20 s).
    """
    probe = ServiceProbe(service)
    worker = PipelineWorker(
        Pipeline([service]),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True, **params),
        observers=[probe, *observers],
        enable_rtvi=False,
        cancel_on_idle_timeout=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), 20)
        probe.worker = worker
        yield probe
    finally:
        await worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(asyncio.shield(task), 20)
        except TimeoutError:
            await worker.cancel()
            await task
