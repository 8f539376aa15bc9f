"""Migration 0006: unproved numbers are cleared, guests keep their caller id.

The rebuild of ``learners`` (SQLite batch mode) must keep every session that references it.
"""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from store import Store
from store.db import alembic_config


def _to(connection, revision: str, up: bool) -> None:  # type: ignore[no-untyped-def]
    config = alembic_config()
    config.attributes["connection"] = connection
    (command.upgrade if up else command.downgrade)(config, revision)


async def test_unproved_numbers_are_cleared_and_guests_keep_theirs(db_url: str) -> None:
    store = await Store.open(db_url)
    app, _ = await store.create_api_key("app")
    guests, _ = await store.create_api_key("phone-guests")
    learner = await store.create_learner(app.id, "Eva", "de")
    guest = await store.create_learner(guests.id, "Phone guest", "en")
    session, _ = await store.create_session(learner.id, app.id, "german-tutor", "local", "webrtc")
    await store.add_turn(session.id, {"index": 0, "role": "bot", "text": "Hallo!"})
    await store.close()
    store = await Store.open(db_url, migrate=False)
    async with store.engine.begin() as conn:
        await conn.run_sync(_to, "0005", False)
    async with store.engine.begin() as conn:
        # Before 0006 anyone could type a number onto a learner.
        await conn.execute(
            text("UPDATE learners SET phone = :p WHERE id = :i"),
            {"p": "+420601000111", "i": learner.id},
        )
        await conn.execute(
            text("UPDATE learners SET phone = :p WHERE id = :i"),
            {"p": "+15550002000", "i": guest.id},
        )
    async with store.engine.begin() as conn:
        await conn.run_sync(_to, "0006", True)
    await store.close()
    store = await Store.open(db_url)
    try:
        assert await store.find_learner_by_phone("+420601000111") is None
        found = await store.find_learner_by_phone("+15550002000")
        assert found is not None and found.id == guest.id
        got = await store.get_learner(learner.id)
        assert got is not None and got.phone is None
        # Down to 0005 and up again lost nothing that references learners.
        assert [t.text for t in await store.list_turns(session.id)] == ["Hallo!"]
    finally:
        await store.close()
