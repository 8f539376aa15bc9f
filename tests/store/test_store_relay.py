"""A session process's writes reach the store through the server (runtime.store_relay).

The "session process" here is a small script run by a real :class:`SessionSupervisor`: it
writes through the same :class:`StoreRelay` and ``provider_switch_recorder`` the worker
uses, tries writes it must not make, then dies without ending. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from loguru import logger

from contracts.events import PROVIDER_SWITCH
from contracts.session_spec import SessionSpec
from runtime.store_relay import StoreRelay
from runtime.supervisor import SessionSupervisor
from store import Store

ROOT = Path(__file__).resolve().parents[1]

STUB = """
import asyncio, json, os, sys
sys.path.insert(0, {root!r})
from runtime.store_relay import StoreRelay
from runtime.session_process import provider_switch_recorder

spec = json.loads(sys.stdin.readline())["spec"]  # the server writes it first
sid, other = spec["session_id"], {other!r}


def send(message):
    print(json.dumps(message), flush=True)


async def main():
    store = StoreRelay(send)
    send({{"event": "ready"}})
    await store.add_turn(sid, {{"index": 0, "role": "bot", "text": "Guten Tag!", "end_ms": 900}})
    await store.set_session_status(sid, "active")
    await provider_switch_recorder(store, sid)("tts", "cartesia", "deepgram", "timeout")
    await store.add_usage_event(sid, "tts", "cartesia", "sonic-3", "characters", 10.0)
    await store.add_turn(other, {{"index": 0, "role": "bot", "text": "not mine"}})
    send({{"event": "store", "call": "revoke_api_key", "args": [sid]}})
    send({{"event": "store", "call": "add_turn", "args": "not a list"}})
    await store.add_turn(sid, {{"index": 1, "role": "learner", "text": "Hallo", "end_ms": 2100}})
    os._exit(3)  # dies without "ended": a crash


asyncio.run(main())
"""


async def test_writes_are_stored_in_order_and_survive_the_crash(
    db_url: str, tmp_path: Path
) -> None:
    store = await Store.open(db_url)
    try:
        key, _ = await store.create_api_key("k")
        learner = await store.create_learner(key.id, "Eva", "de")
        mine, _ = await store.create_session(learner.id, key.id, "de", "dpe_live", "webrtc")
        other, _ = await store.create_session(learner.id, key.id, "de", "dpe_live", "webrtc")
        script = tmp_path / "stub_worker.py"
        script.write_text(f"#!{sys.executable}\n" + STUB.format(root=str(ROOT), other=other.id))
        script.chmod(0o755)
        turns_seen: list[tuple[str, dict[str, object]]] = []
        sup = SessionSupervisor(
            store,
            max_sessions=2,
            log_dir=tmp_path / "logs",
            python=str(script),
            on_turn=lambda sid, turn: turns_seen.append((sid, turn)),
        )
        spec = SessionSpec(
            session_id=mine.id,
            persona="german-tutor",
            tier="dpe_live",
            transport="webrtc",
            llm_base_url="http://127.0.0.1:9/v1",
        )
        refused: list[str] = []
        sink = logger.add(lambda m: refused.append(m), filter=lambda r: "refused" in r["message"])
        await sup.spawn(spec)
        for _ in range(200):
            if not sup.is_running(mine.id):
                break
            await asyncio.sleep(0.05)
        assert not sup.is_running(mine.id)

        turns = await store.list_turns(mine.id)
        assert [(t.index, t.role, t.text) for t in turns] == [
            (0, "bot", "Guten Tag!"),
            (1, "learner", "Hallo"),  # written just before the crash
        ]
        events = await store.list_session_events(mine.id)
        assert [(e.kind, e.data) for e in events] == [
            (PROVIDER_SWITCH, {"role": "tts", "from": "cartesia", "to": "deepgram",
                               "reason": "timeout"}),
        ]  # fmt: skip
        usage = await store.list_usage_events(mine.id)
        assert [(u.service, u.provider, u.metric, u.quantity) for u in usage] == [
            ("tts", "cartesia", "characters", 10.0)
        ]
        info = await store.get_session(mine.id)
        assert info.status == "failed" and "died" in (info.end_reason or "")
        # Another session's rows, other store calls and malformed lines are refused.
        logger.remove(sink)
        assert await store.list_turns(other.id) == []
        assert len(refused) == 3, refused
        # Metrics hear each stored turn.
        assert [(sid, t["index"]) for sid, t in turns_seen] == [(mine.id, 0), (mine.id, 1)]
        await sup.shutdown()
    finally:
        await store.close()


async def test_relay_lines_carry_the_store_calls_arguments() -> None:
    lines: list[dict[str, object]] = []
    relay = StoreRelay(lines.append)
    await relay.add_session_event("s", "note")
    await relay.set_session_status("s", "ended", "learner left")
    assert lines == [
        {"event": "store", "call": "add_session_event", "args": ["s", "note", {}]},
        {"event": "store", "call": "set_session_status", "args": ["s", "ended", "learner left"]},
    ]
