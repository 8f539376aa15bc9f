"""The HTTP API's learners and catalog routes.

Each test runs against a real store, a SQLite file and a fresh PostgreSQL database
(``api`` fixture), or SQLite only for the HTTP layer (``lite``); the session runtime is
``testkit.api_support.FakeSupervisor``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from testkit.api_support import V1, Api, assert_error

# -- learners -------------------------------------------------------------------------------


async def test_learners_create_and_get(api: Api) -> None:
    body = {
        "name": "Jana",
        "target_language": "cs",
        "cefr_level": "B1",
        "interests": ["hory", " ", "jídlo"],
    }
    r = await api.client.post(f"{V1}/learners", json=body, headers=api.a)
    assert r.status_code == 201, r.text
    learner = r.json()
    assert r.headers["location"] == f"/api/v1/learners/{learner['id']}"
    assert learner["interests"] == ["hory", "jídlo"] and learner["cefr_level"] == "B1"
    r = await api.client.get(f"{V1}/learners/{learner['id']}", headers=api.a)
    assert r.status_code == 200 and r.json() == learner
    assert_error(await api.client.get(f"{V1}/learners/nope", headers=api.a), 404)
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
        {"name": "Eva", "target_language": "de", "phone": "+420601123456"},  # proved instead
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
        f"{V1}/sessions/%00/offer",
        headers={"Authorization": "Bearer a\xe9b".encode("latin-1")},
        json={"sdp": "v=0", "type": "offer"},
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
    tiers = {t["name"]: t for t in (await api.client.get(f"{V1}/tiers", headers=api.a)).json()}
    assert list(tiers) == ["local", "ground_school", "checkride_prep", "dpe_live", "realtime"]
    assert tiers["local"]["available"] is True and tiers["local"]["missing"] == []
    dpe = tiers["dpe_live"]
    assert dpe["providers"]["tts"] == ["cartesia", "deepgram", "openai", "local", "text"]
    assert dpe["quotas"] == {
        "sessions_per_month": None,
        "exchanges_per_session": 50,
        "tts_chars_per_month": 1_000_000,
    }
    assert tiers["realtime"]["providers"] == {"realtime": ["openai"]}
    for name in ("ground_school", "checkride_prep", "dpe_live", "realtime"):
        assert tiers[name]["available"] is False, name  # no provider keys in the test env
        assert "OPENAI_API_KEY" in tiers["realtime"]["missing"]


async def test_tier_without_keys_is_refused_at_creation_naming_them(api: Api) -> None:
    learner = (
        await api.client.post(
            f"{V1}/learners", json={"name": "Bob", "target_language": "en"}, headers=api.a
        )
    ).json()
    body = {
        "persona": "aviation-examiner",
        "tier": "dpe_live",
        "transport": "webrtc",
        "learner_id": learner["id"],
    }
    r = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert_error(r, 503)
    assert r.json()["error"] == "tier_unavailable"
    for name in ("ANTHROPIC_API_KEY", "CARTESIA_API_KEY", "DEEPGRAM_API_KEY"):
        assert name in r.json()["message"]
