"""The API replica's side of dispatch on a real (private) NATS, with hosts played by the test.

Each "host" is a responder on its spawn subject and a record in the registry, so what the
dispatcher does on a refusal, a missing session or a dead host is checked without session
processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from config.settings import Settings
from contracts.session_spec import SessionSpec
from runtime.cluster.bus import (
    HOSTS_BUCKET,
    SESSIONS_BUCKET,
    bucket,
    decode,
    encode,
    host_subject,
    reply,
    session_subject,
)
from runtime.cluster.dispatch import MAX_HOSTS_TRIED, ClusterSupervisor
from runtime.cluster.registry import HostRecord
from runtime.protocol import CapacityError, SessionNotRunningError, SessionRequestError
from store import Store
from testkit.cluster_procs import private_nats

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broker(tmp_path_factory) -> AsyncIterator[str]:
    """A private NATS with JetStream."""
    async with private_nats(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="module")
async def world(broker: str, tmp_path: Path):
    """(NATS client, hosts bucket, sessions bucket, store, a replica) with empty buckets."""
    nc = await nats.connect(broker)
    js = nc.jetstream()
    for name in (HOSTS_BUCKET, SESSIONS_BUCKET):
        try:
            await js.delete_key_value(name)
        except Exception:
            pass
    hosts = await bucket(js, HOSTS_BUCKET, 5.0)
    sessions = await bucket(js, SESSIONS_BUCKET)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    settings = Settings(
        # No background reads: each test reads the registry and reaps when it says so.
        nats_url=broker,
        host_heartbeat_s=3600,
        host_ttl_s=5.0,
        limits_url="memory://",
    )
    replica = ClusterSupervisor(settings, store)
    await replica.start()
    yield nc, hosts, sessions, store, replica
    await replica.close()
    await store.close()
    await nc.close()


async def _register(hosts, host_id: str, active: int = 0, warm=("local",)) -> None:
    record = HostRecord(
        host_id=host_id,
        max_sessions=4,
        active=active,
        free={"local": 4 - active, "cloud": 4 - active, "phone": 4 - active},
        warm=list(warm),
        updated=time.time(),
    )
    await hosts.put(host_id, record.to_bytes())


async def _answering(nc, host_id: str, answer: bytes, asked: list[str]):
    async def on_spawn(msg):
        asked.append(host_id)
        await msg.respond(answer)

    sub = await nc.subscribe(host_subject(host_id, "spawn"), cb=on_spawn)
    await nc.flush()
    return sub


def _spec(session_id: str = "5e6f0c52-3a55-4df4-9f0e-4f6f0a3c2b11") -> SessionSpec:
    return SessionSpec(session_id, "german-tutor", "local", "webrtc", "host://llm")


async def test_a_refusing_host_is_passed_over_for_the_next(world):
    nc, hosts, _, _, replica = world
    asked: list[str] = []
    await _register(hosts, "a")  # ranks first: idle and warm
    await _register(hosts, "b", active=1)
    await _answering(nc, "a", reply(False, code="capacity", error="full"), asked)
    await _answering(nc, "b", reply(True, {"host": "b"}), asked)
    await replica.refresh()
    await replica.spawn(_spec())
    assert asked == ["a", "b"]
    assert replica.host_of(_spec().session_id) == "b"
    assert replica.active_count == 1  # b's record; the spawn is no longer counted as starting


async def test_a_spawn_is_refused_after_at_most_three_hosts(world):
    nc, hosts, _, _, replica = world
    asked: list[str] = []
    for host in ("a", "b", "c", "d"):
        await _register(hosts, host)
        await _answering(nc, host, reply(False, code="capacity", error="full"), asked)
    await replica.refresh()
    with pytest.raises(CapacityError, match="no session host took"):
        await replica.spawn(_spec())
    assert len(asked) == MAX_HOSTS_TRIED == 3


async def test_no_host_registered_is_capacity_not_a_hang(world):
    *_, replica = world
    t0 = time.monotonic()
    with pytest.raises(CapacityError):
        await replica.spawn(_spec())
    assert time.monotonic() - t0 < 5


async def test_signalling_for_a_session_no_host_runs(world):
    nc, *_, replica = world
    sid = _spec().session_id
    with pytest.raises(SessionNotRunningError):
        await replica.offer(sid, {"sdp": "v=0", "type": "offer"})
    with pytest.raises(SessionNotRunningError):
        await replica.end(sid, "bye")
    with pytest.raises(SessionNotRunningError):  # not an id a subject may carry
        await replica.offer("a.b.>", {"sdp": "v=0", "type": "offer"})

    async def refuse(msg):
        await msg.respond(reply(False, code="refused", error="malformed SDP"))

    await nc.subscribe(session_subject(sid, "offer"), cb=refuse)
    await nc.flush()  # the server has the subscription before the request
    with pytest.raises(SessionRequestError, match="malformed SDP"):
        await replica.offer(sid, {"sdp": "garbage", "type": "offer"})


async def test_a_dead_hosts_sessions_fail_once_whichever_replicas_look(world, broker):
    nc, hosts, sessions, store, replica = world
    key, _ = await store.create_api_key("t")
    learner = await store.create_learner(key.id, "Pat", "de", "A2")
    dead, _ = await store.create_session(learner.id, key.id, "german-tutor", "local", "webrtc")
    alive, _ = await store.create_session(learner.id, key.id, "german-tutor", "local", "webrtc")
    await _register(hosts, "alive")
    await sessions.put(dead.id, encode({"host": "gone"}))
    await sessions.put(alive.id, encode({"host": "alive"}))

    other = ClusterSupervisor(replica.settings, store)
    await other.start()
    try:
        counts = await asyncio.gather(replica.reap(), other.reap())
    finally:
        await other.close()
    assert sorted(counts) == [0, 1]
    info = await store.get_session(dead.id)
    assert (info.status, info.end_reason) == ("failed", "session host gone stopped answering")
    assert (await store.get_session(alive.id)).status == "starting"
    assert decode((await sessions.get(alive.id)).value)["host"] == "alive"
    assert sorted(await sessions.keys()) == [alive.id]
