"""Phone and dial-in state shared by API replicas through NATS KV (real NATS, no fakes).

Each "replica" has its own NATS connection and its own :class:`PhoneCalls`, as two
``voxtutor serve`` processes would; the bucket is a fresh one per test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast
from xml.etree import ElementTree

import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from api.deps import AppContext
from api.phone_calls import NEVER_CONNECTED, PendingStream, PhoneCalls
from api.routes_dialin import AnsweredCalls, _answered
from runtime.cluster import ephemeral
from runtime.cluster.bus import EPHEMERAL_TTL_S, bucket, connect
from runtime.cluster.ephemeral import Ephemeral
from testkit.api_support import Api, make_api
from testkit.phone_support import twilio_form

NATS_URL = "nats://127.0.0.1:4222"
CALL_ID = "v3:call/ID with spaces:1"  # carrier ids may hold characters NATS keys refuse


@dataclass
class Replica:
    nc: Client
    kv: KeyValue

    @property
    def store(self) -> Ephemeral:
        return Ephemeral(self.kv)

    def calls(self, ttl_s: float = 30.0) -> PhoneCalls:
        return PhoneCalls(ttl_s, self.store)


@dataclass
class RecordingSupervisor:
    ended: list[tuple[str, str]] = field(default_factory=list)

    async def end(self, session_id: str, reason: str) -> None:
        self.ended.append((session_id, reason))


def fake_ctx(supervisor: RecordingSupervisor) -> AppContext:
    """All :func:`api.phone_calls.end_session` reads of the app context."""
    return cast(AppContext, SimpleNamespace(supervisor=supervisor))


def stream(session_id: str | None = None, call_id: str = CALL_ID) -> PendingStream:
    sid = session_id or str(uuid.uuid4())
    return PendingStream("twilio", call_id, sid, f"nats:{sid}")


async def eventually(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Replica, Replica]]:
    name = f"test_eph_{uuid.uuid4().hex}"
    nc_a = await connect(NATS_URL, "test-replica-a")
    nc_b = await connect(NATS_URL, "test-replica-b")
    kv_a = await bucket(nc_a.jetstream(), name, EPHEMERAL_TTL_S)
    kv_b = await bucket(nc_b.jetstream(), name, EPHEMERAL_TTL_S)
    try:
        yield Replica(nc_a, kv_a), Replica(nc_b, kv_b)
    finally:
        await nc_a.jetstream().delete_key_value(name)
        await nc_a.close()
        await nc_b.close()


# -- the store ------------------------------------------------------------------------------


def test_keys_are_valid_nats_keys_whatever_the_id() -> None:
    k = ephemeral.key("phone-token", CALL_ID)
    assert k.startswith("phone-token.") and len(k) == len("phone-token.") + 64
    assert k.split(".", 1)[1].isalnum()
    assert ephemeral.key("phone-token", CALL_ID) == k != ephemeral.key("dialin", CALL_ID)
    with pytest.raises(ValueError):
        ephemeral.key("bad.kind", CALL_ID)


async def test_an_expired_entry_reads_as_absent_and_can_be_created_again(replicas) -> None:
    a, b = replicas
    k = ephemeral.key("phone-token", "t1")
    await a.store.put(k, {"x": 1}, ttl_s=0.3)
    assert await b.store.get(k) == {"x": 1}
    assert not await b.store.create(k, {"x": 2}, ttl_s=5)  # still live
    await asyncio.sleep(0.5)
    assert await b.store.get(k) is None
    assert await b.store.take(k) is None
    assert await a.store.get(k) is None
    assert await b.store.create(k, {"x": 3}, ttl_s=5)  # the expired one counts as absent
    assert await a.store.get(k) == {"x": 3}
    assert not await a.store.create(k, {"x": 4}, ttl_s=5)


async def test_take_succeeds_once_across_replicas(replicas) -> None:
    a, b = replicas
    k = ephemeral.key("phone-token", "t2")
    await a.store.put(k, {"n": 7}, ttl_s=5)
    results = await asyncio.gather(*(r.store.take(k) for r in (a, b) * 5))
    assert [r for r in results if r is not None] == [{"n": 7}]
    assert await a.store.get(k) is None


async def test_create_if_absent_has_exactly_one_winner(replicas) -> None:
    a, b = replicas
    k = ephemeral.key("phone-starting", CALL_ID)
    won = await asyncio.gather(*(r.store.create(k, {"by": i}, 5) for i, r in enumerate((a, b) * 4)))
    assert won.count(True) == 1
    await b.store.delete(k)
    assert await a.store.create(k, {"by": "again"}, 5)  # a deleted key can be created again


# -- phone tokens ----------------------------------------------------------------------------


async def test_a_token_issued_on_one_replica_is_claimed_exactly_once_on_another(replicas) -> None:
    a, b = replicas
    sup = RecordingSupervisor()
    on_a, on_b = a.calls(ttl_s=1.0), b.calls(ttl_s=1.0)
    pending = stream()
    token = await on_a.register(pending, fake_ctx(sup))
    assert await on_b.answered_token(CALL_ID) == token  # a replayed webhook on B: same answer
    claims = await asyncio.gather(*(on_b.claim(token) for _ in range(5)))
    assert [c for c in claims if c is not None] == [pending]  # phone_url "nats:<id>" kept
    assert await on_b.claim(token) is None
    # A's timer fires after the TTL: the stream connected (to B), so the session goes on.
    await asyncio.sleep(1.5)
    assert sup.ended == []
    assert await on_a.claim(token) is None
    assert await on_a.answered_token(CALL_ID) == token  # still answered the same


async def test_an_unclaimed_token_expires_and_its_session_is_ended_once(replicas) -> None:
    a, b = replicas
    sup = RecordingSupervisor()
    on_a, on_b = a.calls(ttl_s=0.3), b.calls(ttl_s=0.3)
    claimed, unclaimed = stream(call_id="CA-1"), stream(call_id="CA-2")
    t1 = await on_a.register(claimed, fake_ctx(sup))
    t2 = await on_a.register(unclaimed, fake_ctx(sup))
    assert await on_b.claim(t1) == claimed
    await eventually(lambda: sup.ended)
    await asyncio.sleep(0.3)
    assert sup.ended == [(unclaimed.session_id, NEVER_CONNECTED)]
    assert await on_b.claim(t2) is None  # expired and taken by A's timer


async def test_a_token_past_its_ttl_cannot_be_claimed_on_another_replica(replicas) -> None:
    a, b = replicas
    on_a = a.calls(ttl_s=0.2)
    token = await on_a.register(stream(), fake_ctx(RecordingSupervisor()))
    for timer in on_a._timers.values():  # A's timer late (a busy loop): the entry stays
        timer.cancel()
    await asyncio.sleep(0.4)
    assert await b.calls(ttl_s=0.2).claim(token) is None
    assert await a.kv.get(ephemeral.key("phone-token", token))  # left for A's timer to end


async def test_a_webhook_retried_to_another_replica_waits_for_the_first_ones_answer(
    replicas,
) -> None:
    a, b = replicas
    on_a, on_b = a.calls(), b.calls()
    assert await on_a.begin_start(CALL_ID)
    assert not await on_b.begin_start(CALL_ID)
    waiting = asyncio.create_task(on_b.started_elsewhere(CALL_ID))
    await asyncio.sleep(0.6)
    assert not waiting.done()
    token = await on_a.register(stream(), fake_ctx(RecordingSupervisor()))
    await on_a.end_start(CALL_ID)
    assert await asyncio.wait_for(waiting, 3) == token


async def test_a_refused_start_on_another_replica_answers_the_retry_with_no_token(
    replicas,
) -> None:
    a, b = replicas
    on_a, on_b = a.calls(), b.calls()
    assert await on_a.begin_start(CALL_ID)
    waiting = asyncio.create_task(on_b.started_elsewhere(CALL_ID))
    await asyncio.sleep(0.3)
    await on_a.end_start(CALL_ID)  # refused: no token registered
    assert await asyncio.wait_for(waiting, 3) is None
    assert await on_b.begin_start(CALL_ID)  # a later webhook may start it


# -- the webhook on a replica ----------------------------------------------------------------

TOKEN = "cluster-test-token"
PUBLIC = "https://tutor.example.com"
VOICE = "/api/v1/phone/twilio/voice"
LINE = "+15550001000"


@pytest.fixture
async def replica_api(sqlite_url, tmp_path, replicas) -> AsyncIterator[tuple[Api, Replica]]:
    """The app as replica B (its supervisor has B's bucket) and replica A's connection."""
    a, b = replicas
    lines = {LINE: {"persona": "aviation-examiner", "tier": "local"}}
    async for api in make_api(
        sqlite_url,
        tmp_path,
        twilio_auth_token=TOKEN,
        phone_public_url=PUBLIC,
        phone_lines=lines,
        max_sessions=5,
    ):
        api.sup.ephemeral = b.kv  # type: ignore[attr-defined]
        api.sup.ready_info = lambda sid: {"phone_url": f"nats:{sid}"}  # type: ignore[attr-defined]
        yield api, a


async def _webhook(api: Api, call_id: str) -> str:
    params = {"CallSid": call_id, "From": "+15550003000", "To": LINE}
    body, headers = twilio_form(PUBLIC + VOICE, params, TOKEN)
    r = await api.client.post(VOICE, content=body, headers=headers)
    assert r.status_code == 200, r.text
    found = ElementTree.fromstring(r.text).find("./Connect/Stream")
    assert found is not None, r.text
    return found.attrib["url"].rsplit("/", 1)[1]


async def test_a_call_answered_by_a_replica_streams_through_another(replica_api) -> None:
    api, a = replica_api
    token = await _webhook(api, CALL_ID)
    assert [c[0] for c in api.sup.calls] == ["spawn"]
    sid = api.sup.calls[0][1].session_id
    on_a = a.calls()
    assert await on_a.claim(token) == PendingStream("twilio", CALL_ID, sid, f"nats:{sid}")
    assert await _webhook(api, CALL_ID) == token  # replayed: same answer, no second session
    assert [c[0] for c in api.sup.calls] == ["spawn"]


async def test_a_webhook_retried_while_another_replica_starts_the_call_starts_none(
    replica_api,
) -> None:
    api, a = replica_api
    on_a = a.calls()
    assert await on_a.begin_start(CALL_ID)  # replica A is starting the call's session
    retried = asyncio.create_task(_webhook(api, CALL_ID))
    await asyncio.sleep(0.6)
    assert not retried.done()
    token = await on_a.register(stream(), fake_ctx(RecordingSupervisor()))
    await on_a.end_start(CALL_ID)
    assert await asyncio.wait_for(retried, 5) == token
    assert api.sup.calls == []  # replica B spawned nothing


# -- Daily dial-in ---------------------------------------------------------------------------


def _app_state(kv: KeyValue | None) -> Any:
    supervisor = SimpleNamespace(ephemeral=kv) if kv is not None else SimpleNamespace()
    return SimpleNamespace(ctx=SimpleNamespace(supervisor=supervisor))


async def test_two_replicas_see_the_same_answered_dialin_call(replicas) -> None:
    a, b = replicas
    on_a, on_b = _answered(_app_state(a.kv)), _answered(_app_state(b.kv))
    assert on_a.shared is not None and on_b.shared is not None
    assert await on_a.reserve(CALL_ID) is None  # A answers it
    assert await on_b.reserve(CALL_ID) == ""  # B: being answered elsewhere
    await on_a.answered(CALL_ID, "session-1")
    assert await on_b.reserve(CALL_ID) == "session-1"
    assert await on_a.reserve(CALL_ID) == "session-1"
    # A failed answer is released: Daily's retry on B starts it.
    assert await on_a.reserve("call-2") is None
    await on_a.release("call-2")
    assert await on_b.reserve("call-2") is None
    assert await on_a.reserve("call-2") == ""


async def test_concurrent_dialin_webhooks_on_two_replicas_start_one_session(replicas) -> None:
    a, b = replicas
    on_a, on_b = AnsweredCalls(a.store), AnsweredCalls(b.store)
    got = await asyncio.gather(*(r.reserve("call-3") for r in (on_a, on_b) * 4))
    assert got.count(None) == 1 and set(got) == {None, ""}


async def test_without_a_cluster_supervisor_dialin_calls_stay_in_memory() -> None:
    state = _app_state(None)
    calls = _answered(state)
    assert calls.shared is None and _answered(state) is calls
    assert await calls.reserve(CALL_ID) is None
    assert await calls.reserve(CALL_ID) == ""
    await calls.answered(CALL_ID, "session-9")
    assert await calls.reserve(CALL_ID) == "session-9"
