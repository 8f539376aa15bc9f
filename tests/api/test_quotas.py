"""Tier quotas: monthly usage queries, the creation check at the boundary, in-session limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pipecat.frames.frames import EndFrame
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame
from pipecat.workers.runner import WorkerRunner

from api.errors import ApiError
from api.quotas import check_quotas
from config.personas import load_persona
from config.settings import Settings
from config.tiers import Quotas, Tier, get_tier
from pipelines.quota import LIMIT_REACHED, SessionQuota
from pipelines.session import build_session
from store import Store
from store.quotas import month_start
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


def _tier(**quotas) -> Tier:
    base = get_tier("ground_school")
    return base.model_copy(update={"quotas": Quotas(**quotas)})


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


@pytest.mark.parametrize("limit", [1, 3])
async def test_sessions_per_month_limit_minus_one_ok_limit_refused(
    store: Store, limit: int
) -> None:
    learner_id, key_id = await _learner(store)
    tier = _tier(sessions_per_month=limit, exchanges_per_session=20)
    for _ in range(limit - 1):
        await store.create_session(learner_id, key_id, "aviation-examiner", tier.name, "webrtc")
    grant = await check_quotas(store, tier, learner_id, "/pricing")  # limit - 1 used: ok
    assert grant.exchanges == 20 and grant.tts_characters is None
    await store.create_session(learner_id, key_id, "aviation-examiner", tier.name, "webrtc")
    with pytest.raises(ApiError) as refused:
        await check_quotas(store, tier, learner_id, "/pricing")
    e = refused.value
    assert (e.status, e.code) == (402, "quota_exceeded")
    assert e.extra == {
        "quota": "sessions_per_month",
        "limit": limit,
        "used": limit,
        "upgrade_url": "/pricing",
    }


async def test_tts_characters_per_month_boundary_and_what_is_left(store: Store) -> None:
    learner_id, key_id = await _learner(store)
    tier = _tier(tts_chars_per_month=1000)
    s, _ = await store.create_session(learner_id, key_id, "aviation-examiner", tier.name, "webrtc")
    await store.add_usage_event(s.id, "tts", "openai", "gpt-4o-mini-tts", "characters", 999)
    grant = await check_quotas(store, tier, learner_id, "/up")
    assert grant.tts_characters == 1
    await store.add_usage_event(s.id, "tts", "openai", "gpt-4o-mini-tts", "characters", 1)
    with pytest.raises(ApiError) as refused:
        await check_quotas(store, tier, learner_id, "/up")
    assert refused.value.extra["quota"] == "tts_chars_per_month"
    assert refused.value.extra["used"] == 1000


async def test_local_tier_is_unlimited(store: Store) -> None:
    learner_id, key_id = await _learner(store)
    for _ in range(5):
        await store.create_session(learner_id, key_id, "german-tutor", "local", "webrtc")
    grant = await check_quotas(store, get_tier("local"), learner_id, "/pricing")
    assert grant.exchanges is None and grant.tts_characters is None


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
    learner_id = await api.learner(target_language="en")
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
    assert (spec.exchange_limit, spec.tts_chars_left) == (20, 200_000)
    refused = await api.client.post(f"{V1}/sessions", json=body, headers=api.a)
    assert refused.status_code == 402, refused.text
    assert refused.json() == {
        "error": "quota_exceeded",
        "message": f"the tier's sessions quota is used up ({limit} of {limit} this month)",
        "quota": "sessions_per_month",
        "limit": limit,
        "used": limit,
        "upgrade_url": "/pricing",
    }
    # Other tiers are counted separately.
    local = await api.client.post(f"{V1}/sessions", json={**body, "tier": "local"}, headers=api.a)
    assert local.status_code == 201, local.text
