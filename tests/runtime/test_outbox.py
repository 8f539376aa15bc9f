"""Session writes survive a database outage: queued on disk, applied once it is back.

PostgreSQL is reached through a loopback proxy the test cuts (every connection dropped, new
ones refused: what a client sees when the server stops) and restores; the server that
queued the writes is "restarted" in between (a new :class:`Outbox` on the same file).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from runtime.outbox import Outbox, store_writes
from store import Store
from testkit.tcp_proxy import TcpProxy


def turn(index: int, text: str) -> dict[str, object]:
    return {"index": index, "role": "learner" if index % 2 else "bot", "text": text}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_turns_and_usage_written_while_postgres_is_down_appear_once_it_is_back(
    db_url: str, tmp_path: Path
) -> None:
    direct = await Store.open(db_url)
    key, _ = await direct.create_api_key("k")
    learner = await direct.create_learner(key.id, "Eva", "de")
    session, _ = await direct.create_session(learner.id, key.id, "german-tutor", "local", "webrtc")
    sid = session.id
    url = make_url(db_url)
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = await Store.open(
            url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
            migrate=False,
        )
        box = Outbox(tmp_path / "outbox.sqlite3", store_writes(proxied), retry_s=0.2)
        assert await box.write("add_turn", [sid, turn(0, "Hallo!")], {}) is True

        await proxy.cut()
        usage = [sid, "tts", "local", "pico", "characters", 42]
        writes = [
            ("add_turn", [sid, turn(1, "Ich fahre mit der Bus.")], {}),
            ("add_usage_event", usage, {"write_id": "w-1"}),
            ("add_turn", [sid, turn(2, "Mit dem Bus!")], {}),
            ("add_turn", [sid, turn(2, "Mit dem Bus!")], {}),  # a retry from the process
            ("set_session_status", [sid, "active"], {}),
        ]
        for call, args, kwargs in writes:
            assert await box.write(call, args, kwargs) is False  # queued, not lost
        assert box.pending == len(writes)
        await box.close()  # the server stops with the database still down

        box = Outbox(tmp_path / "outbox.sqlite3", store_writes(proxied), retry_s=0.2)
        assert box.pending == len(writes)  # on disk
        box.start()
        assert await box.flush(1.0) is False  # still down: kept, retried
        await proxy.restore()
        assert await box.flush(30.0) is True
        # A usage write whose answer was lost, retried: stored once.
        assert await box.write("add_usage_event", usage, {"write_id": "w-1"}) is True
        await box.close()
        await proxied.close()

    stored = await direct.list_turns(sid)
    assert [(t.index, t.text) for t in stored] == [
        (0, "Hallo!"),
        (1, "Ich fahre mit der Bus."),
        (2, "Mit dem Bus!"),
    ]
    rows = await direct.list_usage_events(sid)
    assert [(u.service, u.quantity) for u in rows] == [("tts", 42.0)]
    info = await direct.get_session(sid)
    assert info is not None and info.status == "active"
    await direct.close()


async def test_a_bad_write_is_refused_at_once_and_not_queued(
    tmp_path: Path, sqlite_url: str
) -> None:
    store = await Store.open(sqlite_url)
    box = Outbox(tmp_path / "outbox.sqlite3", store_writes(store), retry_s=0.2)
    with pytest.raises(ValueError):
        await box.write("add_turn", ["no-such-session", {"index": 0, "role": "x"}], {})
    assert box.pending == 0
    await box.close()
    await store.close()
