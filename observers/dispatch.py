"""Observer dispatch that skips the observers a frame event means nothing to.

Pipecat's ``WorkerObserver`` (1.14) gives each observer of a worker its own queue and task,
and hands it every ``FrameProcessed`` event: one per frame per processor. No observer of a
voxtutor session (the turn recorder, the latency and usage observers, and Pipecat's turn
tracking, RTVI and idle observers) implements ``on_process_frame``, so each of those events
woke ~6 tasks that did nothing: for the learner's 50 audio frames per second alone, about
a thousand task switches per second per session. The same goes for the first push of each
of those audio frames (``FramePushed``): none of them looks at the learner's audio.

:class:`SelectiveWorkerObserver` queues a ``FrameProcessed`` only to observers whose class
overrides ``on_process_frame``, and the push of an ``InputAudioRawFrame`` only to observers
that may use it (:func:`hears_input_audio`); everything else (other pushes, setup events,
pipeline start, adding and removing observers) is Pipecat's code unchanged.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pipecat.frames.frames import InputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.observers.service_metrics_observer import ServiceMetricsObserver
from pipecat.observers.turn_tracking_observer import TurnTrackingObserver
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.pipeline.worker import IdleFrameObserver, PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.frameworks.rtvi import RTVIObserver

from observers.turn_recorder import TurnRecorderObserver

INPUT_AUDIO_BLIND: tuple[type[BaseObserver], ...] = (
    TurnTrackingObserver,
    UserBotLatencyObserver,
    ServiceMetricsObserver,  # and voxtutor's usage meter, a subclass
    TurnRecorderObserver,
)
"""Observers whose ``on_push_frame`` ignores ``InputAudioRawFrame`` (read in pipecat-ai 1.14.0's
source: each reacts to speaking, transcription, LLM, TTS, metrics or lifecycle frames)."""


@cache
def wants_processed_frames(observer_class: type[BaseObserver]) -> bool:
    """Whether ``observer_class`` overrides ``on_process_frame`` (else it is a no-op)."""
    return observer_class.on_process_frame is not BaseObserver.on_process_frame


def hears_input_audio(observer: BaseObserver) -> bool:
    """Whether ``observer`` may react to the push of an ``InputAudioRawFrame``.

    False for :data:`INPUT_AUDIO_BLIND`, for Pipecat's RTVI observer unless it reports audio
    levels, and for its idle observer unless input audio counts as activity; True for any
    other observer (one this module does not know is given everything).
    """
    if isinstance(observer, RTVIObserver):
        levels = observer._params  # noqa: SLF001 - RTVIObserverParams, no public accessor
        return bool(levels.user_audio_level_enabled or levels.bot_audio_level_enabled)
    if isinstance(observer, IdleFrameObserver):
        frames = observer._idle_timeout_frames  # noqa: SLF001 - no public accessor
        return any(issubclass(InputAudioRawFrame, t) for t in frames)
    return not isinstance(observer, INPUT_AUDIO_BLIND)


class SelectiveWorkerObserver(WorkerObserver):
    """Pipecat's ``WorkerObserver``, sending frame events only to observers that use them.

    Args:
        observers: The observers to dispatch to, as for ``WorkerObserver``.
    """

    def __init__(self, *, observers: list[BaseObserver] | None = None, **kwargs: Any) -> None:
        """Take ``WorkerObserver``'s arguments."""
        super().__init__(observers=observers, **kwargs)
        self._hears_cache: dict[BaseObserver, bool] = {}

    def _hears(self, observer: BaseObserver) -> bool:
        """:func:`hears_input_audio`, decided once per observer (it runs per audio frame)."""
        hears = self._hears_cache.get(observer)
        if hears is None:
            hears = self._hears_cache[observer] = hears_input_audio(observer)
        return hears

    async def on_push_frame(self, data: FramePushed) -> None:
        """Queue ``data`` as Pipecat does; the learner's audio only where it is heard."""
        if not isinstance(data.frame, InputAudioRawFrame):
            await super().on_push_frame(data)
            return
        if not self._proxies:
            return
        listeners = [p for p in self._proxies.values() if self._hears(p.observer)]
        if not listeners:
            return
        # Pipecat's bookkeeping of first pushes, for the observers that get the frame.
        frame = data.frame
        data.first_push = frame.id not in self._frames_pushed
        if data.first_push:
            self._frames_pushed[frame.id] = frame
        for proxy in listeners:
            if data.first_push or proxy.observer.observe_every_push:
                await proxy.queue.put(data)

    async def on_process_frame(self, data: FrameProcessed) -> None:
        """Queue ``data`` for the observers that implement ``on_process_frame``."""
        if not self._proxies:
            return
        for proxy in self._proxies.values():
            if wants_processed_frames(type(proxy.observer)):
                await proxy.queue.put(data)


def use_selective_dispatch(worker: PipelineWorker) -> PipelineWorker:
    """Give ``worker`` a :class:`SelectiveWorkerObserver` over the same observers.

    Call before the worker runs (its processors receive the dispatcher at setup).
    ``PipelineWorker`` (pipecat-ai 1.14.0) builds its ``WorkerObserver`` in ``__init__`` and
    takes no other one, so this replaces its ``_observer``; observers added later with
    ``worker.add_observer`` go through the replacement too.

    Returns:
        ``worker``.

    Raises:
        RuntimeError: the worker has no ``WorkerObserver`` to replace (another Pipecat version).
    """
    current = getattr(worker, "_observer", None)
    if not isinstance(current, WorkerObserver):
        raise RuntimeError("this Pipecat version's PipelineWorker has no _observer to replace")
    worker._observer = SelectiveWorkerObserver(observers=current._observers)
    return worker
