"""One smart-turn model for every session of a server: ``POST /predict`` on loopback.

Each session process used to load its own smart-turn v3.2 (ONNX, ~25 MB resident) and hold
~35 MB more during each ~50 ms inference: about a quarter of a cloud session's memory. The
server now runs the model once (:class:`TurnService`, in its own event loop, inference on a
worker thread) and sessions ask it over loopback HTTP
(:class:`services.smart_turn.RemoteSmartTurnAnalyzer`); the CPU per inference is the same.

Wire format (that of Pipecat's ``HttpSmartTurnAnalyzer``): the body is ``numpy.save`` of a
1-D float32 array, 16 kHz mono in [-1, 1], at most :data:`MAX_SECONDS` long; the answer is
``{"prediction": 0 | 1, "probability": float}`` (1: the turn is complete). A body that is
not such an array gets ``400`` (``413`` when too long) with a message.

Standalone (one service for several servers): ``python -m services.turn_service --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.loopback import LoopbackServer, serve_loopback

MAX_SECONDS = 16
"""Longest audio accepted, s (smart-turn reads the last 8 s; Pipecat sends ≤ 8 s)."""
SAMPLE_RATE = 16000
"""Hz; the model's rate."""


def parse_audio(body: bytes) -> np.ndarray:
    """Decode a request body into the 1-D float32 array it must hold.

    Raises:
        ValueError: not an ``.npy`` array, not 1-D float32, empty, or not finite.
        OverflowError: longer than :data:`MAX_SECONDS` at 16 kHz.
    """
    if len(body) > MAX_SECONDS * SAMPLE_RATE * 4 + 1024:
        raise OverflowError(f"audio longer than {MAX_SECONDS} s at {SAMPLE_RATE} Hz")
    try:
        audio = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, UnpicklingError
        raise ValueError(f"body is not a numpy .npy array: {e}") from None
    if audio.ndim != 1 or audio.dtype != np.float32 or audio.size == 0:
        raise ValueError(f"expected a non-empty 1-D float32 array, got {audio.dtype}{audio.shape}")
    if len(audio) > MAX_SECONDS * SAMPLE_RATE:
        raise OverflowError(f"audio longer than {MAX_SECONDS} s at {SAMPLE_RATE} Hz")
    if not np.isfinite(audio).all():
        raise ValueError("audio holds NaN or infinite samples")
    return audio


class TurnService:
    """Smart-turn v3.2 served on ``127.0.0.1`` for the sessions of this machine.

    Args:
        port: TCP port on loopback; 0 picks a free one.
        threads: Inferences run at once (each on one ONNX thread, ~50 ms on 8 s of audio).
            One by default: sessions pausing together wait a little longer for their turn
            decision, but inference never takes more than one core from the sessions'
            real-time audio.

    Use as ``async with TurnService() as service: service.url``.
    """

    def __init__(self, port: int = 0, threads: int = 1):
        from services.smart_turn import LeanSmartTurnAnalyzer

        self._analyzer = LeanSmartTurnAnalyzer()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="smart-turn")
        self._port = port
        self._server: LoopbackServer | None = None
        self.requests = 0
        """Predictions served so far."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/predict`` once started."""
        if self._server is None:
            raise RuntimeError("the turn service is not running")
        return f"http://127.0.0.1:{self._server.port}/predict"

    def app(self) -> Starlette:
        """The ASGI app: ``POST /predict`` and ``GET /health``."""
        return Starlette(
            routes=[
                Route("/predict", self._predict, methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    async def _health(self, _request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "requests": self.requests})

    async def _predict(self, request: Request) -> JSONResponse:
        try:
            audio = parse_audio(await request.body())
        except OverflowError as e:
            return JSONResponse({"detail": str(e)}, status_code=413)
        except ValueError as e:
            return JSONResponse({"detail": str(e)}, status_code=400)
        loop = asyncio.get_running_loop()
        result: dict[str, Any] = await loop.run_in_executor(
            self._executor, self._analyzer._predict_endpoint, audio
        )
        self.requests += 1
        return JSONResponse(
            {"prediction": int(result["prediction"]), "probability": float(result["probability"])}
        )

    async def start(self) -> str:
        """Start serving; return :attr:`url`.

        Raises:
            OSError: the port cannot be bound.
            RuntimeError: the server did not start.
        """
        self._server = await serve_loopback(self.app(), "smart-turn-service", self._port)
        return self.url

    async def stop(self) -> None:
        """Stop serving and release the inference thread."""
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> TurnService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve_forever(port: int, threads: int) -> None:
    async with TurnService(port, threads) as service:
        print(service.url, flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m services.turn_service [--port P] [--threads N]``: serve until killed.

    Prints the URL on stdout once serving.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    asyncio.run(_serve_forever(args.port, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
