"""Selective observer dispatch: frame events reach the observers that use them, and only them."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import (
    BotSpeakingFrame,
    EndFrame,
    InputAudioRawFrame,
    TextFrame,
    UserSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.observers.turn_tracking_observer import TurnTrackingObserver
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import IdleFrameObserver, PipelineWorker
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frameworks.rtvi import RTVIObserver, RTVIObserverParams
from pipecat.workers.runner import WorkerRunner

from observers.dispatch import (
    SelectiveWorkerObserver,
    hears_input_audio,
    use_selective_dispatch,
    wants_processed_frames,
)
from observers.turn_recorder import TurnRecorderObserver
from observers.usage_meter import UsageMeterObserver


class PushCounter(BaseObserver):
    """Counts the text and input audio frames pushed (every push)."""

    def __init__(self) -> None:
        super().__init__()
        self.pushed = 0
        self.audio = 0

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, TextFrame):
            self.pushed += 1
        elif isinstance(data.frame, InputAudioRawFrame):
            self.audio += 1


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
    audio = [InputAudioRawFrame(bytes(640), 16000, 1) for _ in range(4)]
    await worker.queue_frames([TextFrame(f"t{i}") for i in range(5)] + audio + [EndFrame()])
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


async def test_an_unknown_observer_still_hears_the_learners_audio() -> None:
    pushes, processes, _ = await run(selective=True)
    default_pushes, _, _ = await run(selective=False)
    assert pushes.audio == processes.audio == default_pushes.audio > 0


def test_the_sessions_observers_do_not_hear_the_learners_audio() -> None:
    idle = IdleFrameObserver(
        idle_event=asyncio.Event(), idle_timeout_frames=(BotSpeakingFrame, UserSpeakingFrame)
    )
    blind = [
        TurnTrackingObserver(),
        UserBotLatencyObserver(),
        TurnRecorderObserver(),
        UsageMeterObserver(write=lambda row: asyncio.sleep(0)),
        RTVIObserver(),
        idle,
    ]
    assert not any(hears_input_audio(o) for o in blind)
    # ...but an RTVI client asking for audio levels, or audio as idle activity, does.
    assert hears_input_audio(RTVIObserver(params=RTVIObserverParams(user_audio_level_enabled=True)))
    assert hears_input_audio(
        IdleFrameObserver(idle_event=asyncio.Event(), idle_timeout_frames=(InputAudioRawFrame,))
    )
    assert hears_input_audio(PushCounter())
