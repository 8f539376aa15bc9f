"""Tier quotas: monthly usage queries, the creation check at the boundary, in-session limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pipecat.frames.frames import EndFrame
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame
from pipecat.workers.runner import WorkerRunner

from api.quotas import quota_refusal
from config.personas import load_persona
from config.settings import Settings
from config.tiers import get_tier
from pipelines.quota import LIMIT_REACHED, SessionQuota
from pipelines.session import build_session
from store import QuotaExceededError, Store
from store.quotas import Limits, month_start
from testkit.fakes import FakeLLM, FakeTTS, ScriptedTransport, user_says


@pytest.fixture
async def store(db_url: str):
    s = await Store.open(db_url)
    yield s
    await s.close()


async def _learner(store: Store) -> tuple[str, str]:
    key, _ = await store.create_api_key("quota test")
    learner = await store.create_learner(key.id, name="Jana", target_language="en", cefr_level="B1")
    return learner.id, key.id


async def test_monthly_usage_counts_sessions_and_tts_characters_of_the_tier(store: Store) -> None:
    learner_id, key_id = await _learner(store)
    a, _ = await store.create_session(learner_id, key_id, "aviation-examiner", "dpe_live", "webrtc")
    b, _ = await store.create_session(learner_id, key_id, "aviation-examiner", "dpe_live", "webrtc")
    other, _ = await store.create_session(learner_id, key_id, "german-tutor", "local", "webrtc")
    refused, _ = await store.create_session(
        learner_id, key_id, "aviation-examiner", "dpe_live", "webrtc"
    )
    await store.set_session_status(refused.id, "failed", "rejected: all slots busy")
    crashed, _ = await store.create_session(
        learner_id, key_id, "aviation-examiner", "dpe_live", "webrtc"
    )
    await store.set_session_status(crashed.id, "failed", "session process died")
    await store.add_usage_event(a.id, "tts", "cartesia", "sonic-3", "characters", 1200)
    await store.add_usage_event(b.id, "tts", "deepgram", "aura-2", "characters", 34)
    await store.add_usage_event(b.id, "llm", "anthropic", "claude", "prompt_tokens", 999)
    await store.add_usage_event(other.id, "tts", "local", "piper", "characters", 5000)

    used = await store.monthly_usage(learner_id, "dpe_live")
    assert used.sessions == 3  # a, b and the crashed one; the refused one never ran
    assert used.tts_characters == 1234
    local = await store.monthly_usage(learner_id, "local")
    assert (local.sessions, local.tts_characters) == (1, 5000)
    next_month = month_start() + timedelta(days=32)
    later = await store.monthly_usage(learner_id, "dpe_live", now=next_month)
    assert (later.sessions, later.tts_characters) == (0, 0)


def test_month_start_is_utc_midnight_on_the_first() -> None:
    assert month_start(datetime(2026, 3, 31, 23, 59, tzinfo=UTC)) == datetime(
        2026, 3, 1, tzinfo=UTC
    )


async def _reserve(
    store: Store, learner_id: str, key_id: str, limits: Limits, tier: str = "ground_school"
):
    return await store.reserve_session(
        learner_id, key_id, "aviation-examiner", tier, "webrtc", limits
    )


@pytest.mark.parametrize("limit", [1, 3])
async def test_sessions_per_month_limit_minus_one_ok_limit_refused(
    store: Store, limit: int
) -> None:
    learner_id, key_id = await _learner(store)
    limits = Limits(tier_sessions=limit)
    for _ in range(limit - 1):
        await store.create_session(
            learner_id, key_id, "aviation-examiner", "ground_school", "webrtc"
        )
    info, token, tts = await _reserve(store, learner_id, key_id, limits)  # limit - 1 used: ok
    assert info.status == "starting" and token and tts is None
    with pytest.raises(QuotaExceededError) as refused:
        await _reserve(store, learner_id, key_id, limits)
    e = refused.value
    assert (e.quota, e.scope, e.limit, e.used) == ("sessions_per_month", "tier", limit, limit)
    api_error = quota_refusal(e, "/pricing")
    assert (api_error.status, api_error.code) == (402, "quota_exceeded")
    assert api_error.extra == {
        "quota": "sessions_per_month",
        "scope": "tier",
        "limit": limit,
        "used": limit,
        "upgrade_url": "/pricing",
    }


async def test_tts_characters_per_month_boundary_and_what_is_left(store: Store) -> None:
    learner_id, key_id = await _learner(store)
    limits = Limits(tier_tts_chars=1000)
    s, _, reserved = await _reserve(store, learner_id, key_id, limits)
    assert reserved == 1000  # the whole month's allowance, while it runs
    await store.add_usage_event(s.id, "tts", "openai", "gpt-4o-mini-tts", "characters", 999)
    with pytest.raises(QuotaExceededError):  # a second one at once: nothing left to reserve
        await _reserve(store, learner_id, key_id, limits)
    await store.set_session_status(s.id, "ended")  # the unused reservation is released
    _, _, reserved = await _reserve(store, learner_id, key_id, limits)
    assert reserved == 1


async def test_plan_limits_count_every_tier(store: Store) -> None:
    learner_id, key_id = await _learner(store)
    limits = Limits(plan_sessions=2)
    await _reserve(store, learner_id, key_id, limits, tier="local")
    await _reserve(store, learner_id, key_id, limits, tier="ground_school")
    with pytest.raises(QuotaExceededError) as refused:
        await _reserve(store, learner_id, key_id, limits, tier="dpe_live")
    assert (refused.value.scope, refused.value.used) == ("plan", 2)


async def test_twenty_concurrent_starts_share_the_tts_allowance(store: Store) -> None:
    learner_id, key_id = await _learner(store)
    limits = Limits(plan_tts_chars=100_000, session_tts_chars=30_000)
    results = await asyncio.gather(
        *(_reserve(store, learner_id, key_id, limits) for _ in range(20)), return_exceptions=True
    )
    started = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, QuotaExceededError)]
    assert len(started) + len(refused) == 20, [r for r in results if isinstance(r, Exception)]
    # Reservations add up to the allowance, never more: 30k + 30k + 30k + the 10k left.
    assert sorted(r[2] for r in started) == [10_000, 30_000, 30_000, 30_000]
    assert all(e.quota == "tts_chars_per_month" for e in refused)


async def test_twenty_concurrent_starts_never_pass_the_session_quota(store: Store) -> None:
    learner_id, key_id = await _learner(store)
    limits = Limits(plan_sessions=5)
    results = await asyncio.gather(
        *(_reserve(store, learner_id, key_id, limits) for _ in range(20)), return_exceptions=True
    )
    assert sum(isinstance(r, tuple) for r in results) == 5
    assert sum(isinstance(r, QuotaExceededError) for r in results) == 15


REPLY = "Gut gemacht. Was machst du am Wochenende?"


async def _run_with_quota(tmp_path, turns: int, exchanges: int | None, chars: int | None):
    settings = Settings(home=tmp_path, speech_timeout_ms=100)
    persona = load_persona("czech-tutor")
    transport = ScriptedTransport()
    llm = FakeLLM(REPLY, token_delay=0.005)
    tts = FakeTTS(chunks=3)
    sent: list = []
    quota_box: dict = {}

    async def on_turn(turn):
        await quota_box["quota"].on_turn(turn)

    session = build_session(
        persona,
        stt=IdentityFilter(),
        llm=llm,
        tts=tts,
        transport=transport,
        settings=settings,
        on_turn=on_turn,
        audio_out_sample_rate=16000,
    )

    async def queue_frames(frames):
        sent.extend(frames)
        await session.worker.queue_frames(frames)

    ended: list[str] = []

    async def on_limit(name):
        ended.append(name)

    quota = SessionQuota(
        exchanges=exchanges,
        tts_characters=chars,
        language=persona.language,
        farewell=persona.farewell_text,
        queue_frames=queue_frames,
        on_limit=on_limit,
    )
    quota_box["quota"] = quota
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)

    async def drive():
        await asyncio.sleep(0.3)
        for i in range(turns):
            if quota.ended_by:
                break
            await session.worker.queue_frames(user_says(f"Otázka číslo {i + 1} prosím"))
            await asyncio.sleep(1.2)
        if not quota.ended_by:
            await session.worker.queue_frame(EndFrame())

    driver = asyncio.create_task(drive())
    await asyncio.wait_for(runner.run(), 60)
    await driver
    return quota, llm, tts, sent, ended, persona


async def test_exchange_limit_ends_the_session_politely_after_the_last_answer(tmp_path) -> None:
    quota, llm, tts, sent, ended, persona = await _run_with_quota(
        tmp_path, turns=5, exchanges=3, chars=None
    )
    assert ended == ["exchanges_per_session"]
    assert len(llm.requests) == 3  # the 4th learner turn never reached the LLM
    closing = f"{LIMIT_REACHED['cs']} {persona.farewell_text}"
    assert tts.spoken[-1] == closing or " ".join(tts.spoken).endswith(closing)
    # 80 % of 3 rounds up to 3, the limit itself: the end notice replaces the warning.
    notices = [f.data for f in sent if isinstance(f, RTVIServerMessageFrame)]
    assert notices == [
        {"type": "quota-reached", "quota": "exchanges_per_session", "used": 3, "limit": 3}
    ]


async def test_exchange_limit_minus_one_keeps_the_session_going(tmp_path) -> None:
    quota, llm, tts, sent, ended, _ = await _run_with_quota(
        tmp_path, turns=4, exchanges=5, chars=None
    )
    assert ended == [] and quota.ended_by is None
    assert len(llm.requests) == 4
    warnings = [f.data for f in sent if isinstance(f, RTVIServerMessageFrame)]
    assert warnings == [
        {"type": "quota-warning", "quota": "exchanges_per_session", "used": 4, "limit": 5}
    ]


async def test_tts_characters_left_end_the_session_when_spent(tmp_path) -> None:
    quota, llm, _tts, _sent, ended, _ = await _run_with_quota(
        tmp_path, turns=6, exchanges=None, chars=2 * len(REPLY)
    )
    assert ended == ["tts_chars_per_month"]
    assert len(llm.requests) == 2
    assert quota.used["tts_chars_per_month"] >= 2 * len(REPLY)


async def test_api_refuses_the_session_over_the_monthly_limit_with_402(
    api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testkit.api_support import V1

    monkeypatch.setenv("OPENAI_API_KEY", "test-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic")
    # A plan without a session limit: the tier's own limit is the one reached.
    learner_id = await api.learner(target_language="en", plan="dpe_live")
    limit = get_tier("ground_school").quotas.sessions_per_month
    for _ in range(limit - 1):
        await api.store.create_session(
            learner_id, api.key_a_id, "aviation-examiner", "ground_school", "webrtc"
        )
    body = {
        "persona": "aviation-examiner",
        "tier": "ground_school",
        "transport": "webrtc",
        "learner_id": learner_id,
    }
    ok = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert ok.status_code == 201, ok.text  # the limit-th session of the month
    spec = api.sup.calls[-1][1]
    assert (spec.exchange_limit, spec.tts_chars_left) == (20, 50_000)  # the session's share
    refused = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert refused.status_code == 402, refused.text
    assert refused.json() == {
        "error": "quota_exceeded",
        "message": f"the tier's sessions quota is used up ({limit} of {limit} this month)",
        "quota": "sessions_per_month",
        "scope": "tier",
        "limit": limit,
        "used": limit,
        "upgrade_url": "/api/v1/plans",  # no VOXTUTOR_UPGRADE_URL, no Stripe: the catalog
    }
    # Other tiers are counted separately.
    local = await api.client.post(f"{V1}/sessions", json={**body, "tier": "local"}, headers=api.a)
    assert local.status_code == 201, local.text
