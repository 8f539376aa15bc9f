"""Daily sessions against a loopback fake of Daily's REST API.

Covered: the room and tokens, the API's answers and failures, the spec handed to the session
process, and the room's deletion when the session ends.

The bot's ``DailyTransport`` cannot join a room offline (daily-python talks to Daily's
servers), so the worker side is checked by construction only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from loguru import logger

import transports.daily as daily_mod
from api.metrics import Metrics
from api.runtime import default_runtime
from config.settings import Settings
from contracts.session_spec import SessionSpec
from runtime.protocol import CapacityError
from runtime.supervisor import SessionSupervisor
from server import create_app
from store import Store
from testkit.api_support import V1, Api, assert_error, make_api, running
from testkit.providers.base import WireFault
from testkit.providers.daily_fake import DailyFake
from transports.daily import (
    ROOM_LIFETIME_S,
    DailyError,
    DailyRoom,
    create_session_room,
    daily_bot_transport,
    release_session_room,
)

KEY = "dk-test-secret-0123456789"
BODY = {"persona": "german-tutor", "tier": "local", "transport": "daily"}


@pytest.fixture
async def daily(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DailyFake]:
    monkeypatch.setenv("DAILY_API_KEY", KEY)
    async with DailyFake(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def dapi(daily: DailyFake, sqlite_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async for a in make_api(sqlite_url, tmp_path, daily_api_url=daily.api_url):
        yield a


@pytest.fixture
def logs() -> Any:
    records: list[str] = []
    handler = logger.add(lambda m: records.append(str(m)), level="DEBUG")
    yield records
    logger.remove(handler)


async def create(api: Api, learner: str | None = None) -> Any:
    body = {**BODY, "learner_id": learner or await api.learner()}
    return await api.client.post(f"{V1}/sessions", json=body, headers=api.a)


async def wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- creating a daily session ---------------------------------------------------------------


async def test_daily_session_gets_a_private_room_a_learner_token_and_an_owner_bot_token(
    dapi: Api, daily: DailyFake, logs: list[str]
) -> None:
    r = await create(dapi)
    assert r.status_code == 201, r.text
    s = r.json()
    sid, connect = s["session_id"], s["connect"]
    assert s["status"] == "ready" and connect["offer_url"] is None
    (room,) = daily.rooms.values()
    assert room["name"] == f"vt-{sid}" and connect["room_url"] == room["url"]
    (created,) = daily.served("rooms")
    assert created.headers["authorization"] == f"Bearer {KEY}"
    assert created.body["privacy"] == "private" and created.body["name"] == f"vt-{sid}"
    props = created.body["properties"]
    assert props["max_participants"] == 2 and props["eject_at_room_exp"] is True
    assert abs(props["exp"] - (time.time() + ROOM_LIFETIME_S)) < 120
    # Two tokens for this room, expiring with it: the learner's (returned) and the bot's (owner).
    assert len(daily.served("tokens")) == 2 and len(daily.tokens) == 2
    learner_props = daily.tokens[connect["token"]]
    assert learner_props["is_owner"] is False
    (bot_token,) = [t for t in daily.tokens if t != connect["token"]]
    bot_props = daily.tokens[bot_token]
    assert bot_props["is_owner"] is True and bot_props["user_name"] == "Lena"
    for p in (learner_props, bot_props):
        assert p["room_name"] == room["name"] and p["eject_at_token_exp"] is True
        assert props["exp"] - 120 < p["exp"] <= props["exp"]
    # The session process gets the room and the bot's token, never the API key.
    kind, spec = dapi.sup.calls[-1]
    assert kind == "spawn" and spec.transport == "daily"
    assert (spec.daily_room_url, spec.daily_token) == (room["url"], bot_token)
    assert KEY not in json.dumps(spec.to_json())
    # GET shows the transport; the key is in no response and no log line.
    got = await dapi.client.get(f"{V1}/sessions/{sid}", headers=dapi.a)
    assert got.json()["transport"] == "daily" and got.json()["status"] == "ready"
    assert KEY not in r.text + got.text and KEY not in "\n".join(logs)
    assert bot_token not in r.text


async def test_daily_without_key_answers_503_naming_it(
    dapi: Api, daily: DailyFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAILY_API_KEY")
    r = await create(dapi)
    assert "DAILY_API_KEY" in assert_error(r, 503, "transport_unavailable")["message"]
    assert daily.requests == [] and (await dapi.store.list_sessions(dapi.key_a_id))[1] == 0


@pytest.mark.parametrize(
    ("route", "fault", "why"),
    [
        (
            "rooms",
            WireFault.HTTP_5XX,
            "could not create the Daily room: Unable to create room (status: 500)",
        ),
        ("rooms", WireFault.HANG, "could not create the Daily room: no answer within 1 s"),
        (
            "rooms",
            WireFault.GARBAGE,
            "could not create the Daily room: Daily's answer was not JSON",
        ),
        (
            "tokens",
            WireFault.HTTP_5XX,
            "bot's Daily meeting token: Failed to create meeting token (status: 500)",
        ),
        ("tokens", WireFault.HANG, "bot's Daily meeting token: no answer within 1 s"),
        ("tokens", WireFault.DISCONNECT, "bot's Daily meeting token: connection to Daily failed"),
    ],
)
async def test_daily_failure_answers_503_fails_the_session_and_leaks_no_room(
    dapi: Api,
    daily: DailyFake,
    monkeypatch: pytest.MonkeyPatch,
    logs: list[str],
    route: str,
    fault: WireFault,
    why: str,
) -> None:
    monkeypatch.setattr(daily_mod, "REQUEST_TIMEOUT_S", 1.0)
    daily.hang_s = 5.0
    daily.inject(route, fault)
    learner = await dapi.learner()
    r = await create(dapi, learner)
    message = assert_error(r, 503, "transport_unavailable")["message"]
    assert message.startswith("Daily is unavailable: ") and why in message, message
    assert KEY not in r.text
    # Nothing left behind: a room created before the failure was deleted again.
    assert daily.rooms == {}
    if route == "tokens":
        assert len(daily.deleted) == 1
    (info,), _ = await dapi.store.list_sessions(dapi.key_a_id)
    assert info.status == "failed" and (info.end_reason or "").startswith("failed to start")
    assert not [c for c in dapi.sup.calls if c[0] == "spawn"]
    assert dapi.metric('voxtutor_errors_total{kind="daily"} ') == 1
    assert KEY not in "\n".join(logs)
    # The server is fine: health, and the next daily session works.
    assert (await dapi.client.get("/healthz")).status_code == 200
    again = await create(dapi, learner)
    assert again.status_code == 201, again.text
    assert list(daily.rooms) == [f"vt-{again.json()['session_id']}"]


async def test_daily_wrong_key_is_refused_by_daily_and_answers_503(
    dapi: Api, daily: DailyFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_API_KEY", "dk-wrong-key-987654321")
    r = await create(dapi)
    message = assert_error(r, 503, "transport_unavailable")["message"]
    assert "401" in message and "dk-wrong-key-987654321" not in r.text
    assert daily.rooms == {}


async def test_failed_spawn_deletes_the_room(dapi: Api, daily: DailyFake) -> None:
    dapi.sup.spawn_error = RuntimeError("session process failed to start: exit status 1")
    r = await create(dapi)
    assert_error(r, 503, "session_start_failed")
    assert daily.rooms == {} and len(daily.deleted) == 1
    dapi.sup.spawn_error = CapacityError("full", retry_after_s=11)  # a race past the check
    r = await create(dapi)
    assert_error(r, 429, "at_capacity")
    assert daily.rooms == {} and len(daily.deleted) == 2


async def test_webrtc_sessions_do_not_touch_daily(dapi: Api, daily: DailyFake) -> None:
    s = await dapi.session()
    assert s["connect"]["offer_url"] and s["connect"]["room_url"] is None
    assert daily.requests == []


# -- the session's end deletes the room (real supervisor, stub session process) ---------------

STUB = """\
import json, os, sys
spec = json.loads(sys.stdin.readline())["spec"]  # the server writes it first
with open(os.path.join({out!r}, spec["session_id"] + ".json"), "w") as f:
    json.dump(spec, f)
print(json.dumps({{"event": "ready"}}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req.get("op") == "end":
        print(json.dumps({{"event": "reply", "id": req["id"], "ok": True, "data": {{}}}}),
              flush=True)
        print(json.dumps({{"event": "ended", "reason": req["reason"]}}), flush=True)
        break
"""


@asynccontextmanager
async def stub_app(daily: DailyFake, tmp_path: Path) -> AsyncIterator[tuple[Api, Path]]:
    """The API with a real :class:`SessionSupervisor` whose "worker" is a tiny script."""
    out = tmp_path / "specs"
    out.mkdir()
    script = tmp_path / "stub_worker.py"
    script.write_text(f"#!{sys.executable}\n" + STUB.format(out=str(out)))
    script.chmod(0o755)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    sup = SessionSupervisor(
        store,
        max_sessions=2,
        log_dir=tmp_path / "logs",
        python=str(script),
        on_ended=partial(release_session_room, api_url=daily.api_url),
    )
    info, key = await store.create_api_key("A")
    cfg = Settings(home=tmp_path, daily_api_url=daily.api_url)
    app = create_app(cfg, store=store, supervisor=sup, llm_base_url="http://127.0.0.1:9/v1")
    try:
        async with running(app) as client:
            yield Api(app, client, store, cast(Any, sup), key, key, info.id), out
    finally:
        await store.close()


async def test_ending_a_daily_session_deletes_its_room(daily: DailyFake, tmp_path: Path) -> None:
    async with stub_app(daily, tmp_path) as (api, out):
        r = await create(api)
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        name = f"vt-{sid}"
        # The process itself was handed the room and the bot's (owner) token.
        spec = json.loads((out / f"{sid}.json").read_text())
        assert spec["daily_room_url"] == daily.rooms[name]["url"]
        assert daily.tokens[spec["daily_token"]]["is_owner"] is True
        assert KEY not in json.dumps(spec)
        assert daily.deleted == []
        ended = await api.client.delete(f"{V1}/sessions/{sid}", headers=api.a)
        assert ended.status_code == 202 and ended.json() == {"status": "ending"}
        await wait_for(lambda: daily.deleted == [name])
        assert daily.rooms == {}


async def test_a_crashed_daily_session_still_has_its_room_deleted(
    daily: DailyFake, tmp_path: Path
) -> None:
    async with stub_app(daily, tmp_path) as (api, _out):
        r = await create(api)
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        pid = cast(SessionSupervisor, api.sup).pid(sid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: daily.deleted == [f"vt-{sid}"])
        info = await api.store.get_session(sid)
        assert info is not None and info.status == "failed"


def _room_spec(session_id: str, room: DailyRoom) -> SessionSpec:
    """A ``daily`` session's spec bound to ``room``."""
    return SessionSpec(
        session_id=session_id,
        persona="german-tutor",
        tier="local",
        transport="daily",
        llm_base_url="http://127.0.0.1:9/v1",
        daily_room_url=room.url,
        daily_token=room.bot_token,
    )


async def test_room_deletion_failure_is_logged_never_raised(
    daily: DailyFake, logs: list[str]
) -> None:
    room = await create_session_room("s-1", api_url=daily.api_url, api_key=KEY, bot_name="Lena")
    spec = _room_spec("s-1", room)
    daily.inject("delete_room", WireFault.HTTP_5XX)
    assert await release_session_room(spec, api_url=daily.api_url) is False
    assert "vt-s-1" in daily.rooms
    assert any("not deleted" in line and "500" in line for line in logs)
    assert await release_session_room(spec, api_url=daily.api_url) is True
    assert daily.rooms == {}
    # Already gone (Daily answers 404) counts as deleted.
    assert await release_session_room(spec, api_url=daily.api_url) is True
    assert KEY not in "\n".join(logs)


async def test_daily_error_messages_mask_the_key() -> None:
    error = daily_mod._failure("create the Daily room", Exception(f"echo {KEY} back"), KEY)
    assert isinstance(error, DailyError) and KEY not in str(error) and "***" in str(error)


async def test_serve_runtime_deletes_rooms_of_ended_sessions(
    daily: DailyFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @asynccontextmanager
    async def fake_llm(_settings: Settings) -> AsyncIterator[str]:
        yield "http://127.0.0.1:9/v1"

    monkeypatch.setattr("pipelines.local.local_llm", fake_llm)
    monkeypatch.setattr(SessionSupervisor, "start_spare", lambda self, kind=None: None)
    room = await create_session_room("s-2", api_url=daily.api_url, api_key=KEY, bot_name="Lena")
    spec = _room_spec("s-2", room)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    settings = Settings(home=tmp_path, daily_api_url=daily.api_url)
    try:
        async with default_runtime(settings, store, Metrics()) as rt:
            sup = rt.supervisor
            assert isinstance(sup, SessionSupervisor) and sup.on_ended is not None
            await sup.on_ended(spec)
            await sup.shutdown()
    finally:
        await store.close()
    assert daily.deleted == ["vt-s-2"]


# -- the bot's side ---------------------------------------------------------------------------


def test_bot_transport_joins_the_specs_room_with_the_bot_token() -> None:
    from pipecat.transports.daily.transport import DailyTransport

    spec = SessionSpec(
        session_id="s-3",
        persona="german-tutor",
        tier="local",
        transport="daily",
        llm_base_url="http://127.0.0.1:9/v1",
        daily_room_url="https://voxtutor-fake.daily.co/vt-s-3",
        daily_token="bot-token",
    )
    transport = daily_bot_transport(spec, "Lena", "http://127.0.0.1:9/v1")
    assert isinstance(transport, DailyTransport)
    client = transport._client
    assert (client.room_url, client._token, client._bot_name) == (
        "https://voxtutor-fake.daily.co/vt-s-3",
        "bot-token",
        "Lena",
    )
    params = transport._params
    assert params.audio_in_enabled and params.audio_out_enabled
    assert params.api_url == "http://127.0.0.1:9/v1" and params.api_key == ""
    with pytest.raises(ValueError, match="daily_room_url"):
        daily_bot_transport(
            SessionSpec(**{**spec.to_json(), "daily_token": None}), "Lena", "http://x/v1"
        )
