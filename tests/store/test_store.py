"""The store against real databases: a SQLite file and a fresh PostgreSQL database per test.

PostgreSQL is required (``VOXTUTOR_TEST_PG_DSN``, default the local server with trust auth):
when it is unreachable these tests fail rather than skip, so both backends are always covered.
"""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from contracts.turns import TurnRecord
from store import (
    ConflictError,
    NotFoundError,
    Store,
    create_api_key_sync,
    migrate,
    normalize_url,
    revoke_api_key_sync,
)
from store.models import Base

TABLES = {
    "api_keys",
    "learners",
    "sessions",
    "turns",
    "usage_events",
    "session_events",
    "mistakes",
    "acs_results",
    "learner_levels",
    "review_items",
    "review_logs",
    "session_reports",
    "billing_events",
    "phone_verifications",
    "learner_access_tokens",
}


async def dump_everything(store: Store) -> str:
    """Every value of every row of every table, as one string."""
    out = []
    async with store.engine.connect() as conn:
        for table in sorted(TABLES):
            for row in await conn.execute(text(f"SELECT * FROM {table}")):
                out.extend(str(v) for v in row)
    return "\n".join(out)


async def new_session(store: Store, key_id: str | None = None, learner_id: str | None = None):
    if key_id is None:
        key_id = (await store.create_api_key("k"))[0].id
    if learner_id is None:
        learner_id = (await store.create_learner(key_id, "Eva", "de")).id
    return await store.create_session(learner_id, key_id, "de_tutor", "local", "webrtc")


def bot(index: int, latency_ms: int | None, text: str = "Hallo!") -> dict:
    return {"index": index, "role": "bot", "text": text, "latency_ms": latency_ms}


# -- schema -------------------------------------------------------------------------------


async def test_migrations_create_all_tables_and_rerunning_is_a_noop(db_url: str) -> None:
    await migrate(db_url)
    await migrate(db_url)  # already at head: nothing to do, nothing fails
    store = await Store.open(db_url)  # migrates a third time
    try:
        async with store.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert tables == TABLES | {"alembic_version"}
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            assert versions == [("0009",)]
            # The hand-reviewed migration matches the models exactly.
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
            assert diff == []
            checks = await conn.run_sync(
                lambda c: {ck["name"] for t in TABLES for ck in inspect(c).get_check_constraints(t)}
            )
            assert checks == {
                "ck_learners_target_language",
                "ck_sessions_status",
                "ck_turns_role",
                "ck_usage_events_service",
                "ck_acs_results_grade",
                "ck_learner_levels_source",
                "ck_learner_levels_cefr_level",
                "ck_review_items_kind",
                "ck_session_reports_status",
            }
    finally:
        await store.close()


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'sub' / 'v.db'}")  # plain URL, new dir
    try:
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await store.close()


def test_normalize_url() -> None:
    assert normalize_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert normalize_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"
    with pytest.raises(ValueError):
        normalize_url("mysql://h/db")


# -- API keys -----------------------------------------------------------------------------


async def test_api_keys_authenticate_revoke_and_are_stored_hashed(store: Store) -> None:
    info, plaintext = await store.create_api_key("web app")
    other, other_plain = await store.create_api_key("cli")
    assert len(plaintext) >= 43 and info.prefix == plaintext[:8] and info.active
    assert info.created_at.tzinfo is UTC

    assert await store.authenticate(plaintext) == info
    assert await store.authenticate(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert await store.authenticate("nonsense-key-value") is None
    assert await store.authenticate("") is None

    _, token = await new_session(store, info.id)
    dump = await dump_everything(store)
    assert plaintext not in dump and other_plain not in dump and token not in dump

    assert await store.revoke_api_key(info.prefix) is True
    assert await store.revoke_api_key(info.id) is False  # already revoked
    assert await store.revoke_api_key("no-such-key") is False
    assert await store.authenticate(plaintext) is None
    assert await store.authenticate(other_plain) == other  # the other key still works
    keys = {k.id: k for k in await store.list_api_keys()}
    assert not keys[info.id].active and keys[other.id].active
    assert [k.id for k in await store.list_api_keys(include_revoked=False)] == [other.id]
    with pytest.raises(ValueError):
        await store.create_api_key("  ")


async def test_sync_key_helpers_for_the_cli(db_url: str) -> None:
    info, plaintext = await asyncio.to_thread(create_api_key_sync, db_url, "ops")
    assert await asyncio.to_thread(revoke_api_key_sync, db_url, info.prefix) is True
    async with await Store.open(db_url, migrate=False) as store:
        assert await store.authenticate(plaintext) is None


# -- learners and ownership ---------------------------------------------------------------


async def test_learners_validation_and_phone_lookup(store: Store) -> None:
    key, _ = await store.create_api_key("a")
    eva = await store.create_learner(key.id, "Eva", "cs", "b1", ["cars", " "], "+420777000111")
    assert (eva.cefr_level, eva.interests, eva.target_language) == ("B1", ("cars",), "cs")
    assert await store.find_learner_by_phone("+420777000111") == eva
    assert await store.find_learner_by_phone("+1555") is None
    with pytest.raises(ConflictError):
        await store.create_learner(key.id, "Jan", "de", phone="+420777000111")
    with pytest.raises(ValueError):
        await store.create_learner(key.id, "Jan", "fr")
    with pytest.raises(ValueError):
        await store.create_learner(key.id, "Jan", "de", cefr_level="D1")
    with pytest.raises(NotFoundError):
        await store.create_learner("no-such-key", "Jan", "de")
    assert await store.list_learners(key.id) == [eva]


async def test_a_key_sees_only_its_own_learners_and_sessions(store: Store) -> None:
    a, _ = await store.create_api_key("a")
    b, _ = await store.create_api_key("b")
    learner = await store.create_learner(a.id, "Eva", "de")
    session, _ = await new_session(store, a.id, learner.id)

    assert await store.get_learner(learner.id, a.id) == learner
    assert await store.get_learner(learner.id, b.id) is None
    assert await store.get_session(session.id, a.id) == session
    assert await store.get_session(session.id, b.id) is None
    assert await store.list_sessions(b.id) == ([], 0)
    assert await store.list_sessions(b.id, learner_id=learner.id) == ([], 0)
    assert await store.list_learners(b.id) == []
    with pytest.raises(NotFoundError):
        await store.create_session(learner.id, b.id, "de_tutor", "local", "webrtc")


# -- sessions -----------------------------------------------------------------------------


async def test_session_status_transitions_and_terminal_states(store: Store) -> None:
    s, _ = await new_session(store)
    assert (s.status, s.ready_at, s.ended_at) == ("starting", None, None)
    assert await store.count_active_sessions() == 1

    assert await store.set_session_status(s.id, "ready") is True
    ready = await store.get_session(s.id)
    assert ready is not None and ready.ready_at is not None and ready.ended_at is None
    assert await store.set_session_status(s.id, "active") is True
    active = await store.get_session(s.id)
    assert active is not None and active.status == "active"
    assert active.ready_at == ready.ready_at  # set once
    assert await store.set_session_status(s.id, "ended", "hangup") is True
    ended = await store.get_session(s.id)
    assert ended is not None and ended.terminal and ended.end_reason == "hangup"
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at
    assert ended.ended_at.tzinfo is UTC

    # Terminal: later changes are ignored.
    assert await store.set_session_status(s.id, "active") is False
    assert await store.set_session_status(s.id, "failed", "late error") is False
    assert await store.get_session(s.id) == ended
    assert await store.count_active_sessions() == 0

    f, _ = await new_session(store)
    assert await store.set_session_status(f.id, "failed", "llm unreachable") is True
    assert await store.set_session_status(f.id, "ended") is False
    failed = await store.get_session(f.id)
    assert failed is not None and failed.status == "failed" and failed.ready_at is None

    with pytest.raises(ValueError):
        await store.set_session_status(s.id, "paused")
    with pytest.raises(NotFoundError):
        await store.set_session_status("no-such-session", "ended")


async def test_browser_token_is_per_session(store: Store) -> None:
    s1, t1 = await new_session(store)
    s2, t2 = await new_session(store)
    assert await store.check_session_token(s1.id, t1) is True
    assert await store.check_session_token(s2.id, t2) is True
    assert await store.check_session_token(s1.id, t2) is False
    assert await store.check_session_token(s1.id, "") is False
    assert await store.check_session_token("no-such-session", t1) is False


async def test_list_sessions_filters_paginates_and_counts(store: Store) -> None:
    key, _ = await store.create_api_key("k")
    l1 = await store.create_learner(key.id, "Eva", "de")
    l2 = await store.create_learner(key.id, "Jan", "cs")
    created = [(await new_session(store, key.id, l1.id))[0].id for _ in range(5)]
    created += [(await new_session(store, key.id, l2.id))[0].id for _ in range(2)]
    for sid in (created[0], created[2], created[5]):
        await store.set_session_status(sid, "ended")

    everything, total = await store.list_sessions(key.id, limit=1000)
    assert total == 7 and [s.id for s in everything] == created[::-1]  # newest first
    pages = [await store.list_sessions(key.id, limit=3, offset=o) for o in (0, 3, 6)]
    assert [len(p) for p, _ in pages] == [3, 3, 1] and {t for _, t in pages} == {7}
    assert [s.id for p, _ in pages for s in p] == created[::-1]
    assert await store.list_sessions(key.id, offset=7) == ([], 7)

    only_l2, n = await store.list_sessions(key.id, learner_id=l2.id)
    assert n == 2 and {s.learner_id for s in only_l2} == {l2.id}
    ended, n = await store.list_sessions(key.id, status="ended")
    assert n == 3 and {s.id for s in ended} == {created[0], created[2], created[5]}
    l1_live, n = await store.list_sessions(key.id, learner_id=l1.id, status="starting", limit=2)
    assert n == 3 and len(l1_live) == 2
    with pytest.raises(ValueError):
        await store.list_sessions(key.id, limit=0)


# -- turns --------------------------------------------------------------------------------


async def test_turns_are_readable_at_once_and_survive_a_crash(db_url: str) -> None:
    store = await Store.open(db_url)
    session, _ = await new_session(store)
    await store.set_session_status(session.id, "active")
    reader = await Store.open(db_url, migrate=False)  # another process, in effect
    try:
        first = TurnRecord(index=0, role="learner", text="Guten Tag", start_ms=100, end_ms=900)
        assert await store.add_turn(session.id, first) is True
        assert [t.to_dict() for t in await reader.list_turns(session.id)] == [first.to_dict()]
        second = TurnRecord(
            index=1,
            role="bot",
            text="Hallo!",
            start_ms=1500,
            end_ms=2500,
            latency_ms=600,
            ttfb_ms={"stt": 90, "llm": 250, "tts": 120},
            interrupted=True,
        )
        assert await store.add_turn(session.id, second.to_dict()) is True
        both = [first.to_dict(), second.to_dict()]
        assert [t.to_dict() for t in await reader.list_turns(session.id)] == both
    finally:
        await reader.close()
        await store.close()  # "crash": the session never ended

    reopened = await Store.open(db_url)
    try:
        turns = await reopened.list_turns(session.id)
        assert [t.text for t in turns] == ["Guten Tag", "Hallo!"]
        assert turns[1].ttfb_ms == {"stt": 90, "llm": 250, "tts": 120} and turns[1].interrupted
        assert turns[0].created_at.tzinfo is UTC
        after = await reopened.get_session(session.id)
        assert after is not None and after.status == "active" and after.ended_at is None
        assert await reopened.fail_live_sessions() == 1  # the startup clean-up
        cleaned = await reopened.get_session(session.id)
        assert cleaned is not None and cleaned.status == "failed"
    finally:
        await reopened.close()


async def test_add_turn_is_idempotent_and_validates(store: Store) -> None:
    s, _ = await new_session(store)
    assert await store.add_turn(s.id, bot(0, None, "first")) is True
    assert await store.add_turn(s.id, bot(0, None, "retry")) is False
    assert [t.text for t in await store.list_turns(s.id)] == ["first"]
    with pytest.raises(NotFoundError):
        await store.add_turn("no-such-session", bot(0, None))
    with pytest.raises(ValueError):
        await store.add_turn(s.id, {"index": 1, "role": "narrator", "text": "x"})
    with pytest.raises(ValueError):
        await store.add_turn(s.id, {"index": -1, "role": "bot", "text": "x"})
    with pytest.raises(ValueError):
        await store.add_turn(s.id, {"role": "bot", "text": "x"})


async def test_concurrent_add_turn_loses_no_rows(store: Store) -> None:
    s, _ = await new_session(store)
    turns = [bot(i, 400 + i, f"turn {i}") for i in range(20)]
    inserted = await asyncio.gather(*(store.add_turn(s.id, t) for t in turns))
    assert inserted == [True] * 20
    again = await asyncio.gather(*(store.add_turn(s.id, t) for t in turns))  # all retries
    assert again == [False] * 20
    stored = await store.list_turns(s.id)
    assert [t.index for t in stored] == list(range(20))
    assert [t.text for t in stored] == [f"turn {i}" for i in range(20)]


async def test_latency_summary_on_known_latencies(store: Store) -> None:
    s, _ = await new_session(store)
    empty = {"turns": 0, "median_ms": None, "p95_ms": None, "max_ms": None}
    assert await store.latency_summary(s.id) == empty
    await store.add_turn(s.id, bot(0, None, "Greeting"))  # no latency: not counted
    latencies = [700, 400, 2000, 600, 500]
    for i, lat in enumerate(latencies):
        await store.add_turn(s.id, {"index": 1 + 2 * i, "role": "learner", "text": "Ja."})
        await store.add_turn(s.id, bot(2 + 2 * i, lat))
    summary = await store.latency_summary(s.id)
    # sorted 400 500 600 700 2000: p95 (inclusive) sits at 0.95 * 4 = 3.8 → 700 + 0.8 * 1300
    assert summary == {"turns": 5, "median_ms": 600.0, "p95_ms": 1740.0, "max_ms": 2000}


async def test_usage_events(store: Store) -> None:
    s, _ = await new_session(store)
    e = await store.add_usage_event(s.id, "tts", "local", "piper-de", "characters", 120)
    await store.add_usage_event(s.id, "tts", "local", "piper-de", "characters", 30)
    await store.add_usage_event(s.id, "llm", "local", "qwen2.5", "prompt_tokens", 812)
    await store.add_usage_event(s.id, "stt", "local", "whisper", "audio_seconds", 4.25)
    assert e.quantity == 120.0 and e.created_at.tzinfo is UTC
    metrics = [u.metric for u in await store.list_usage_events(s.id)]
    assert metrics == ["characters", "characters", "prompt_tokens", "audio_seconds"]
    assert await store.usage_totals(s.id) == {
        ("tts", "local", "piper-de", "characters"): 150.0,
        ("llm", "local", "qwen2.5", "prompt_tokens"): 812.0,
        ("stt", "local", "whisper", "audio_seconds"): 4.25,
    }
    with pytest.raises(ValueError):
        await store.add_usage_event(s.id, "vad", "local", "silero", "frames", 1)
    with pytest.raises(ValueError):
        await store.add_usage_event(s.id, "tts", "local", "piper", "characters", float("nan"))
    with pytest.raises(NotFoundError):
        await store.add_usage_event("no-such-session", "tts", "local", "piper", "characters", 1)
