"""The real server, end to end: API key → learner → session → WebRTC offer → turns → end.

Runs ``create_app`` with its default runtime (llama.cpp server started by the app, session
processes with a warm spare) in-process over HTTP, with aiortc as the browser.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from config.settings import Settings
from server import create_app
from store import Store
from testkit.webrtc_peer import SpeechTrack
from transports.file import load_learner_audio

pytestmark = [pytest.mark.e2e]


async def test_server_runs_a_webrtc_session_from_the_api(tmp_path, librivox):
    settings = Settings(
        home=Settings().home,  # the installed models
        llm_model="qwen2.5-coder-0.5b",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}",
        max_sessions=2,
    )
    async with await Store.open(settings.store_url) as store:
        _, key = await store.create_api_key("e2e")
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {key}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://vox") as http:
            assert (await http.get("/readyz")).status_code == 200
            r = await http.post(
                "/api/v1/learners",
                json={"name": "Pat", "target_language": "en"},
                headers=headers,
            )
            assert r.status_code == 201, r.text
            r = await http.post(
                "/api/v1/sessions",
                json={
                    "persona": "aviation-examiner",
                    "tier": "local",
                    "transport": "webrtc",
                    "learner_id": r.json()["id"],
                },
                headers=headers,
            )
            assert r.status_code == 201, r.text
            body = r.json()
            sid, connect = body["session_id"], body["connect"]
            assert body["status"] == "ready"

            clip = next(p for p in librivox if "0880" in p.name)
            pcm = np.repeat(load_learner_audio(clip, 16000), 3)
            pc = RTCPeerConnection()
            pc.addTrack(SpeechTrack(pcm, delay_s=11.0))
            await pc.setLocalDescription(await pc.createOffer())
            r = await http.post(
                connect["offer_url"],
                headers={"Authorization": f"Bearer {connect['token']}"},
                json={"sdp": pc.localDescription.sdp, "type": "offer"},
            )
            assert r.status_code == 200, r.text
            await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], r.json()["type"]))

            deadline = time.monotonic() + 90
            turns: list = []
            while time.monotonic() < deadline:
                detail = (await http.get(f"/api/v1/sessions/{sid}", headers=headers)).json()
                turns = detail["turns"]
                if any(t["role"] == "bot" and t["latency_ms"] for t in turns):
                    break
                await asyncio.sleep(0.5)
            assert [t["role"] for t in turns][:2] == ["bot", "learner"], turns
            assert detail["status"] == "active"
            assert detail["latency"]["turns"] >= 1

            metrics = (await http.get("/metrics", headers=headers)).text
            assert "voxtutor_voice_to_voice_seconds_count 1" in metrics
            assert "voxtutor_active_sessions 1" in metrics

            r = await http.delete(f"/api/v1/sessions/{sid}", headers=headers)
            assert r.status_code == 202
            for _ in range(60):
                detail = (await http.get(f"/api/v1/sessions/{sid}", headers=headers)).json()
                if detail["status"] == "ended":
                    break
                await asyncio.sleep(0.5)
            assert detail["status"] == "ended"
            await pc.close()
