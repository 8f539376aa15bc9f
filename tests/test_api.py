"""The HTTP API against a real store (a SQLite file and a fresh PostgreSQL database).

The session runtime is a :class:`FakeSupervisor` that records calls and moves statuses in
the store as the real ``sessions.supervisor`` does; everything else (store, auth, limits,
metrics, CLI) is real. PostgreSQL is required, as in ``tests/test_store.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from loguru import logger
from typer.testing import CliRunner

from api.metrics import Metrics
from api.runtime import Runtime
from config.settings import Settings
from server import create_app
from sessions.protocol import (
    CapacityError,
    SessionNotRunningError,
    SessionRequestError,
    SessionSpec,
)
from store import Store, create_engine


@asynccontextmanager
async def no_runtime(settings: Settings, _store: Store, _metrics: object) -> AsyncIterator[Runtime]:
    """A runtime with no session supervisor (the API must answer 503, never pretend)."""
    yield Runtime(supervisor=None, llm_base_url=settings.llm_base_url)


V1 = "/api/v1"
GOOD_SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


# -- the fake session runtime ---------------------------------------------------------------


class FakeSupervisor:
    """Stands in for ``sessions.supervisor.SessionSupervisor``; no processes.

    Statuses move in the store as the real one moves them: ``ready`` after spawn, ``active``
    after an offer, ``ended`` after end or shutdown, ``failed`` when spawning fails.

    Args:
        store: Where statuses are written.
        max_sessions: Slots; spawn raises :class:`CapacityError` beyond.
    """

    def __init__(self, store: Store, max_sessions: int = 2):
        self.store = store
        self.max_sessions = max_sessions
        self.running: dict[str, SessionSpec] = {}
        self.calls: list[tuple[str, Any]] = []
        self.spawn_error: BaseException | None = None
        self.offer_error: BaseException | None = None
        self.retry_after_s = 7
        self.shut_down = False

    @property
    def active_count(self) -> int:
        return len(self.running)

    async def spawn(self, spec: SessionSpec) -> None:
        self.calls.append(("spawn", spec))
        if len(self.running) >= self.max_sessions:
            raise CapacityError("all slots busy", retry_after_s=self.retry_after_s)
        if self.spawn_error is not None:
            if not isinstance(self.spawn_error, CapacityError):
                await self.store.set_session_status(spec.session_id, "failed", "boom")
            raise self.spawn_error
        self.running[spec.session_id] = spec
        await self.store.set_session_status(spec.session_id, "ready")

    async def offer(self, session_id: str, offer: dict) -> dict:
        self.calls.append(("offer", (session_id, offer)))
        if self.offer_error is not None:
            raise self.offer_error
        if session_id not in self.running:
            raise SessionNotRunningError(session_id)
        if not offer["sdp"].startswith("v=0"):
            raise SessionRequestError("malformed SDP: no v= line")
        await self.store.set_session_status(session_id, "active")
        return {"sdp": "v=0\r\nanswer", "type": "answer", "pc_id": offer.get("pc_id") or "pc-1"}

    async def ice(self, session_id: str, patch: dict) -> None:
        self.calls.append(("ice", (session_id, patch)))
        if session_id not in self.running:
            raise SessionNotRunningError(session_id)

    async def end(self, session_id: str, reason: str) -> None:
        self.calls.append(("end", (session_id, reason)))
        if self.running.pop(session_id, None) is None:
            raise SessionNotRunningError(session_id)
        await self.store.set_session_status(session_id, "ended", reason)

    def is_running(self, session_id: str) -> bool:
        return session_id in self.running

    async def shutdown(self) -> None:
        self.shut_down = True
        for sid in list(self.running):
            await self.end(sid, "server shutdown")


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'voxtutor.db'}"


@dataclass
class Api:
    """A running app with its store, fake supervisor and two API keys (A and B)."""

    app: FastAPI
    client: httpx.AsyncClient
    store: Store
    sup: FakeSupervisor
    key_a: str
    key_b: str
    key_a_id: str

    @property
    def a(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key_a}"}

    @property
    def b(self) -> dict[str, str]:
        return {"X-API-Key": self.key_b}

    async def learner(self, headers: dict[str, str] | None = None, **fields: Any) -> str:
        body = {"name": "Eva", "target_language": "de", **fields}
        r = await self.client.post(f"{V1}/learners", json=body, headers=headers or self.a)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def session(self, learner_id: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {
            "persona": "german-tutor",
            "tier": "local",
            "transport": "webrtc",
            "learner_id": learner_id or await self.learner(),
            **fields,
        }
        r = await self.client.post(f"{V1}/sessions", json=body, headers=self.a)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def metric(self, line_start: str) -> float:
        """The value of the first exposition line starting with ``line_start``."""
        for line in self.app.state.metrics.render().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield a client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def make_api(url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Api]:
    store = await Store.open(url)
    sup = FakeSupervisor(store, max_sessions=settings.pop("max_sessions", 2))
    (info_a, key_a), (_, key_b) = [await store.create_api_key(n) for n in ("A", "B")]
    cfg = Settings(home=tmp_path, max_body_bytes=4096, session_idle_timeout_s=120, **settings)
    app = create_app(cfg, store=store, supervisor=sup, llm_base_url="http://127.0.0.1:9/v1")
    try:
        async with running(app) as client:
            yield Api(app, client, store, sup, key_a, key_b, info_a.id)
    finally:
        await store.close()


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async for a in make_api(db_url, tmp_path):
        yield a


@pytest.fixture
async def lite(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The same on SQLite only, for tests about the HTTP layer rather than the database."""
    async for a in make_api(sqlite_url, tmp_path):
        yield a


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in r.text
    if code is not None:
        assert body["error"] == code, body
    return dict(body)


# -- ops and documentation ------------------------------------------------------------------


async def test_healthz_needs_no_auth_and_openapi_documents_the_api(lite: Api) -> None:
    r = await lite.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    spec = (await lite.client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "voxtutor" and spec["info"]["version"]
    assert "Authorization: Bearer" in spec["info"]["description"]
    paths = spec["paths"]
    for path in (
        "/api/v1/learners",
        "/api/v1/learners/{learner_id}",
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/offer",
        "/api/v1/personas",
        "/api/v1/tiers",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    create = paths["/api/v1/sessions"]["post"]
    assert {"201", "401", "404", "422", "429", "503"} <= set(create["responses"])
    assert create["responses"]["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    schemes = spec["components"]["securitySchemes"]
    assert {"ApiKeyBearer", "ApiKeyHeader", "SessionTokenBearer", "SessionTokenQuery"} <= set(
        schemes
    )
    offer_security = paths["/api/v1/sessions/{session_id}/offer"]["post"]["security"]
    assert all(set(s) <= {"SessionTokenBearer", "SessionTokenQuery"} for s in offer_security)


async def test_readyz_checks_the_database(api: Api) -> None:
    r = await api.client.get("/readyz")
    # llm_base_url points at a closed port: the database passes, the LLM check fails.
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["llm"].startswith("failed: LLM server unreachable")


@contextmanager
def serve_llm_stub() -> Iterator[str]:
    """A real HTTP server answering ``GET /v1/models`` like an OpenAI-compatible server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/v1/models"
            body = json.dumps({"data": [{"id": "qwen"}]} if ok else {}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def llm_stub() -> Iterator[str]:
    with serve_llm_stub() as url:
        yield url


async def test_readyz_passes_with_db_and_llm_and_names_the_failed_check(
    sqlite_url: str, tmp_path: Path, llm_stub: str
) -> None:
    store = await Store.open(sqlite_url)
    try:
        app = create_app(
            Settings(home=tmp_path), store=store, llm_base_url=llm_stub, runtime=no_runtime
        )
        async with running(app) as client:
            r = await client.get("/readyz")
            assert r.status_code == 200, r.text
            assert r.json() == {"status": "ready", "checks": {"database": "ok", "llm": "ok"}}
        app = create_app(
            Settings(home=tmp_path), store=store, llm_base_url=llm_stub + "/x", runtime=no_runtime
        )
        async with running(app) as client:
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["llm"] == "failed: LLM server answered 404"
        app = create_app(Settings(home=tmp_path), store=store, runtime=no_runtime)  # no LLM
        async with running(app) as client:
            r = await client.get("/readyz")
            assert r.status_code == 200 and r.json()["checks"]["llm"] == "skipped"
    finally:
        await store.close()
    # A database nobody listens on (no migration: Store() on a bare engine).
    dead = Store(create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    try:
        app = create_app(Settings(home=tmp_path), store=dead, runtime=no_runtime)
        async with running(app) as client:
            r = await client.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "unready"
            assert body["checks"]["database"].startswith("failed: database unreachable")
            assert body["checks"]["llm"] == "skipped"
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await dead.close()


async def test_metrics_expose_sessions_spawn_latency_ttfb_and_errors(api: Api) -> None:
    text = (await api.client.get("/metrics")).text
    for name in (
        "voxtutor_active_sessions 0.0",
        "# TYPE voxtutor_spawn_to_ready_seconds histogram",
        "# TYPE voxtutor_voice_to_voice_seconds histogram",
        "# TYPE voxtutor_ttfb_seconds histogram",
        "# TYPE voxtutor_errors_total counter",
    ):
        assert name in text, name
    s = await api.session()
    assert api.metric("voxtutor_active_sessions ") == 1
    assert api.metric("voxtutor_spawn_to_ready_seconds_count ") == 1
    metrics: Metrics = api.app.state.metrics
    metrics.observe_turn({"role": "learner", "text": "Hallo"})  # ignored
    metrics.observe_turn({"role": "bot", "latency_ms": 900, "ttfb_ms": {"llm": 250, "tts": 80}})
    assert api.metric("voxtutor_voice_to_voice_seconds_count ") == 1
    assert api.metric("voxtutor_voice_to_voice_seconds_sum ") == pytest.approx(0.9)
    assert api.metric('voxtutor_ttfb_seconds_count{service="llm"} ') == 1
    assert api.metric('voxtutor_ttfb_seconds_sum{service="tts"} ') == pytest.approx(0.08)
    r = await api.client.delete(f"{V1}/sessions/{s['session_id']}", headers=api.a)
    assert r.status_code == 202
    r = await api.client.get("/metrics")
    assert "voxtutor_active_sessions 0.0" in r.text
    assert r.headers["content-type"].startswith("text/plain")


# -- authentication -------------------------------------------------------------------------


async def test_api_key_is_required_and_accepted_in_either_header(api: Api) -> None:
    url = f"{V1}/personas"
    r = await api.client.get(url)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(await api.client.get(url, headers={"X-API-Key": "wrong-key-123"}), 401)
    assert_error(await api.client.get(url, headers={"Authorization": "Bearer nope!@#"}), 401)
    assert_error(await api.client.get(url, headers={"Authorization": f"Basic {api.key_a}"}), 401)
    assert (await api.client.get(url, headers=api.a)).status_code == 200
    assert (await api.client.get(url, headers={"X-API-Key": api.key_a})).status_code == 200
    assert (await api.client.get(url, headers={"authorization": f"bearer {api.key_a}"})).is_success


async def test_revoked_key_answers_401_on_every_route(api: Api) -> None:
    learner = await api.learner()
    assert await api.store.revoke_api_key(api.key_a[:8])
    for method, url in (
        ("GET", f"{V1}/personas"),
        ("GET", f"{V1}/tiers"),
        ("GET", f"{V1}/learners/{learner}"),
        ("GET", f"{V1}/sessions"),
        ("POST", f"{V1}/learners"),
        ("POST", f"{V1}/sessions"),
    ):
        r = await api.client.request(method, url, headers=api.a, json={})
        assert_error(r, 401, "unauthorized")
        assert r.json()["message"] == "unknown or revoked API key"


async def test_a_key_sees_only_its_own_learners_and_sessions(api: Api) -> None:
    s = await api.session()
    sid = s["session_id"]
    learner = (await api.client.get(f"{V1}/sessions/{sid}", headers=api.a)).json()["learner_id"]
    b = api.b
    assert_error(await api.client.get(f"{V1}/learners/{learner}", headers=b), 404)
    assert_error(await api.client.get(f"{V1}/sessions/{sid}", headers=b), 404, "session_not_found")
    assert_error(await api.client.delete(f"{V1}/sessions/{sid}", headers=b), 404)
    page = (await api.client.get(f"{V1}/sessions", headers=b)).json()
    assert page == {"items": [], "total": 0, "limit": 20, "offset": 0}
    # B cannot start a session for A's learner either; 404, as for a learner that never existed.
    body = {
        "persona": "german-tutor",
        "tier": "local",
        "transport": "webrtc",
        "learner_id": learner,
    }
    r = await api.client.post(f"{V1}/sessions", json=body, headers=b)
    assert_error(r, 404, "learner_not_found")
    assert api.sup.is_running(sid)  # untouched


# -- learners -------------------------------------------------------------------------------


async def test_learners_create_and_get(api: Api) -> None:
    body = {
        "name": "Jana",
        "target_language": "cs",
        "cefr_level": "B1",
        "interests": ["hory", " ", "jídlo"],
        "phone": "+420601123456",
    }
    r = await api.client.post(f"{V1}/learners", json=body, headers=api.a)
    assert r.status_code == 201, r.text
    learner = r.json()
    assert r.headers["location"] == f"/api/v1/learners/{learner['id']}"
    assert learner["interests"] == ["hory", "jídlo"] and learner["cefr_level"] == "B1"
    r = await api.client.get(f"{V1}/learners/{learner['id']}", headers=api.a)
    assert r.status_code == 200 and r.json() == learner
    assert_error(await api.client.get(f"{V1}/learners/nope", headers=api.a), 404)
    r = await api.client.post(f"{V1}/learners", json={**body, "name": "Other"}, headers=api.b)
    assert_error(r, 409, "phone_in_use")
    minimal = await api.learner(name="Max", target_language="en")
    got = (await api.client.get(f"{V1}/learners/{minimal}", headers=api.a)).json()
    assert got["cefr_level"] == "A2" and got["phone"] is None and got["interests"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"target_language": "de"},  # name missing
        {"name": "Eva", "target_language": "fr"},
        {"name": "Eva", "target_language": "de", "cefr_level": "D1"},
        {"name": "Eva", "target_language": "de", "nickname": "E"},  # unknown field
        {"name": "   ", "target_language": "de"},  # blank after stripping (the store's rule)
        {"name": "x" * 201, "target_language": "de"},
        {"name": "Eva\x00", "target_language": "de"},  # PostgreSQL cannot store NUL
        {"name": "Eva\ud800", "target_language": "de"},  # lone surrogate
        {"name": 5, "target_language": "de"},
        {"name": "Eva", "target_language": "de", "interests": "hiking"},
        {"name": "Eva", "target_language": "de", "phone": "12345"},
        [],
    ],
)
async def test_bad_learner_bodies_answer_422(api: Api, body: Any) -> None:
    content = json.dumps(body)  # json.dumps writes NUL and lone surrogates as escapes
    headers = {**api.a, "Content-Type": "application/json"}
    r = await api.client.post(f"{V1}/learners", content=content, headers=headers)
    assert_error(r, 422, "invalid_request")


async def test_ids_and_credentials_a_database_cannot_hold_never_reach_it(api: Api) -> None:
    # NUL and non-UUID ids answer 404/403/empty without a query (PostgreSQL rejects NUL).
    for url in (f"{V1}/learners/%00", f"{V1}/sessions/%00", f"{V1}/sessions/a%00b"):
        assert_error(await api.client.get(url, headers=api.a), 404)
    assert_error(await api.client.delete(f"{V1}/sessions/%00", headers=api.a), 404)
    r = await api.client.get(f"{V1}/sessions", params={"learner_id": "\x00"}, headers=api.a)
    assert r.status_code == 200 and r.json()["total"] == 0
    r = await api.client.post(
        f"{V1}/sessions/%00/offer", params={"token": "a\x00b"}, json={"sdp": "v=0", "type": "offer"}
    )
    assert_error(r, 403)
    assert_error(
        await api.client.get(
            f"{V1}/tiers", headers={"X-API-Key": "k\xe9y\xff".encode("latin-1") * 5}
        ),
        401,
    )
    body = {"name": "Eva", "target_language": "de", "interests": ["ok", "bad\x00"]}
    assert_error(await api.client.post(f"{V1}/learners", json=body, headers=api.a), 422)


# -- catalog --------------------------------------------------------------------------------


async def test_personas_and_tiers(api: Api) -> None:
    personas = (await api.client.get(f"{V1}/personas", headers=api.a)).json()
    by_id = {p["id"]: p for p in personas}
    assert set(by_id) == {"german-tutor", "czech-tutor", "aviation-examiner"}
    assert by_id["german-tutor"] == {
        "id": "german-tutor",
        "name": "Lena",
        "role": "tutor",
        "language": "de",
        "cefr_level": "A2",
    }
    tiers = (await api.client.get(f"{V1}/tiers", headers=api.a)).json()
    assert tiers == [{"name": "local", "available": True, "missing": []}]


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
    assert spec.database_url == api.store.engine.url.render_as_string(hide_password=False)
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
    monkeypatch.setenv("DAILY_API_KEY", "dk-secret-value")
    r = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    message = assert_error(r, 503, "transport_unavailable")["message"]
    assert "not supported" in message and "dk-secret-value" not in r.text
    assert (await api.store.list_sessions(api.key_a_id))[1] == 0


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
    r = await api.client.get(f"{V1}/sessions/{sid}", headers=api.a)
    assert r.status_code == 200, r.text
    d = r.json()
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


# -- WebRTC signalling ----------------------------------------------------------------------


async def test_offer_and_ice_with_the_session_token(api: Api) -> None:
    s = await api.session()
    sid, token = s["session_id"], s["connect"]["token"]
    url = s["connect"]["offer_url"]
    offer = {"sdp": GOOD_SDP, "type": "offer"}
    r = await api.client.post(url, params={"token": token}, json=offer)
    assert r.status_code == 200, r.text
    assert r.json() == {"sdp": "v=0\r\nanswer", "type": "answer", "pc_id": "pc-1"}
    kind, (called_sid, sent) = api.sup.calls[-1]
    assert kind == "offer" and called_sid == sid
    assert sent == {"sdp": GOOD_SDP, "type": "offer", "pc_id": None, "restart_pc": False}
    assert (await api.store.get_session(sid)).status == "active"  # type: ignore[union-attr]
    # Renegotiation with the bearer form, a pc_id and Pipecat's requestData.
    again = {**offer, "pc_id": "pc-1", "restart_pc": True, "requestData": {"x": 1}}
    r = await api.client.post(url, json=again, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["pc_id"] == "pc-1"
    assert api.sup.calls[-1][1][1]["restart_pc"] is True
    patch = {
        "pc_id": "pc-1",
        "candidates": [
            {
                "candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host",
                "sdp_mid": "0",
                "sdp_mline_index": 0,
            }
        ],
    }
    r = await api.client.patch(url, params={"token": token}, json=patch)
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert api.sup.calls[-1] == ("ice", (sid, patch))


async def test_offer_auth_409_and_400(api: Api) -> None:
    s = await api.session()
    sid, token, url = s["session_id"], s["connect"]["token"], s["connect"]["offer_url"]
    offer = {"sdp": GOOD_SDP, "type": "offer"}
    assert_error(await api.client.post(url, json=offer), 401, "unauthorized")
    other = (await api.session())["connect"]["token"]
    for bad in (other, "x" * 43, "not a token!"):
        assert_error(
            await api.client.post(url, params={"token": bad}, json=offer), 403, "forbidden"
        )
    # The API key is not the session token.
    assert_error(await api.client.post(url, json=offer, headers=api.a), 403)
    unknown = f"{V1}/sessions/00000000-0000-4000-8000-000000000000/offer"
    assert_error(await api.client.post(unknown, params={"token": token}, json=offer), 403)
    assert_error(
        await api.client.post(f"{V1}/sessions/x/offer", params={"token": token}, json=offer), 403
    )
    # Malformed SDP: the process refuses it → 400 with its message.
    r = await api.client.post(
        url, params={"token": token}, json={"sdp": "garbage", "type": "offer"}
    )
    assert "malformed SDP" in assert_error(r, 400, "bad_offer")["message"]
    assert api.metric('voxtutor_errors_total{kind="bad_offer"} ') == 1
    # Invalid bodies never reach the process.
    calls = len(api.sup.calls)
    for body in (
        {"sdp": GOOD_SDP, "type": "answer"},
        {"sdp": "", "type": "offer"},
        {"sdp": GOOD_SDP},
        {**offer, "extra": 1},
    ):
        assert_error(await api.client.post(url, params={"token": token}, json=body), 422)
    assert len(api.sup.calls) == calls
    # Ended session → 409, for the offer and for ICE.
    await api.client.delete(f"{V1}/sessions/{sid}", headers=api.a)
    r = await api.client.post(url, params={"token": token}, json=offer)
    assert "ended" in assert_error(r, 409, "session_not_running")["message"]
    patch = {"pc_id": "pc-1", "candidates": []}
    assert_error(await api.client.patch(url, params={"token": token}, json=patch), 409)


async def test_offer_for_a_live_session_without_process_is_409(api: Api) -> None:
    s = await api.session()
    api.sup.running.pop(s["session_id"])  # died; the supervisor has not recorded it yet
    r = await api.client.post(
        s["connect"]["offer_url"],
        params={"token": s["connect"]["token"]},
        json={"sdp": GOOD_SDP, "type": "offer"},
    )
    assert_error(r, 409, "session_not_running")


# -- limits and robustness ------------------------------------------------------------------


async def test_oversized_bodies_answer_413(lite: Api) -> None:
    url = f"{V1}/learners"
    big = json.dumps({"name": "E" * 5000, "target_language": "de"})
    headers = {**lite.a, "Content-Type": "application/json"}
    r = await lite.client.post(url, content=big, headers=headers)  # Content-Length: 5000+
    assert_error(r, 413, "payload_too_large")
    assert "4096" in r.json()["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as streamed
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000].encode()

    r = await lite.client.post(url, content=chunks(), headers=headers)
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")
    s = await lite.session()
    offer_url = s["connect"]["offer_url"] + "?token=" + s["connect"]["token"]
    big_offer = json.dumps({"sdp": "v=0" + "a" * 5000, "type": "offer"})
    r = await lite.client.post(
        offer_url, content=big_offer, headers={"Content-Type": "application/json"}
    )
    assert_error(r, 413)
    # A GET with a huge declared body is refused before routing too.
    r = await lite.client.request("GET", f"{V1}/personas", content=b"x" * 5000, headers=lite.a)
    assert_error(r, 413)


async def test_malformed_json_and_wrong_types_answer_422(lite: Api) -> None:
    h = {**lite.a, "Content-Type": "application/json"}
    for content in (
        b"{",
        b"not json",
        b'{"name": "E", "target_language": "de",}',
        b"\xff\xfe",
        b"\xf8I~!",
    ):
        r = await lite.client.post(f"{V1}/learners", content=content, headers=h)
        body = assert_error(r, 422, "invalid_request")
        assert "malformed JSON" in body["message"] or "body" in body["message"]
    r = await lite.client.post(f"{V1}/learners", content=b"{", headers=h)
    assert r.json()["message"].startswith("malformed JSON")
    r = await lite.client.post(
        f"{V1}/sessions", json={"persona": 1, "tier": [], "transport": None}, headers=lite.a
    )
    message = assert_error(r, 422)["message"]
    assert "body.persona" in message and "body.learner_id" in message
    r = await lite.client.post(
        f"{V1}/learners", content=b"name=Eva", headers={**lite.a, "Content-Type": "text/plain"}
    )
    assert_error(r, 422)


async def test_unexpected_errors_answer_500_without_traceback(lite: Api) -> None:
    s = await lite.session()
    lite.sup.offer_error = ZeroDivisionError("secret internals")
    r = await lite.client.post(
        s["connect"]["offer_url"],
        params={"token": s["connect"]["token"]},
        json={"sdp": GOOD_SDP, "type": "offer"},
    )
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "message": "internal error"}
    assert "secret internals" not in r.text
    assert lite.metric('voxtutor_errors_total{kind="internal"} ') == 1


async def test_unknown_routes_and_methods_use_the_error_shape(lite: Api) -> None:
    assert_error(await lite.client.get(f"{V1}/nothing", headers=lite.a), 404, "not_found")
    assert_error(await lite.client.put(f"{V1}/sessions", headers=lite.a), 405, "method_not_allowed")


async def test_cors_only_for_configured_origins(sqlite_url: str, tmp_path: Path) -> None:
    store = await Store.open(sqlite_url)
    try:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key",
        }
        app = create_app(Settings(home=tmp_path), store=store, runtime=no_runtime)
        async with running(app) as client:
            r = await client.options(
                f"{V1}/sessions", headers={"Origin": "https://evil.example", **preflight}
            )
            assert "access-control-allow-origin" not in r.headers
        settings = Settings(home=tmp_path, cors_origins=["https://app.example"])
        app = create_app(settings, store=store, runtime=no_runtime)
        async with running(app) as client:
            ok = await client.options(
                f"{V1}/sessions", headers={"Origin": "https://app.example", **preflight}
            )
            assert ok.status_code == 200
            assert ok.headers["access-control-allow-origin"] == "https://app.example"
            bad = await client.options(
                f"{V1}/sessions", headers={"Origin": "https://evil.example", **preflight}
            )
            assert "access-control-allow-origin" not in bad.headers
            r = await client.get("/healthz", headers={"Origin": "https://app.example"})
            assert r.headers["access-control-allow-origin"] == "https://app.example"
    finally:
        await store.close()


# -- lifespan, runtime hook and CLI ---------------------------------------------------------


async def test_lifespan_opens_the_store_and_builds_the_runtime(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
    async with await Store.open(url) as s:
        key = (await s.create_api_key("k"))[1]
    built: list[FakeSupervisor] = []

    @asynccontextmanager
    async def runtime(settings: Settings, store: Store, metrics: Metrics) -> AsyncIterator[Runtime]:
        built.append(FakeSupervisor(store))
        yield Runtime(supervisor=built[0], llm_base_url="http://127.0.0.1:9/v1")

    app = create_app(Settings(home=tmp_path, database_url=url), runtime=runtime)
    async with running(app) as client:
        h = {"X-API-Key": key}
        r = await client.post(
            f"{V1}/learners", json={"name": "E", "target_language": "de"}, headers=h
        )
        body = {
            "persona": "czech-tutor",
            "tier": "local",
            "transport": "webrtc",
            "learner_id": r.json()["id"],
        }
        r = await client.post(f"{V1}/sessions", json=body, headers=h)
        assert r.status_code == 201, r.text
        assert built[0].running
    assert built[0].shut_down and not built[0].running  # the app shut the supervisor down
    async with await Store.open(url) as store:
        (owner,) = await store.list_api_keys()
        (info,), _ = await store.list_sessions(owner.id)
        assert info.status == "ended" and info.end_reason == "server shutdown"


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from config.settings import get_settings

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_cli_keys_create_list_revoke(cli_env: str) -> None:
    from cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["keys", "create", "web app"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    assert len(key) == 43

    async def check(k: str) -> bool:
        async with await Store.open(cli_env) as store:
            return await store.authenticate(k) is not None

    assert asyncio.run(check(key))
    r = runner.invoke(app, ["keys", "list"])
    assert r.exit_code == 0 and key[:8] in r.stdout and "web app" in r.stdout
    assert key not in r.stdout  # never the key itself
    r = runner.invoke(app, ["keys", "revoke", key[:8]])
    assert r.exit_code == 0, r.output
    assert not asyncio.run(check(key))
    r = runner.invoke(app, ["keys", "revoke", key[:8]])
    assert r.exit_code == 2 and "already revoked" in r.output
    r = runner.invoke(app, ["keys", "create", "  "])
    assert r.exit_code == 2 and r.output.startswith("error:")


def test_cli_serve_runs_uvicorn_with_the_app_factory(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from cli import app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: seen.update(target=target, **kw))
    monkeypatch.setenv("VOXTUTOR_PORT", "8123")
    from config.settings import get_settings

    get_settings.cache_clear()
    r = CliRunner().invoke(app, ["serve", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert seen["target"] == "server:create_app_from_env" and seen["factory"] is True
    assert (seen["host"], seen["port"], seen["workers"]) == ("127.0.0.1", 8123, 1)
    import server

    logging_configured: list[Settings] = []
    monkeypatch.setattr(server, "configure_logging", logging_configured.append)
    assert isinstance(server.create_app_from_env(), FastAPI)
    assert logging_configured[0].port == 8123
