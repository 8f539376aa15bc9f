"""Session processes end to end over real WebRTC on loopback (aiortc plays the browser).

A real worker process loads the local stack, answers an SDP offer relayed by the
supervisor, greets, hears real LibriVox speech over the peer connection, answers, and
writes each turn to the store. Killing the process mid-session marks the session failed and
keeps the turns already spoken.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest
import pytest_asyncio

from config.personas import load_persona
from config.settings import Settings
from contracts.session_spec import SessionSpec
from runtime.protocol import CapacityError, SessionNotRunningError
from runtime.supervisor import SessionSupervisor
from services.llama_server import LlamaServer
from services.turn_service import TurnService
from store import Store
from testkit.webrtc_peer import RATE, SpeechTrack, connect
from transports.file import load_learner_audio
from weights.registry import model_path

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm_url(tmp_path_factory):
    server = LlamaServer(
        model_path("qwen2.5-coder-0.5b", Settings().home),
        log_path=tmp_path_factory.mktemp("llm") / "llama.log",
    )
    async with server:
        yield server.base_url


@pytest_asyncio.fixture(loop_scope="module")
async def env(tmp_path, llm_url):
    url = f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}"
    store = await Store.open(url)
    key, _ = await store.create_api_key("test")
    learner = await store.create_learner(key.id, "Pat", "en")
    turn_service = TurnService()
    await turn_service.start()
    sup = SessionSupervisor(
        store,
        max_sessions=1,
        log_dir=tmp_path / "logs",
        spares=("local",),
        turn_url=turn_service.url,
    )

    async def new_session(
        idle_timeout_s: float = 300.0, max_duration_s: float | None = None
    ) -> str:
        info, _token = await store.create_session(
            learner.id, key.id, "aviation-examiner", "local", "webrtc"
        )
        spec = SessionSpec(
            session_id=info.id,
            persona="aviation-examiner",
            tier="local",
            transport="webrtc",
            llm_base_url=llm_url,
            idle_timeout_s=idle_timeout_s,
            max_duration_s=max_duration_s,
        )
        await sup.spawn(spec)
        return info.id

    yield store, sup, new_session, turn_service
    await sup.shutdown()
    await turn_service.stop()
    await store.close()


async def wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"condition not met within {timeout_s} s")


async def test_webrtc_session_greets_hears_speech_answers_and_stores_turns(env, librivox):
    store, sup, new_session, turn_service = env
    clip, text = next((p, t) for p, t in librivox.items() if "0880" in p.name)
    pcm16 = load_learner_audio(clip, 16000)
    pcm = np.repeat(pcm16, 3)  # 16 kHz → 48 kHz (sample repeat is fine for speech tests)
    sid = await new_session()
    assert (await store.get_session(sid)).status == "ready"

    # Speak after the ~9 s greeting has played.
    pc, received = await connect(sup, sid, SpeechTrack(pcm, delay_s=11.0))

    async def answered():
        turns = await store.list_turns(sid)
        return any(t.role == "bot" and t.latency_ms for t in turns)

    await wait_for(answered, 90)
    turns = await store.list_turns(sid)
    roles = [t.role for t in turns]
    assert roles[0] == "bot" and "learner" in roles
    learner = next(t for t in turns if t.role == "learner")
    assert "disposed" in learner.text.lower() or "young man" in learner.text.lower()
    assert (await store.get_session(sid)).status == "active"
    assert received["samples"] > RATE  # > 1 s of the bot's voice reached the "browser"
    # The examiner's grade of the answer reached the store through the process's relay.
    results = await store.list_acs_results(sid)
    assert results and results[0].task.startswith("PA.")
    assert results[0].turn_index in {t.index for t in turns if t.role == "learner"}
    # The learner's turn ended on the server's shared smart-turn model, not a session copy.
    assert turn_service.requests >= 1

    await sup.end(sid, "test done")
    await wait_for(lambda: _not_running(sup, sid), 30)
    info = await store.get_session(sid)
    assert info.status == "ended" and info.end_reason == "test done"
    await pc.close()


async def _not_running(sup, sid):
    return not sup.is_running(sid)


async def test_killed_session_process_is_marked_failed_and_keeps_its_turns(env):
    store, sup, new_session, _ = env
    sid = await new_session()
    with pytest.raises(CapacityError):  # max_sessions=1
        await new_session()
    pc, _ = await connect(sup, sid, SpeechTrack(np.zeros(1, dtype=np.int16), delay_s=60))

    async def greeted():
        return len(await store.list_turns(sid)) >= 1

    await wait_for(greeted, 60)
    os.kill(sup.pid(sid), signal.SIGKILL)
    await wait_for(lambda: _not_running(sup, sid), 10)
    info = await store.get_session(sid)
    assert info.status == "failed" and "died" in info.end_reason
    assert [t.role for t in await store.list_turns(sid)][:1] == ["bot"]
    with pytest.raises(SessionNotRunningError):
        await sup.offer(sid, {"sdp": "x", "type": "offer"})
    await pc.close()


async def test_session_nobody_connects_to_ends_and_frees_its_slot(env):
    store, sup, new_session, _ = env
    sid = await new_session(idle_timeout_s=2.0)
    await wait_for(lambda: _not_running(sup, sid), 30)
    info = await store.get_session(sid)
    assert info.status == "ended" and info.end_reason == "no client connected"
    assert sup.active_count == 0


async def test_a_session_at_its_maximum_length_says_goodbye_and_ends(env):
    store, sup, new_session, _ = env
    sid = await new_session(max_duration_s=8.0)
    pc, _ = await connect(sup, sid, SpeechTrack(np.zeros(1, dtype=np.int16), delay_s=120))
    await wait_for(lambda: _not_running(sup, sid), 60)
    info = await store.get_session(sid)
    assert info.status == "ended" and info.end_reason == "maximum session length reached"
    said = [t.text for t in await store.list_turns(sid) if t.role == "bot"]
    assert said and said[-1] == load_persona("aviation-examiner").farewell_text
    await pc.close()
