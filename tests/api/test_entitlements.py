"""Plans and entitlements: a tier outside the learner's plan is refused; keys grant only theirs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from config.plans import PlanError, get_plan, key_may_grant, load_plans
from testkit.api_support import V1, Api, assert_error, make_api

BODY = {"persona": "aviation-examiner", "tier": "ground_school", "transport": "webrtc"}


@pytest.fixture
def cloud_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic")


async def key_with(api: Api, plans: str) -> dict[str, str]:
    _, plaintext = await api.store.create_api_key(f"app {plans}", plans)
    return {"Authorization": f"Bearer {plaintext}"}


async def test_a_tier_outside_the_learners_plan_is_403(api: Api, cloud_keys: None) -> None:
    learner = await api.learner(target_language="en")  # the default plan: free
    r = await api.client.post(f"{V1}/sessions", json={**BODY, "learner_id": learner}, headers=api.a)
    assert r.status_code == 403, r.text
    body = r.json()
    assert (body["error"], body["plan"], body["tiers"]) == ("tier_not_entitled", "free", ["local"])
    assert "'ground_school'" in body["message"] and body["upgrade_url"] == "/api/v1/plans"
    assert api.sup.calls == []  # nothing started, no session row
    assert (await api.store.list_sessions(api.key_a_id))[1] == 0
    # Put on a plan with the tier, the same request starts.
    r = await api.client.patch(
        f"{V1}/learners/{learner}", json={"plan": "ground_school"}, headers=api.a
    )
    assert r.status_code == 200 and r.json()["plan"] == "ground_school"
    r = await api.client.post(f"{V1}/sessions", json={**BODY, "learner_id": learner}, headers=api.a)
    assert r.status_code == 201, r.text


async def test_a_key_grants_only_its_plans(lite: Api) -> None:
    free_only = await key_with(lite, "free")
    r = await lite.client.post(
        f"{V1}/learners",
        json={"name": "Sam", "target_language": "en", "plan": "dpe_live"},
        headers=free_only,
    )
    assert_error(r, 403, "plan_not_allowed")
    r = await lite.client.post(
        f"{V1}/learners", json={"name": "Sam", "target_language": "en"}, headers=free_only
    )
    assert r.status_code == 201 and r.json()["plan"] == "free"
    sam = r.json()["id"]
    assert_error(
        await lite.client.patch(
            f"{V1}/learners/{sam}", json={"plan": "dpe_live"}, headers=free_only
        ),
        403,
        "plan_not_allowed",
    )
    assert_error(
        await lite.client.patch(
            f"{V1}/learners/{sam}", json={"plan": "platinum"}, headers=free_only
        ),
        422,
        "unknown_plan",
    )
    some = await key_with(lite, "free,ground_school")
    plans = (await lite.client.get(f"{V1}/plans", headers=some)).json()
    assert {p["name"]: p["grantable"] for p in plans} == {
        "free": True,
        "ground_school": True,
        "checkride_prep": False,
        "dpe_live": False,
    }


async def test_learners_per_key_are_capped_even_when_created_at_once(tmp_path: Path) -> None:
    async for api in make_api(
        f"sqlite+aiosqlite:///{tmp_path / 'v.db'}", tmp_path, max_learners_per_key=3
    ):
        results = await asyncio.gather(
            *(
                api.client.post(
                    f"{V1}/learners", json={"name": f"L{i}", "target_language": "de"}, headers=api.a
                )
                for i in range(8)
            )
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [201] * 3 + [403] * 5
        assert_error(next(r for r in results if r.status_code == 403), 403, "learner_limit")
        # Another key has its own allowance.
        r = await api.client.post(
            f"{V1}/learners", json={"name": "B", "target_language": "de"}, headers=api.b
        )
        assert r.status_code == 201


def test_every_plan_names_known_tiers_and_keys_match_plans() -> None:
    assert set(load_plans()) == {"free", "ground_school", "checkride_prep", "dpe_live"}
    assert get_plan("free").tiers == ("local",)
    with pytest.raises(PlanError):
        get_plan("platinum")
    assert key_may_grant("*", "dpe_live") and key_may_grant("free, ground_school", "ground_school")
    assert not key_may_grant("free", "ground_school")


async def test_a_review_session_needs_a_cascaded_tier(api: Api, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai")
    learner = await api.learner(target_language="en", plan="checkride_prep")
    body = {**BODY, "tier": "realtime", "learner_id": learner, "mode": "review"}
    r = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert_error(r, 422, "invalid_request")
    assert "speech-to-speech" in r.json()["message"]
