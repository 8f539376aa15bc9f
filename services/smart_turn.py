"""Smart-turn v3 end-of-turn analyzers: a lean local copy and a client of the shared service.

:class:`LeanSmartTurnAnalyzer` is Pipecat's bundled model holding less memory between turns;
:class:`RemoteSmartTurnAnalyzer` asks the server's one shared model
(:mod:`services.turn_service`) over loopback HTTP instead of loading a copy per session.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
from importlib import resources
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import (
    BaseSmartTurn,
    SmartTurnTimeoutException,
)
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3


def _glibc_malloc_trim() -> Any:
    """Return glibc's ``malloc_trim``, or ``None`` on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_malloc_trim()


class LeanSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """Pipecat's bundled smart-turn v3.2 model, holding ~30 MB less between turns.

    One inference on 8 s of audio needs ~30-40 MB of scratch memory. Pipecat's session keeps
    it in ONNX Runtime's CPU arena for the life of the session; here the arena is off, and
    after each inference glibc's ``malloc_trim`` hands the freed pages back to the OS, so a
    session holds the model (~25 MB) and not its scratch space between turns (measured on
    this model: 112 MB → 84 MB resident after an inference in a bare process; the peak during
    the ~50 ms inference is unchanged). Same model, options and predictions otherwise.

    Args:
        **kwargs: ``params`` and ``sample_rate`` as for Pipecat's analyzers.
    """

    def __init__(self, **kwargs: Any):
        # LocalSmartTurnAnalyzerV3.__init__ (pipecat-ai 1.14.0) only finds the bundled model
        # and opens an ONNX session with the options below, arena on; we open it arena off.
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = False
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False
        model = resources.files("pipecat.audio.turn.smart_turn.data") / "smart-turn-v3.2-cpu.onnx"
        self._session = ort.InferenceSession(str(model), sess_options=options)

    def _predict_endpoint(self, audio_array: np.ndarray) -> dict[str, Any]:
        """Run the model (on Pipecat's smart-turn thread), then return its scratch memory."""
        try:
            return super()._predict_endpoint(audio_array)
        finally:
            if _MALLOC_TRIM is not None:
                _MALLOC_TRIM(0)


class RemoteSmartTurnAnalyzer(BaseSmartTurn):
    """Smart-turn v3.2 asked over HTTP: the server's shared model (:mod:`services.turn_service`).

    Sends each end-of-turn question (the learner's audio since speech start, ≤ 8 s, float32
    16 kHz) as ``numpy.save`` bytes, the wire format of Pipecat's ``HttpSmartTurnAnalyzer``;
    Pipecat's own class is not used because in 1.14 it looks for a running event loop on
    the smart-turn worker thread, finds none, and so answers "incomplete" every time.

    A busy service (many sessions pausing at once) only delays the answer: a request is given
    up to the turn's maximum pause (``params.stop_secs``, Pipecat's own timeout for its HTTP
    analyzer), after which the turn ends as that pause would have ended it. A service that is
    gone or answers with an error instead makes the session degrade to its own copy of the
    model (:class:`LeanSmartTurnAnalyzer`, loaded on that first failure) for the rest of the
    session, logged once: turn ends stay as good, memory grows by ~25 MB.

    Args:
        url: ``http://127.0.0.1:<port>/predict``.
        timeout_s: Seconds to wait for an answer; default ``params.stop_secs``.
        **kwargs: ``params`` and ``sample_rate`` as for Pipecat's analyzers.
    """

    def __init__(self, *, url: str, timeout_s: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.url = url
        # Used from Pipecat's smart-turn thread only (one request at a time per session).
        self._client = httpx.Client(timeout=timeout_s or self.params.stop_secs)
        self._fallback: LeanSmartTurnAnalyzer | None = None
        self._fallback_lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        """Whether the service failed and the session now runs its own model."""
        return self._fallback is not None

    def _predict_endpoint(self, audio_array: np.ndarray) -> dict[str, Any]:
        """Ask the service (blocking; Pipecat calls this on its smart-turn thread)."""
        if self._fallback is None:
            body = io.BytesIO()
            np.save(body, np.ascontiguousarray(audio_array, dtype=np.float32))
            try:
                r = self._client.post(
                    self.url,
                    content=body.getvalue(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                r.raise_for_status()
                answer = r.json()
                return {
                    "prediction": int(answer["prediction"]),
                    "probability": float(answer["probability"]),
                }
            except httpx.TimeoutException as e:
                logger.warning(f"smart-turn service {self.url} too slow; ending the turn")
                raise SmartTurnTimeoutException(str(e)) from None
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                logger.warning(f"smart-turn service {self.url} failed ({e!r}); using a local model")
                with self._fallback_lock:
                    if self._fallback is None:
                        self._fallback = LeanSmartTurnAnalyzer(sample_rate=self._init_sample_rate)
                        self._fallback.set_sample_rate(self.sample_rate)
        return self._fallback._predict_endpoint(audio_array)

    async def cleanup(self) -> None:
        """Close the HTTP client (and the fallback model's thread, if any)."""
        await super().cleanup()
        self._client.close()
        if self._fallback is not None:
            await self._fallback.cleanup()
