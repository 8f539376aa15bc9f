"""Whisper STT for the local tier: Pipecat's ``WhisperSTTService`` with latency-safe decoding.

Pipecat calls ``WhisperModel.transcribe`` with faster-whisper's defaults: beam search of 5 and
temperature fallback (0.0 → 1.0 in steps of 0.2). On 2 CPU cores the fallback turned a short
Czech clip into 12 s of decoding (measured for this project with Whisper base, int8), so the
local tier pins the language (done by the persona) and decodes greedily at temperature 0 with no
fallback.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.services.whisper.stt import WhisperSTTService

GREEDY_DECODING: dict[str, Any] = {
    "beam_size": 1,
    "temperature": 0.0,  # a single temperature: no fallback re-decoding
    "condition_on_previous_text": False,  # each segment is one learner turn
    "without_timestamps": True,
}
"""Keyword arguments added to every ``WhisperModel.transcribe`` call."""


_LOADED: dict[tuple[str, str, str], Any] = {}
"""Loaded, warmed ``WhisperModel`` s of this process by (model dir, device, compute type).

The model is language-independent (the language is a ``transcribe`` argument), so a warm
spare session process loads it before it knows its persona and the session reuses it.
"""


class LocalWhisperSTTService(WhisperSTTService):
    """``WhisperSTTService`` decoding greedily at temperature 0 (no fallback).

    Whisper transcribes a whole VAD segment at once, so each transcript it yields is final:
    it is marked ``finalized`` and the turn strategy ends the turn right away instead of
    waiting out the STT safety-net timeout (``ttfs_p99_latency``, ~1 s).

    Takes the same arguments as :class:`WhisperSTTService`; pass the directory of an
    assembled CTranslate2 model as ``settings=WhisperSTTService.Settings(model=<dir>)`` so
    nothing is downloaded. With ``lazy=True`` the model (~75 MB resident for base int8)
    loads in a worker thread on the first segment instead of in ``__init__``: a failover
    backup that never takes over costs no memory.
    """

    def __init__(self, *, ttfs_p99_latency: float = 0.3, lazy: bool = False, **kwargs: Any):
        self._lazy = lazy
        self._defer_load = lazy  # read by _load(), which WhisperSTTService.__init__ calls
        self._loading: asyncio.Future[None] | None = None
        # Turn strategies wait up to ttfs_p99_latency after speech end for a transcript that
        # is not marked final. Ours always are, and a turn that starts only once the
        # transcript is in (a barge-in) has nothing left to wait for: keep the wait short.
        super().__init__(ttfs_p99_latency=ttfs_p99_latency, **kwargs)

    @property
    def loaded(self) -> bool:
        """Whether the Whisper model is in memory (a lazy service loads on first use)."""
        return self._model is not None

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe one VAD segment (16-bit PCM) and yield finalized transcripts.

        A lazy service loads its model first (off the event loop, ~0.5-1 s on 2 cores).
        """
        if self._model is None and self._lazy:
            if self._loading is None:
                self._loading = asyncio.ensure_future(asyncio.to_thread(self._load_now))
            try:
                # Shielded: a turn cancelled mid-load (barge-in, failover) keeps the model.
                await asyncio.shield(self._loading)
            except Exception as e:  # the base class then yields an ErrorFrame
                logger.error(f"{self}: could not load Whisper: {e}")
        async for frame in super().run_stt(audio):
            if isinstance(frame, TranscriptionFrame):
                frame.finalized = True
            yield frame

    def _load_now(self) -> None:
        """Load a lazy service's model (blocking; run in a worker thread)."""
        self._defer_load = False
        self._load()

    def _load(self) -> None:
        if self._defer_load:
            return
        key = (str(getattr(self._settings, "model", "")), self._device, self._compute_type)
        cached = _LOADED.get(key)
        if cached is not None:
            self._model = cached
            unsupported = self._unsupported_language()
            if unsupported:
                raise ValueError(unsupported)
            return
        super()._load()
        model = self._model
        if model is not None:
            # Pipecat passes language/hotwords/initial_prompt; we add the decoding options.
            model.transcribe = functools.partial(model.transcribe, **GREEDY_DECODING)
            # The first call pays one-off setup (~0.7 s); pay it now, not on the first turn.
            noise = np.random.default_rng(0).normal(0, 0.01, 8000).astype(np.float32)
            list(model.transcribe(noise, language="en")[0])
            _LOADED[key] = model
