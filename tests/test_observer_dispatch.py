"""Selective observer dispatch: frame events reach the observers that use them, and only them."""

from __future__ import annotations

from pipecat.frames.frames import EndFrame, TextFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.workers.runner import WorkerRunner

from observers.dispatch import (
    SelectiveWorkerObserver,
    use_selective_dispatch,
    wants_processed_frames,
)


class PushCounter(BaseObserver):
    """Counts the text frames pushed (every push)."""

    def __init__(self) -> None:
        super().__init__()
        self.pushed = 0

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, TextFrame):
            self.pushed += 1


class ProcessCounter(PushCounter):
    """Also counts the text frames processed, per processor."""

    def __init__(self) -> None:
        super().__init__()
        self.processed = 0

    async def on_process_frame(self, data: FrameProcessed) -> None:
        if isinstance(data.frame, TextFrame):
            self.processed += 1


async def run(selective: bool) -> tuple[PushCounter, ProcessCounter, PipelineWorker]:
    pushes, processes = PushCounter(), ProcessCounter()
    worker = PipelineWorker(
        Pipeline([IdentityFilter(), IdentityFilter(), IdentityFilter()]),
        observers=[pushes, processes],
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    if selective:
        use_selective_dispatch(worker)
    await worker.queue_frames([TextFrame(f"t{i}") for i in range(5)] + [EndFrame()])
    await WorkerRunner(handle_sigint=False).run(worker)
    return pushes, processes, worker


def test_only_observers_overriding_on_process_frame_want_its_events() -> None:
    assert not wants_processed_frames(PushCounter)
    assert wants_processed_frames(ProcessCounter)
    assert not wants_processed_frames(BaseObserver)


async def test_selective_dispatch_delivers_what_pipecats_does() -> None:
    pushes, processes, worker = await run(selective=True)
    assert isinstance(worker._observer, SelectiveWorkerObserver)
    default_pushes, default_processes, _ = await run(selective=False)
    # 5 frames through 3 processors (plus the worker's source and sink): same counts.
    assert pushes.pushed == processes.pushed == default_pushes.pushed > 0
    assert processes.processed == default_processes.processed >= 5 * 3
