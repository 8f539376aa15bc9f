"""The HTTP API's ops endpoints, documentation, lifespan, runtime hook and CLI.

Each test runs against a real store, a SQLite file and a fresh PostgreSQL database
(``api`` fixture), or SQLite only for the HTTP layer (``lite``); the session runtime is
``testkit.api_support.FakeSupervisor``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from api.metrics import Metrics
from api.runtime import Runtime
from config.settings import Settings
from server import create_app
from store import Store, create_engine
from testkit.api_support import V1, Api, FakeSupervisor, no_runtime, running

# -- ops and documentation ------------------------------------------------------------------


async def test_healthz_needs_no_auth_and_openapi_documents_the_api(lite: Api) -> None:
    r = await lite.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert (await lite.client.get("/openapi.json")).status_code == 401  # a key, by default
    assert (await lite.client.get("/docs")).status_code == 404  # no docs page in production
    spec = (await lite.client.get("/openapi.json", headers=lite.a)).json()
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
    assert {"ApiKeyBearer", "ApiKeyHeader", "SessionTokenBearer"} <= set(schemes)
    offer_security = paths["/api/v1/sessions/{session_id}/offer"]["post"]["security"]
    assert all(set(s) <= {"SessionTokenBearer"} for s in offer_security)
    assert "SessionTokenQuery" not in schemes  # the token never goes in a URL


async def test_readyz_checks_the_database(api: Api) -> None:
    r = await api.client.get("/readyz")
    # llm_base_url points at a closed port: the database passes, the LLM check fails.
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["llm"].startswith("failed: LLM server unreachable")


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
        busy = llm_stub.replace("/v1", "/busy/v1")  # answers after 3 s, like a busy llama.cpp
        app = create_app(
            Settings(home=tmp_path), store=store, llm_base_url=busy, runtime=no_runtime
        )
        async with running(app) as client:
            r = await client.get("/readyz")
            assert r.status_code == 200 and r.json()["checks"]["llm"] == "busy"
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
    assert (await api.client.get("/metrics")).status_code == 401
    text = (await api.client.get("/metrics", headers=api.a)).text
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
    r = await api.client.get("/metrics", headers=api.b)
    assert "voxtutor_active_sessions 0.0" in r.text
    assert r.headers["content-type"].startswith("text/plain")


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


async def test_every_response_carries_the_security_headers(lite: Api) -> None:
    for path in ("/", "/js/main.js", "/manifest.webmanifest", "/healthz", "/api/v1/personas"):
        r = await lite.client.get(path, headers=lite.a)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


async def test_the_learner_apps_build_inputs_are_not_served(lite: Api) -> None:
    for path in ("/package.json", "/package-lock.json", "/tools/make_icons.py"):
        assert (await lite.client.get(path)).status_code == 404, path
    assert (await lite.client.get("/js/main.js")).status_code == 200


async def test_ops_public_serves_the_docs_and_metrics_without_a_key(tmp_path: Path) -> None:
    from testkit.api_support import make_api

    async for api in make_api(
        f"sqlite+aiosqlite:///{tmp_path / 'o.db'}", tmp_path, ops_public=True
    ):
        docs = await api.client.get("/docs")
        assert docs.status_code == 200  # Swagger from its CDN: no CSP on the docs pages
        assert "content-security-policy" not in docs.headers
        assert docs.headers["x-content-type-options"] == "nosniff"
        assert (await api.client.get("/openapi.json")).status_code == 200
        assert (await api.client.get("/metrics")).status_code == 200
