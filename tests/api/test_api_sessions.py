"""The HTTP API's session routes: create, capacity, failures, get, list, delete.

Each test runs against a real store, a SQLite file and a fresh PostgreSQL database
(``api`` fixture), or SQLite only for the HTTP layer (``lite``); the session runtime is
``testkit.api_support.FakeSupervisor``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from config.settings import Settings
from contracts.session_spec import SessionSpec
from runtime.protocol import CapacityError
from server import create_app
from store import Store
from testkit.api_support import V1, Api, assert_error, no_runtime, running

# -- sessions -------------------------------------------------------------------------------


async def test_create_session_spawns_a_ready_session(api: Api) -> None:
    learner = await api.learner(name="Jana", cefr_level="B2")
    records: list[Any] = []
    handler = logger.add(lambda m: records.append(m.record), level="INFO")
    try:
        s = await api.session(learner)
    finally:
        logger.remove(handler)
    sid = s["session_id"]
    # Logged with the session id bound; neither the token nor the API key appears.
    started = [r for r in records if r["message"].startswith("session started")]
    assert started and started[0]["extra"] == {"session_id": sid}
    logged = " ".join(r["message"] for r in records)
    assert s["connect"]["token"] not in logged and api.key_a not in logged
    assert s["status"] == "ready"
    assert s["connect"]["offer_url"] == f"/api/v1/sessions/{sid}/offer"
    assert await api.store.check_session_token(sid, s["connect"]["token"])
    kind, spec = api.sup.calls[-1]
    assert kind == "spawn" and isinstance(spec, SessionSpec)
    assert (spec.session_id, spec.persona, spec.tier, spec.transport) == (
        sid,
        "german-tutor",
        "local",
        "webrtc",
    )
    assert (spec.cefr_level, spec.learner_name) == ("B2", "Jana")
    assert spec.llm_base_url == "http://127.0.0.1:9/v1" and spec.idle_timeout_s == 120
    # The session process gets no database URL (it may hold a password): its writes go
    # through the server (runtime.store_relay).
    assert not any("sqlite" in str(v) or "database" in k for k, v in spec.to_json().items())
    info = await api.store.get_session(sid)
    assert info is not None and info.owner_key_id == api.key_a_id and info.status == "ready"


async def test_create_session_rejects_unknown_persona_tier_learner(api: Api) -> None:
    learner = await api.learner()
    base = {"persona": "german-tutor", "tier": "local", "transport": "webrtc"}
    url = f"{V1}/sessions"
    for persona in ("klingon", "../config/personas/german-tutor", "a\x00b"):
        r = await api.client.post(
            url, json={**base, "persona": persona, "learner_id": learner}, headers=api.a
        )
        body = assert_error(r, 422)
        assert body["error"] in ("unknown_persona", "invalid_request")
    r = await api.client.post(
        url, json={**base, "persona": "klingon", "learner_id": learner}, headers=api.a
    )
    assert "german-tutor" in r.json()["message"]  # lists the known ones
    r = await api.client.post(
        url, json={**base, "tier": "cloud", "learner_id": learner}, headers=api.a
    )
    assert_error(r, 422, "unknown_tier")
    for bad in ("00000000-0000-4000-8000-000000000000", "nope", "a\x00"):
        r = await api.client.post(url, json={**base, "learner_id": bad}, headers=api.a)
        assert r.status_code in (404, 422), r.text
    r = await api.client.post(url, json={**base, "learner_id": "nope"}, headers=api.a)
    assert_error(r, 404, "learner_not_found")
    r = await api.client.post(
        url, json={**base, "transport": "sip", "learner_id": learner}, headers=api.a
    )
    assert_error(r, 422, "invalid_request")
    assert not [c for c in api.sup.calls if c[0] == "spawn"]
    assert (await api.store.list_sessions(api.key_a_id))[1] == 0


async def test_daily_transport_is_unavailable_and_says_why(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    learner = await api.learner()
    body = {"persona": "german-tutor", "tier": "local", "transport": "daily", "learner_id": learner}
    monkeypatch.delenv("DAILY_API_KEY", raising=False)
    r = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert "DAILY_API_KEY" in assert_error(r, 503, "transport_unavailable")["message"]
    assert (await api.store.list_sessions(api.key_a_id))[1] == 0
    # With the key set, Daily rooms are created: tests/phone/test_daily.py.


async def test_capacity_answers_429_with_retry_after(api: Api) -> None:
    learner = await api.learner()
    await api.session(learner)
    await api.session(learner)
    body = {
        "persona": "german-tutor",
        "tier": "local",
        "transport": "webrtc",
        "learner_id": learner,
    }
    r = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert_error(r, 429, "at_capacity")
    assert int(r.headers["retry-after"]) > 0
    assert (await api.store.list_sessions(api.key_a_id))[1] == 2  # nothing stored for it
    # The supervisor's own CapacityError (a race past the check) carries its Retry-After.
    api.sup.max_sessions = 3
    api.sup.spawn_error = CapacityError("full", retry_after_s=11)
    r = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert_error(r, 429, "at_capacity")
    assert r.headers["retry-after"] == "11"
    failed, total = await api.store.list_sessions(api.key_a_id, status="failed")
    assert total == 1 and failed[0].end_reason == "rejected: all slots busy"
    assert api.metric('voxtutor_errors_total{kind="capacity"} ') == 2


async def test_spawn_failure_marks_the_session_failed_and_answers_503(api: Api) -> None:
    api.sup.spawn_error = RuntimeError("session process failed to start: exit status 1")
    learner = await api.learner()
    body = {
        "persona": "german-tutor",
        "tier": "local",
        "transport": "webrtc",
        "learner_id": learner,
    }
    r = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert "failed to start" in assert_error(r, 503, "session_start_failed")["message"]
    (info,), _ = await api.store.list_sessions(api.key_a_id)
    assert info.status == "failed" and info.ended_at is not None
    assert api.metric('voxtutor_errors_total{kind="spawn_failed"} ') == 1


async def test_without_a_session_runtime_sessions_answer_503(db_url: str, tmp_path: Path) -> None:
    store = await Store.open(db_url)
    try:
        _, key = await store.create_api_key("k")
        app = create_app(Settings(home=tmp_path), store=store, runtime=no_runtime)
        async with running(app) as client:
            h = {"X-API-Key": key}
            r = await client.post(
                f"{V1}/learners", json={"name": "E", "target_language": "de"}, headers=h
            )
            body = {"persona": "german-tutor", "tier": "local", "transport": "webrtc"}
            r = await client.post(
                f"{V1}/sessions", json={**body, "learner_id": r.json()["id"]}, headers=h
            )
            assert assert_error(r, 503, "runtime_unavailable")["message"] == (
                "session runtime not configured"
            )
    finally:
        await store.close()


async def test_get_session_with_turns_and_latency(api: Api) -> None:
    s = await api.session()
    sid = s["session_id"]
    await api.store.add_turn(sid, {"index": 0, "role": "learner", "text": "Hallo", "end_ms": 900})
    bot = {"index": 1, "role": "bot", "text": "Hallo Eva!", "latency_ms": 800}
    await api.store.add_turn(sid, {**bot, "ttfb_ms": {"llm": 300}})
    await api.store.add_turn(
        sid, {"index": 2, "role": "bot", "text": "Wie geht's?", "latency_ms": 1200}
    )
    switch = {"role": "tts", "from": "cartesia", "to": "deepgram", "reason": "timeout"}
    await api.store.add_session_event(sid, "provider_switch", switch)
    r = await api.client.get(f"{V1}/sessions/{sid}", headers=api.a)
    assert r.status_code == 200, r.text
    d = r.json()
    assert [(e["kind"], e["data"]) for e in d["events"]] == [("provider_switch", switch)]
    assert (d["id"], d["status"], d["persona"], d["tier"], d["transport"]) == (
        sid,
        "ready",
        "german-tutor",
        "local",
        "webrtc",
    )
    assert d["created_at"] and d["ready_at"] and d["ended_at"] is None and d["end_reason"] is None
    assert [t["text"] for t in d["turns"]] == ["Hallo", "Hallo Eva!", "Wie geht's?"]
    assert d["turns"][1]["ttfb_ms"] == {"llm": 300} and d["turns"][0]["latency_ms"] is None
    assert d["latency"] == {
        "turns": 2,
        "median_ms": 1000.0,
        "p95_ms": d["latency"]["p95_ms"],
        "max_ms": 1200,
    }
    assert "token" not in r.text and "owner_key_id" not in r.text
    assert_error(await api.client.get(f"{V1}/sessions/nope", headers=api.a), 404)
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(await api.client.get(f"{V1}/sessions/{missing}", headers=api.a), 404)


async def test_list_sessions_filters_and_pages(api: Api) -> None:
    api.sup.max_sessions = 10
    eva, jan = await api.learner(), await api.learner(name="Jan")
    ids = [(await api.session(eva))["session_id"] for _ in range(3)]
    other = (await api.session(jan))["session_id"]
    await api.client.delete(f"{V1}/sessions/{ids[0]}", headers=api.a)
    url = f"{V1}/sessions"
    page = (await api.client.get(url, headers=api.a)).json()
    assert page["total"] == 4 and len(page["items"]) == 4
    assert page["items"][0]["id"] == other  # newest first
    page = (await api.client.get(url, params={"learner_id": eva}, headers=api.a)).json()
    assert page["total"] == 3 and {i["learner_id"] for i in page["items"]} == {eva}
    page = (await api.client.get(url, params={"status": "ended"}, headers=api.a)).json()
    assert [i["id"] for i in page["items"]] == [ids[0]]
    page = (await api.client.get(url, params={"limit": 2, "offset": 1}, headers=api.a)).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (4, 2, 1, 2)
    page = (await api.client.get(url, params={"learner_id": "nope"}, headers=api.a)).json()
    assert page["total"] == 0
    for params in (
        {"status": "bogus"},
        {"limit": 0},
        {"limit": 101},
        {"offset": -1},
        {"offset": 10**30},
    ):
        assert_error(await api.client.get(url, params=params, headers=api.a), 422)


async def test_delete_ends_the_session_then_409(api: Api) -> None:
    s = await api.session()
    sid = s["session_id"]
    r = await api.client.delete(f"{V1}/sessions/{sid}", headers=api.a)
    assert r.status_code == 202 and r.json() == {"status": "ending"}
    assert ("end", (sid, "ended by client")) in api.sup.calls
    d = (await api.client.get(f"{V1}/sessions/{sid}", headers=api.a)).json()
    assert d["status"] == "ended" and d["end_reason"] == "ended by client" and d["ended_at"]
    r = await api.client.delete(f"{V1}/sessions/{sid}", headers=api.a)
    assert "already ended" in assert_error(r, 409, "session_not_running")["message"]
    # A live session whose process is gone (e.g. after a crash) is settled as ended.
    s2 = await api.session()
    api.sup.running.pop(s2["session_id"])
    r = await api.client.delete(f"{V1}/sessions/{s2['session_id']}", headers=api.a)
    assert r.status_code == 202 and r.json() == {"status": "ended"}
