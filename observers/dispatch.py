"""Observer dispatch that skips the observers a frame event means nothing to.

Pipecat's ``WorkerObserver`` (1.14) gives each observer of a worker its own queue and task,
and hands it every ``FrameProcessed`` event: one per frame per processor. No observer of a
voxtutor session (the turn recorder, the latency and usage observers, and Pipecat's turn
tracking, RTVI and idle observers) implements ``on_process_frame``, so each of those events
woke ~6 tasks that did nothing: for the learner's 50 audio frames per second alone, about
a thousand task switches per second per session.

:class:`SelectiveWorkerObserver` queues a ``FrameProcessed`` only to observers whose class
overrides ``on_process_frame``; everything else (pushes, setup events, pipeline start,
adding and removing observers) is Pipecat's code unchanged.
"""

from __future__ import annotations

from functools import cache

from pipecat.observers.base_observer import BaseObserver, FrameProcessed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver


@cache
def wants_processed_frames(observer_class: type[BaseObserver]) -> bool:
    """Whether ``observer_class`` overrides ``on_process_frame`` (else it is a no-op)."""
    return observer_class.on_process_frame is not BaseObserver.on_process_frame


class SelectiveWorkerObserver(WorkerObserver):
    """Pipecat's ``WorkerObserver``, sending ``FrameProcessed`` only to observers that use it.

    Args:
        observers: The observers to dispatch to, as for ``WorkerObserver``.
    """

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
