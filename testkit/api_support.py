"""Helpers shared by the API tests (``tests/api/`` and others): a fake session runtime, a harness.

The session runtime is a :class:`FakeSupervisor` that records calls and moves statuses in the
store as the real ``runtime.supervisor`` does; everything else (store, auth, limits, metrics,
CLI) is real. The fixtures built on these (``api``, ``lite``, ``sqlite_url``, ``llm_stub``)
live in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from api.runtime import Runtime
from config.settings import Settings
from contracts.session_spec import SessionSpec
from runtime.protocol import CapacityError, SessionNotRunningError, SessionRequestError
from server import create_app
from store import Store


@asynccontextmanager
async def no_runtime(settings: Settings, _store: Store, _metrics: object) -> AsyncIterator[Runtime]:
    """A runtime with no session supervisor (the API must answer 503, never pretend)."""
    yield Runtime(supervisor=None, llm_base_url=settings.llm_base_url)


V1 = "/api/v1"
GOOD_SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


# -- the fake session runtime ---------------------------------------------------------------


class FakeSupervisor:
    """Stands in for ``runtime.supervisor.SessionSupervisor``; no processes.

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
        """Sessions running now."""
        return len(self.running)

    def active_tiers(self) -> list[str]:
        """The tier of each running session."""
        return [spec.tier for spec in self.running.values()]

    async def spawn(self, spec: SessionSpec) -> None:
        """Start ``spec``'s session (status ``ready``), or fail as set up.

        Raises:
            CapacityError: All ``max_sessions`` slots are taken (``retry_after_s``).
            BaseException: ``spawn_error`` when set (the session is then ``failed``, unless
                it is a :class:`CapacityError`).
        """
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
        """Answer a WebRTC offer with a canned SDP answer; the session becomes ``active``.

        Raises:
            BaseException: ``offer_error`` when set.
            SessionNotRunningError: No such running session.
            SessionRequestError: ``offer["sdp"]`` does not start with ``v=0``.
        """
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
        """Record trickled ICE candidates; raises :class:`SessionNotRunningError` if not running."""
        self.calls.append(("ice", (session_id, patch)))
        if session_id not in self.running:
            raise SessionNotRunningError(session_id)

    async def end(self, session_id: str, reason: str) -> None:
        """End the session (status ``ended`` with ``reason``).

        Raises:
            SessionNotRunningError: No such running session.
        """
        self.calls.append(("end", (session_id, reason)))
        if self.running.pop(session_id, None) is None:
            raise SessionNotRunningError(session_id)
        await self.store.set_session_status(session_id, "ended", reason)

    def is_running(self, session_id: str) -> bool:
        """Whether ``session_id`` was spawned and not yet ended."""
        return session_id in self.running

    async def shutdown(self) -> None:
        """End every running session with reason ``server shutdown``."""
        self.shut_down = True
        for sid in list(self.running):
            await self.end(sid, "server shutdown")


# -- the API harness ----------------------------------------------------------------------


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
        """Headers authenticating with key A (``Authorization: Bearer``)."""
        return {"Authorization": f"Bearer {self.key_a}"}

    @property
    def b(self) -> dict[str, str]:
        """Headers authenticating with key B (``X-API-Key``)."""
        return {"X-API-Key": self.key_b}

    async def learner(self, headers: dict[str, str] | None = None, **fields: Any) -> str:
        """Create a learner (German, name Eva, unless ``fields`` say otherwise); return its id.

        ``headers`` default to key A's. Asserts the API answered 201.
        """
        body = {"name": "Eva", "target_language": "de", **fields}
        r = await self.client.post(f"{V1}/learners", json=body, headers=headers or self.a)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def phone_learner(
        self, phone: str, headers: dict[str, str] | None = None, **fields: Any
    ) -> str:
        """Create a learner (as :meth:`learner`) whose ``phone`` is proved; return its id.

        The proof takes the store's own path (a code made, then entered), without a carrier.
        """
        learner_id = await self.learner(headers, **fields)
        info = await self.store.get_learner(learner_id)
        assert info is not None
        pending = await self.store.start_phone_verification(
            learner_id, info.owner_key_id, phone, "twilio"
        )
        await self.store.verify_phone(learner_id, info.owner_key_id, pending.code)
        return learner_id

    async def session(self, learner_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a local-tier WebRTC German-tutor session as key A; return the response body.

        Without ``learner_id`` a new learner is created for it. Asserts the API answered 201.
        """
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
    """Yield a running :class:`Api` on the database at ``url``; close the store afterwards.

    Args:
        url: Database URL.
        tmp_path: The app's home directory.
        **settings: :class:`Settings` overrides; ``max_sessions`` goes to the fake supervisor.
    """
    store = await Store.open(url)
    sup = FakeSupervisor(store, max_sessions=settings.pop("max_sessions", 2))
    # Both keys may grant every plan; a test gives a learner the plan it needs.
    (info_a, key_a), (_, key_b) = [await store.create_api_key(n, "*") for n in ("A", "B")]
    # Rate limits high enough for the tests that do not test them (tests/api/test_limits.py).
    defaults = {
        "max_body_bytes": 4096,
        "session_idle_timeout_s": 120,
        "rate_limit_per_key": "100000/minute",
        "session_starts_per_learner": "100000/hour",
        "phone_verify_calls_per_key": "100000/day",
    }
    cfg = Settings(home=tmp_path, **{**defaults, **settings})
    app = create_app(cfg, store=store, supervisor=sup, llm_base_url="http://127.0.0.1:9/v1")
    try:
        async with running(app) as client:
            yield Api(app, client, store, sup, key_a, key_b, info_a.id)
    finally:
        await store.close()


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert ``r`` is the API's error shape with ``status`` (and ``code``); return its body.

    The body must be exactly ``{"error", "message"}`` with a non-empty message and no traceback.
    """
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in r.text
    if code is not None:
        assert body["error"] == code, body
    return dict(body)


@contextmanager
def serve_llm_stub() -> Iterator[str]:
    """A real HTTP server answering ``GET /v1/models`` like an OpenAI-compatible server.

    Under ``/busy/v1`` it answers the same after 3 s, as a llama.cpp server does while it
    generates another request's reply.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/busy/"):
                time.sleep(3)
                self.path = self.path.removeprefix("/busy")
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
