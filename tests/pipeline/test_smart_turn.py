"""Smart-turn: the lean in-process analyzer, and the shared service sessions ask over HTTP.

Both must predict exactly what Pipecat's own analyzer predicts on real speech.
"""

from __future__ import annotations

import asyncio
import io
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnTimeoutException
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from config.personas import load_persona
from config.settings import Settings
from pipelines.turn_taking import turn_strategies
from services.loopback import serve_loopback
from services.smart_turn import LeanSmartTurnAnalyzer, RemoteSmartTurnAnalyzer
from services.turn_service import TurnService


def speech(path: Path) -> np.ndarray:
    """A 16 kHz mono WAV as float32 in [-1, 1]."""
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768


def test_lean_analyzer_predicts_exactly_as_pipecats(librivox: dict[Path, str]) -> None:
    pipecat, lean = LocalSmartTurnAnalyzerV3(), LeanSmartTurnAnalyzer()
    assert not lean._session.get_session_options().enable_cpu_mem_arena
    for path in sorted(librivox):
        audio = speech(path)
        # The whole sentence, and the same cut off mid-sentence.
        for clip in (audio, audio[: len(audio) // 2]):
            ours, theirs = lean._predict_endpoint(clip), pipecat._predict_endpoint(clip)
            assert ours["prediction"] == theirs["prediction"]
            assert abs(ours["probability"] - theirs["probability"]) < 1e-5


def test_english_and_german_end_turns_with_the_lean_analyzer() -> None:
    settings = Settings()
    for persona, lean in (
        ("aviation-examiner", True),
        ("german-tutor", True),
        ("czech-tutor", False),
    ):
        [stop] = turn_strategies(load_persona(persona), settings).stop
        analyzer = getattr(stop, "_turn_analyzer", None)
        assert isinstance(analyzer, LeanSmartTurnAnalyzer) is lean, persona


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


async def test_the_shared_service_predicts_exactly_as_pipecats(librivox: dict[Path, str]) -> None:
    pipecat = LocalSmartTurnAnalyzerV3()
    async with TurnService() as service:
        remote = RemoteSmartTurnAnalyzer(url=service.url)
        n = 0
        for path in sorted(librivox):
            audio = speech(path)
            for clip in (audio, audio[: len(audio) // 2]):
                # Pipecat calls it on its smart-turn thread; the service runs on this loop.
                ours = await asyncio.to_thread(remote._predict_endpoint, clip)
                theirs = pipecat._predict_endpoint(clip)
                assert ours["prediction"] == theirs["prediction"]
                assert abs(ours["probability"] - theirs["probability"]) < 1e-5
                n += 1
        assert service.requests == n and not remote.degraded
        await remote.cleanup()


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"not numpy", 400, "not a numpy .npy array"),
        (npy(np.zeros((2, 800), dtype=np.float32)), 400, "1-D float32"),
        (npy(np.zeros(8000, dtype=np.int16)), 400, "1-D float32"),
        (npy(np.zeros(0, dtype=np.float32)), 400, "non-empty"),
        (npy(np.full(8000, np.nan, dtype=np.float32)), 400, "NaN"),
        (npy(np.zeros(17 * 16000, dtype=np.float32)), 413, "longer than 16 s"),
    ],
)
async def test_bad_bodies_get_a_4xx_with_a_message(body: bytes, status: int, needle: str) -> None:
    async with TurnService() as service, httpx.AsyncClient() as client:
        r = await client.post(service.url, content=body)
        assert r.status_code == status
        assert needle in r.json()["detail"]
        # The service still answers well-formed requests.
        ok = await client.post(service.url, content=npy(np.zeros(16000, dtype=np.float32)))
        assert ok.status_code == 200 and ok.json()["prediction"] in (0, 1)


async def test_a_session_whose_service_is_gone_runs_its_own_model(
    librivox: dict[Path, str],
) -> None:
    async with TurnService() as service:
        url = service.url
    remote = RemoteSmartTurnAnalyzer(url=url, timeout_s=0.5)  # nothing listens there now
    audio = speech(sorted(librivox)[0])
    ours = await asyncio.to_thread(remote._predict_endpoint, audio)
    assert remote.degraded
    assert ours == LeanSmartTurnAnalyzer()._predict_endpoint(audio)
    await remote.cleanup()


def test_sessions_ask_the_service_when_a_url_is_set() -> None:
    settings = Settings(smart_turn_url="http://127.0.0.1:9/predict")
    [stop] = turn_strategies(load_persona("german-tutor"), settings).stop
    analyzer = stop._turn_analyzer
    assert isinstance(analyzer, RemoteSmartTurnAnalyzer)
    assert analyzer.url == "http://127.0.0.1:9/predict"


async def test_a_slow_service_ends_the_turn_instead_of_loading_a_model() -> None:
    """Many sessions pausing at once only delay answers: the turn ends at the timeout."""

    async def slow(_request: Request) -> JSONResponse:
        await asyncio.sleep(1.0)
        return JSONResponse({"prediction": 0, "probability": 0.1})

    server = await serve_loopback(Starlette(routes=[Route("/p", slow, methods=["POST"])]), "slow")
    try:
        remote = RemoteSmartTurnAnalyzer(url=f"http://127.0.0.1:{server.port}/p", timeout_s=0.3)
        with pytest.raises(SmartTurnTimeoutException):
            await asyncio.to_thread(remote._predict_endpoint, np.zeros(16000, dtype=np.float32))
        assert not remote.degraded
        await remote.cleanup()
    finally:
        await server.stop()
