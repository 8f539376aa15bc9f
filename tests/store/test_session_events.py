"""Session events (provider switches) on SQLite and PostgreSQL, and the 0002 migration."""

from __future__ import annotations

from datetime import UTC

import pytest
from alembic import command
from sqlalchemy import inspect, text

from contracts.events import PROVIDER_SWITCH
from store import NotFoundError, Store
from store.db import alembic_config

SWITCH = {"role": "tts", "from": "cartesia", "to": "deepgram", "reason": "timeout"}


async def new_session(store: Store) -> str:
    key, _ = await store.create_api_key("k")
    learner = await store.create_learner(key.id, "Eva", "de")
    session, _ = await store.create_session(learner.id, key.id, "de_tutor", "dpe_live", "webrtc")
    return session.id


async def test_events_come_back_in_order_with_their_data(store: Store) -> None:
    sid = await new_session(store)
    first = await store.add_session_event(sid, PROVIDER_SWITCH, SWITCH)
    back = {**SWITCH, "from": "deepgram", "to": "cartesia", "reason": "recovered"}
    await store.add_session_event(sid, PROVIDER_SWITCH, back)
    await store.add_session_event(sid, "note", {"n": 1.5, "nested": {"ok": [1, None]}})

    events = await store.list_session_events(sid)
    assert [e.kind for e in events] == [PROVIDER_SWITCH, PROVIDER_SWITCH, "note"]
    assert [e.data for e in events] == [SWITCH, back, {"n": 1.5, "nested": {"ok": [1, None]}}]
    assert events[0] == first and first.session_id == sid
    assert all(e.created_at.tzinfo is UTC for e in events)
    assert [e.data for e in await store.list_session_events(sid, PROVIDER_SWITCH)] == [
        SWITCH,
        back,
    ]
    assert await store.list_session_events("no-such-session") == []


async def test_events_of_two_sessions_stay_apart_and_go_with_their_session(store: Store) -> None:
    one, two = await new_session(store), await new_session(store)
    await store.add_session_event(one, PROVIDER_SWITCH, SWITCH)
    await store.add_session_event(two, PROVIDER_SWITCH, {**SWITCH, "role": "llm"})
    assert [e.data["role"] for e in await store.list_session_events(two)] == ["llm"]
    async with store.engine.begin() as conn:
        await conn.execute(text("DELETE FROM learners"))  # cascades to sessions and events
        left = (await conn.execute(text("SELECT count(*) FROM session_events"))).scalar()
    assert left == 0


@pytest.mark.parametrize(
    "kind, data",
    [
        ("", {}),
        ("   ", {}),
        ("k" * 51, {}),
        (PROVIDER_SWITCH, {"bad": float("nan")}),
        (PROVIDER_SWITCH, {"bad": object()}),
        (PROVIDER_SWITCH, {1: "not a string key"}),
        (PROVIDER_SWITCH, ["not", "a", "mapping"]),
    ],
)
async def test_bad_events_are_refused_and_nothing_is_stored(store: Store, kind, data) -> None:
    sid = await new_session(store)
    with pytest.raises(ValueError):
        await store.add_session_event(sid, kind, data)
    assert await store.list_session_events(sid) == []


async def test_an_event_of_an_unknown_session_is_refused(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.add_session_event("00000000-0000-0000-0000-000000000000", PROVIDER_SWITCH)


async def test_migration_0002_goes_down_and_up_again(db_url: str) -> None:
    store = await Store.open(db_url)
    sid = await new_session(store)
    await store.close()
    store = await Store.open(db_url, migrate=False)
    async with store.engine.begin() as conn:
        await conn.run_sync(_downgrade, "0001")
    async with store.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert "session_events" not in tables and "sessions" in tables
    await store.close()
    store = await Store.open(db_url)  # upgrades back to head
    await store.add_session_event(sid, PROVIDER_SWITCH, SWITCH)
    assert len(await store.list_session_events(sid)) == 1
    await store.close()


def _downgrade(connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)
