"""The HTTP API's credentials (API keys), limits and error shapes.

Each test runs against a real store, a SQLite file and a fresh PostgreSQL database
(``api`` fixture), or SQLite only for the HTTP layer (``lite``); the session runtime is
``testkit.api_support.FakeSupervisor``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

from config.settings import Settings
from server import create_app
from store import Store
from testkit.api_support import GOOD_SDP, V1, Api, assert_error, no_runtime, running

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
    offer_url = s["connect"]["offer_url"]
    big_offer = json.dumps({"sdp": "v=0" + "a" * 5000, "type": "offer"})
    r = await lite.client.post(
        offer_url,
        content=big_offer,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {s['connect']['token']}",
        },
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
        headers={"Authorization": f"Bearer {s['connect']['token']}"},
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
