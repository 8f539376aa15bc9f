"""Rate limits per key and learner, live sessions per key, revoked keys' sessions ended."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from config.settings import Settings
from runtime.housekeeping import REVOKED, end_revoked_sessions
from testkit.api_support import V1, assert_error, make_api


def db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'v.db'}"


async def test_requests_over_the_keys_rate_are_429_with_retry_after(tmp_path: Path) -> None:
    async for api in make_api(db(tmp_path), tmp_path, rate_limit_per_key="100/minute"):
        results = await asyncio.gather(
            *(api.client.get(f"{V1}/personas", headers=api.a) for _ in range(100))
        )
        assert all(r.status_code == 200 for r in results)
        r = await api.client.get(f"{V1}/personas", headers=api.a)
        assert_error(r, 429, "rate_limited")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Another key has its own window; the unauthenticated health check none.
        assert (await api.client.get(f"{V1}/personas", headers=api.b)).status_code == 200
        assert (await api.client.get("/healthz")).status_code == 200


async def test_session_starts_per_learner_and_live_sessions_per_key_are_capped(
    tmp_path: Path,
) -> None:
    settings = {"session_starts_per_learner": "2/hour", "max_sessions_per_key": 3}
    async for api in make_api(db(tmp_path), tmp_path, max_sessions=10, **settings):
        eva = await api.learner()
        for _ in range(2):
            await api.session(eva)
        body = {"persona": "german-tutor", "tier": "local", "transport": "webrtc"}
        r = await api.client.post(f"{V1}/sessions", json={**body, "learner_id": eva}, headers=api.a)
        assert_error(r, 429, "rate_limited")
        await api.session(await api.learner(name="Jan"))  # the key's third live session
        r = await api.client.post(
            f"{V1}/sessions",
            json={**body, "learner_id": await api.learner(name="Ola")},
            headers=api.a,
        )
        assert_error(r, 429, "key_at_capacity")
        assert r.headers["Retry-After"] == "30"


async def test_revoking_a_key_ends_its_live_sessions(tmp_path: Path) -> None:
    async for api in make_api(db(tmp_path), tmp_path):
        mine = (await api.session())["session_id"]
        assert await end_revoked_sessions(api.store, api.sup) == 0
        keys = await api.store.list_api_keys()
        key_a = next(k for k in keys if k.id == api.key_a_id)
        assert await api.store.revoke_api_key(key_a.prefix)
        assert await end_revoked_sessions(api.store, api.sup) == 1
        assert api.sup.calls[-1] == ("end", (mine, REVOKED))
        info = await api.store.get_session(mine)
        assert info is not None and (info.status, info.end_reason) == ("ended", REVOKED)
        assert_error(await api.client.get(f"{V1}/personas", headers=api.a), 401)


def test_a_limit_the_library_cannot_read_is_refused_at_start() -> None:
    from api.limits import ApiLimits

    with pytest.raises(ValueError):
        ApiLimits(Settings(rate_limit_per_key="lots"))


async def test_server_processes_share_the_counters_in_redis() -> None:
    import uuid

    from api.errors import ApiError
    from api.limits import ApiLimits

    settings = Settings(rate_limit_per_key="3/minute", limits_url="async+redis://127.0.0.1:6379")
    one, two = ApiLimits(settings), ApiLimits(settings)  # as two server processes would
    key = f"test-{uuid.uuid4()}"
    await one.request(key)
    await two.request(key)
    await one.request(key)
    with pytest.raises(ApiError) as over:
        await two.request(key)
    assert over.value.status == 429 and over.value.code == "rate_limited"
