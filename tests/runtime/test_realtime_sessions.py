"""Realtime-tier sessions through the real session process, against the OpenAI Realtime fake.

``POST /api/v1/sessions {tier: "realtime"}`` on the real app spawns ``python -m
runtime.session_process`` with the real supervisor; its pipeline talks to the loopback fake of the
OpenAI Realtime API (``testkit/providers/openai_realtime_fake.py``, reached through
``VOXTUTOR_OPENAI_REALTIME_URL``), aiortc plays the browser over WebRTC with a real LibriVox
recording, and the store is SQLite.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from config.personas import load_persona
from config.settings import Settings
from contracts.events import TOOL_CALL
from contracts.session_spec import SessionSpec
from pipelines.quota import LIMIT_REACHED
from pipelines.realtime import realtime_instructions
from runtime.supervisor import SessionSupervisor
from server import create_app
from store import Store
from testkit.api_support import V1, running
from testkit.providers.openai_realtime_fake import OpenAIRealtimeFake
from testkit.webrtc_peer import RATE, SpeechTrack
from transports.file import load_learner_audio

TRANSCRIPT = "Registration, airworthiness certificate and the operating handbook."
REPLY = "Good. What else does ARROW stand for?"
PERSONA = load_persona("aviation-examiner")
VERDICT = {"area": "I", "task": "Airworthiness Requirements", "result": "satisfactory"}
MS_PER_CHAR = 20  # of the fake's reply audio: the 160-character greeting lasts 3.2 s


class CuedSpeech(SpeechTrack):
    """A microphone that is silent until :meth:`cue`, then plays the clip once."""

    def __init__(self, pcm: np.ndarray):
        super().__init__(pcm, delay_s=3600.0)

    def cue(self) -> None:
        self.delay = self.pos


@dataclass
class Browser:
    """aiortc as the learner's browser: microphone, bot audio heard, RTVI messages."""

    pc: RTCPeerConnection
    mic: CuedSpeech
    heard: list[tuple[float, int]]  # (time, samples) of each bot audio frame above silence
    messages: list[dict[str, Any]]
    tasks: list[asyncio.Future[None]]

    def samples_after(self, t: float) -> int:
        return sum(n for at, n in self.heard if at >= t)

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()


async def open_browser(
    clip: np.ndarray, offer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
) -> Browser:
    pc = RTCPeerConnection()
    browser = Browser(pc, CuedSpeech(clip), [], [], [])
    pc.addTrack(browser.mic)
    channel = pc.createDataChannel("messages")

    @channel.on("message")
    def on_message(message: str) -> None:
        browser.messages.append(json.loads(message))

    @pc.on("track")
    def on_track(remote: Any) -> None:
        async def pull() -> None:
            while True:
                try:
                    frame = await remote.recv()
                except Exception:
                    return
                if np.abs(frame.to_ndarray()).max() > 500:
                    browser.heard.append((time.monotonic(), frame.samples))

        browser.tasks.append(asyncio.ensure_future(pull()))

    await pc.setLocalDescription(await pc.createOffer())
    answer = await offer({"sdp": pc.localDescription.sdp, "type": "offer"})
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return browser


async def until(condition: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"condition not met within {within} s"
        await asyncio.sleep(0.2)


@pytest.fixture
def clip(librivox: dict[Path, str]) -> np.ndarray:
    path = next(p for p in librivox if "0880" in p.name)  # 3.0 s of speech
    return np.repeat(load_learner_audio(path, 16000), 3)  # 16 kHz → 48 kHz


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAIRealtimeFake]:
    async with OpenAIRealtimeFake(transcript=TRANSCRIPT, reply=REPLY) as f:
        f.ms_per_char = MS_PER_CHAR
        f.opening = PERSONA.greeting
        # Inherited by the session processes the supervisor starts.
        monkeypatch.setenv("OPENAI_API_KEY", "test-openai")
        monkeypatch.setenv("VOXTUTOR_OPENAI_REALTIME_URL", f.url)
        yield f


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    s = await Store.open(sqlite_url)
    yield s
    await s.close()


@pytest.fixture
async def supervisor(store: Store, tmp_path: Path) -> AsyncIterator[SessionSupervisor]:
    sup = SessionSupervisor(store, max_sessions=1, log_dir=tmp_path / "logs")
    yield sup
    await sup.shutdown()


def stored_turns(store: Store, sid: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await store.list_turns(sid)) >= n

    return check


def process_gone(sup: SessionSupervisor, sid: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not sup.is_running(sid)

    return check


async def test_realtime_session_from_the_api_greets_answers_and_says_goodbye(
    fake: OpenAIRealtimeFake,
    store: Store,
    supervisor: SessionSupervisor,
    clip: np.ndarray,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    _, key = await store.create_api_key("realtime", "*")
    settings = Settings(home=tmp_path, database_url=sqlite_url)
    app = create_app(
        settings, store=store, supervisor=supervisor, llm_base_url="http://127.0.0.1:9/v1"
    )
    h = {"Authorization": f"Bearer {key}"}
    async with running(app) as http:
        r = await http.post(
            f"{V1}/learners",
            json={"name": "Pat", "target_language": "en", "plan": "checkride_prep"},
            headers=h,
        )
        body = {"persona": PERSONA.id, "tier": "realtime", "transport": "webrtc"}
        r = await http.post(
            f"{V1}/sessions", json={**body, "learner_id": r.json()["id"]}, headers=h
        )
        assert r.status_code == 201, r.text
        sid, connect = r.json()["session_id"], r.json()["connect"]
        assert r.json()["status"] == "ready"

        async def offer(sdp: dict[str, Any]) -> dict[str, Any]:
            reply = await http.post(
                connect["offer_url"],
                headers={"Authorization": f"Bearer {connect['token']}"},
                json=sdp,
            )
            assert reply.status_code == 200, reply.text
            return dict(reply.json())

        browser = await open_browser(clip, offer)
        try:
            await until(stored_turns(store, sid, 1), 30)  # the greeting, played out
            fake.call_tool = ("record_acs_result", VERDICT)  # answered before the reply
            browser.mic.cue()
            await until(stored_turns(store, sid, 3), 30)  # the learner's turn and the reply
            fake.opening = PERSONA.farewell_text
            asked_to_end = time.monotonic()
            r = await http.delete(f"{V1}/sessions/{sid}", headers=h)
            assert r.status_code == 202 and r.json() == {"status": "ending"}
            await until(process_gone(supervisor, sid), 30)
        finally:
            await browser.close()
        detail = (await http.get(f"{V1}/sessions/{sid}", headers=h)).json()

    # The session ended by itself after the farewell (not killed after the grace period).
    assert (detail["status"], detail["end_reason"]) == ("ended", "ended by client")
    assert [(t["role"], t["text"]) for t in detail["turns"]] == [
        ("bot", PERSONA.greeting),
        ("learner", TRANSCRIPT),
        ("bot", REPLY),
        ("bot", PERSONA.farewell_text),
    ]
    [conn] = fake.connections
    assert conn.session["instructions"] == realtime_instructions(PERSONA)
    asked = [item["content"][0]["text"] for item in conn.items if item.get("type") == "message"]
    assert PERSONA.greeting in asked[0] and PERSONA.farewell_text in asked[-1]
    assert [r.status for r in conn.responses] == ["completed"] * 4  # greeting, call, reply, bye
    events = await store.list_session_events(sid)
    assert [(e.kind, e.data) for e in events] == [
        (TOOL_CALL, {"name": "record_acs_result", "arguments": VERDICT})
    ]
    assert [(e["kind"], e["data"]) for e in detail["events"]] == [
        ("tool_call", {"name": "record_acs_result", "arguments": VERDICT})
    ]
    # The verdict is also the same ACS result row the cascaded tiers' grading writes.
    [result] = await store.list_acs_results(sid)
    assert (result.task, result.grade, result.question_id) == ("PA.I.B", "satisfactory", "PA.I.B.1")
    # Most of the farewell's audio reached the browser after the end request.
    farewell = conn.responses[-1]
    assert browser.samples_after(asked_to_end) > 0.8 * farewell.audio_bytes / 2 * RATE / 24000
    # Usage: what each response.done reported, stored as the tier's provider and model.
    [group] = await store.usage_by("session")
    stored = {(i.service, i.provider, i.model, i.metric): i.quantity for i in group.items}
    sent = [r.usage or {} for r in conn.responses]
    audio_in = sum(u["input_token_details"]["audio_tokens"] for u in sent)
    audio_out = sum(u["output_token_details"]["audio_tokens"] for u in sent)
    expected = {
        "prompt_tokens": sum(u["input_tokens"] for u in sent) - audio_in,
        "input_audio_tokens": audio_in,
        "completion_tokens": sum(u["output_tokens"] for u in sent) - audio_out,
        "output_audio_tokens": audio_out,
    }
    assert stored == {("llm", "openai", "gpt-realtime", m): float(q) for m, q in expected.items()}
    assert audio_in >= 30  # ≥ 3 s of the learner's speech was committed


async def test_exchange_limit_ends_a_realtime_session_politely(
    fake: OpenAIRealtimeFake,
    store: Store,
    supervisor: SessionSupervisor,
    clip: np.ndarray,
    sqlite_url: str,
) -> None:
    key, _ = await store.create_api_key("realtime")
    learner = await store.create_learner(key.id, "Pat", "en")
    info, _ = await store.create_session(learner.id, key.id, PERSONA.id, "realtime", "webrtc")
    sid = info.id
    spec = SessionSpec(
        session_id=sid,
        persona=PERSONA.id,
        tier="realtime",
        transport="webrtc",
        llm_base_url="http://127.0.0.1:9/v1",
        exchange_limit=1,
    )
    await supervisor.spawn(spec)
    browser = await open_browser(clip, lambda sdp: supervisor.offer(sid, sdp))
    closing = f"{LIMIT_REACHED['en']} {PERSONA.farewell_text}"
    try:
        await until(stored_turns(store, sid, 1), 30)
        fake.opening = closing
        browser.mic.cue()
        await until(process_gone(supervisor, sid), 40)
    finally:
        await browser.close()

    ended = await store.get_session(sid)
    assert ended is not None
    assert (ended.status, ended.end_reason) == ("ended", "quota reached: exchanges_per_session")
    turns = await store.list_turns(sid)
    assert [(t.role, t.text) for t in turns] == [
        ("bot", PERSONA.greeting),
        ("learner", TRANSCRIPT),
        ("bot", REPLY),
        ("bot", closing),
    ]
    [conn] = fake.connections
    assert closing in conn.items[-1]["content"][0]["text"]
    assert [r.status for r in conn.responses] == ["completed"] * 3
    reached = [m["data"] for m in browser.messages if m.get("type") == "server-message"]
    assert reached == [
        {"type": "quota-reached", "quota": "exchanges_per_session", "used": 1, "limit": 1}
    ]
