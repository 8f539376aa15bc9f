"""Learner access tokens (``/api/v1/learners/{id}/access``) and the learner's own ``/me`` API.

A learner's browser holds only a short-lived token that opens that learner's sessions,
history and progress within their plan; never the operator's API key.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from store.models import LearnerAccessToken, utcnow
from testkit.api_support import V1, Api, assert_error


async def link(api: Api, learner_id: str, headers: dict[str, str] | None = None) -> str:
    r = await api.client.post(
        f"{V1}/learners/{learner_id}/access", json={"ttl_minutes": 60}, headers=headers or api.a
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["url"].endswith(f"/#token={body['token']}")  # in the fragment, never sent
    return str(body["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cloud_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.setenv(name, f"test-{name.lower()}")


async def test_a_link_opens_the_learners_own_app_and_nothing_else(
    api: Api, cloud_keys: None
) -> None:
    eva = await api.learner(name="Eva", plan="ground_school")
    other = await api.learner(name="Otto")
    token = await link(api, eva)
    me = (await api.client.get(f"{V1}/me", headers=bearer(token))).json()
    assert me["learner"]["name"] == "Eva" and me["learner"]["plan"] == "ground_school"
    allowed = {t["name"] for t in me["tiers"] if t["allowed"]}
    assert allowed == {"local", "ground_school"}
    refused = next(t for t in me["tiers"] if t["name"] == "dpe_live")
    assert not refused["allowed"] and "Ground School" in refused["reason"]
    assert {p["id"] for p in me["personas"]} >= {"german-tutor", "aviation-examiner"}
    assert me["tiers"][0]["sessions_left"] == 30

    # A session of my own: started within my plan, listed, readable, endable.
    r = await api.client.post(
        f"{V1}/me/sessions",
        json={"persona": "german-tutor", "tier": "local", "cefr_level": "B1"},
        headers=bearer(token),
    )
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    assert r.json()["connect"]["offer_url"].endswith(f"/sessions/{sid}/offer")
    assert (await api.store.get_learner(eva)).cefr_level == "B1"  # type: ignore[union-attr]
    page = (await api.client.get(f"{V1}/me/sessions", headers=bearer(token))).json()
    assert [s["id"] for s in page["items"]] == [sid]
    detail = await api.client.get(f"{V1}/me/sessions/{sid}", headers=bearer(token))
    assert detail.status_code == 200 and detail.json()["mistakes"] == []
    assert (await api.client.get(f"{V1}/me/progress", headers=bearer(token))).status_code == 200

    # Outside the plan: 403. Another learner's session: 403. The operator's routes: 401.
    r = await api.client.post(
        f"{V1}/me/sessions",
        json={"persona": "aviation-examiner", "tier": "dpe_live"},
        headers=bearer(token),
    )
    assert_error_code(r, 403, "tier_not_entitled")
    theirs = (await api.session(other))["session_id"]
    for path in (f"/me/sessions/{theirs}", f"/me/sessions/{theirs}/report"):
        assert_error(await api.client.get(V1 + path, headers=bearer(token)), 403, "forbidden")
    assert_error(await api.client.delete(f"{V1}/me/sessions/{theirs}", headers=bearer(token)), 403)
    for path in (f"/learners/{other}", "/sessions", f"/learners/{eva}/progress"):
        assert_error(await api.client.get(V1 + path, headers=bearer(token)), 401)
    r = await api.client.delete(f"{V1}/me/sessions/{sid}", headers=bearer(token))
    assert r.status_code == 202


def assert_error_code(r, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.json()["error"] == code


async def test_expired_unknown_and_erased_tokens_are_refused(api: Api) -> None:
    eva = await api.learner()
    token = await link(api, eva)
    assert_error(await api.client.get(f"{V1}/me"), 401, "unauthorized")
    assert_error(await api.client.get(f"{V1}/me", headers=bearer("x" * 43)), 401, "unauthorized")
    async with api.store._tx() as s:
        await s.execute(
            update(LearnerAccessToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert_error(await api.client.get(f"{V1}/me", headers=bearer(token)), 401, "token_expired")
    fresh = await link(api, eva)
    assert (await api.client.get(f"{V1}/me", headers=bearer(fresh))).status_code == 200
    assert (await api.client.delete(f"{V1}/learners/{eva}", headers=api.a)).status_code == 204
    assert_error(await api.client.get(f"{V1}/me", headers=bearer(fresh)), 401)


async def test_only_the_owning_key_mints_links(api: Api) -> None:
    eva = await api.learner()
    r = await api.client.post(f"{V1}/learners/{eva}/access", json={}, headers=api.b)
    assert_error(r, 404, "learner_not_found")
    r = await api.client.post(
        f"{V1}/learners/{eva}/access", json={"ttl_minutes": 10**6}, headers=api.a
    )
    assert_error(r, 422)


async def test_revoking_the_links_or_the_apps_key_ends_them(api: Api) -> None:
    eva = await api.learner()
    token = await link(api, eva)
    r = await api.client.delete(f"{V1}/learners/{eva}/access", headers=api.b)
    assert_error(r, 404)  # not key B's learner
    assert (await api.client.get(f"{V1}/me", headers=bearer(token))).status_code == 200
    r = await api.client.delete(f"{V1}/learners/{eva}/access", headers=api.a)
    assert r.status_code == 204
    assert_error(await api.client.get(f"{V1}/me", headers=bearer(token)), 401, "unauthorized")
    fresh = await link(api, eva)
    assert await api.store.revoke_api_key(api.key_a_id)
    assert_error(await api.client.get(f"{V1}/me", headers=bearer(fresh)), 401, "unauthorized")


async def test_a_refused_start_leaves_the_level_alone(api: Api) -> None:
    eva = await api.learner(cefr_level="A2")
    token = await link(api, eva)
    r = await api.client.post(
        f"{V1}/me/sessions",
        json={"persona": "nobody", "tier": "local", "cefr_level": "C1"},
        headers=bearer(token),
    )
    assert_error(r, 422)
    assert (await api.store.get_learner(eva)).cefr_level == "A2"  # type: ignore[union-attr]
