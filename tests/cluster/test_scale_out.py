"""Scale-out on real NATS: two API replicas and two session hosts on this machine.

Sessions started through one replica spread over both hosts; a browser's WebRTC offer and a
carrier's media stream reach their session from the other replica, with real speech
transcribed and answered; a host killed with ``kill -9`` has its sessions marked ``failed``
within its registry TTL and the next session starts on the other host; a drained host lets
its running session finish while new sessions go elsewhere, then exits. The deployment is
``tests/cluster/conftest.py``'s.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.cluster.conftest import HOST_TTL_S, Cluster
from tests.cluster.scenarios import twilio_call, webrtc_call

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def clip(librivox):
    """LibriVox "he was not an ill disposed young man" (English: the examiner's learner)."""
    return next(p for p in librivox if "0880" in p.name)


async def test_sessions_created_through_one_replica_spread_over_both_hosts(cluster: Cluster):
    api, other = cluster.apis
    first = (await cluster.create_session(api))["session_id"]
    second = (await cluster.create_session(api))["session_id"]
    hosts = {await cluster.host_of(first), await cluster.host_of(second)}
    assert hosts == {"host-a", "host-b"}

    # Either replica reports both hosts for an autoscaler, one session each.
    async with httpx.AsyncClient(base_url=other) as http:
        metrics = (await http.get("/metrics")).text
    for host in ("host-a", "host-b"):
        assert f'voxtutor_host_active_sessions{{host="{host}"}} 1.0' in metrics, metrics
        assert f'voxtutor_host_free_slots{{host="{host}",kind="local"}} 2.0' in metrics

    # Ended through the replica that did not start them.
    await asyncio.gather(cluster.end_session(other, first), cluster.end_session(other, second))
    for sid in (first, second):
        assert (await cluster.store.get_session(sid)).end_reason == "ended by client"
        await cluster.wait_gone(sid, 5)  # the host's next heartbeat drops its entry


async def test_a_webrtc_offer_posted_to_the_other_replica_is_answered(cluster: Cluster, clip):
    api, other = cluster.apis
    sid = await webrtc_call(cluster, api, other, clip)
    assert (await cluster.store.get_session(sid)).status == "active"
    await cluster.end_session(api, sid)


async def test_a_twilio_stream_connected_to_the_other_replica_reaches_its_session(
    cluster: Cluster, clip
):
    api, other = cluster.apis
    sid = await twilio_call(cluster, api, other, clip)
    assert (await cluster.store.get_session(sid)).end_reason == "ended by client"


async def test_a_drained_host_finishes_its_session_takes_no_new_ones_and_exits(cluster: Cluster):
    api, other = cluster.apis
    sid = (await cluster.create_session(api))["session_id"]
    drained = await cluster.host_of(sid)
    assert drained in cluster.hosts
    staying = next(h for h in cluster.hosts if h != drained)

    status, out = await cluster.voxtutor("host", "--drain", drained)
    assert status == 0, out
    assert "1 session(s) left" in out
    hosts = await cluster.wait_hosts(lambda h: h.get(drained) and h[drained].draining, 10)
    assert hosts[drained].free == {"local": 0, "cloud": 0, "phone": 0}

    # New sessions go to the other host; the drained host's session still runs.
    new = (await cluster.create_session(other))["session_id"]
    assert await cluster.host_of(new) == staying
    assert (await cluster.store.get_session(sid)).status == "ready"
    assert cluster.hosts[drained].running

    # Its last session ends → it leaves the registry and exits on its own.
    await cluster.end_session(other, sid)
    assert await asyncio.wait_for(cluster.hosts[drained].proc.wait(), 30) == 0
    await cluster.wait_hosts(lambda h: drained not in h, 10)
    await cluster.end_session(api, new)
    del cluster.hosts[drained]
    await cluster.start_host("host-c")  # two hosts again for the next test


async def test_a_killed_host_fails_its_sessions_within_the_ttl_and_the_next_goes_elsewhere(
    cluster: Cluster,
):
    api, other = cluster.apis
    sid = (await cluster.create_session(api))["session_id"]
    victim = await cluster.host_of(sid)
    assert victim in cluster.hosts
    survivor = next(h for h in cluster.hosts if h != victim)

    cluster.hosts[victim].proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await cluster.wait_status(sid, {"failed"}, HOST_TTL_S + 10)
    took = time.monotonic() - killed_at
    info = await cluster.store.get_session(sid)
    assert info.end_reason == f"session host {victim} stopped answering"
    # The TTL, plus one registry read of the replicas and one bucket expiry pass.
    assert took < HOST_TTL_S + 3, f"marked failed {took:.1f} s after the kill"

    nxt = (await cluster.create_session(other))["session_id"]
    assert await cluster.host_of(nxt) == survivor
    await cluster.end_session(other, nxt)


async def test_losing_an_api_replica_loses_no_session(cluster: Cluster):
    api, other = cluster.apis
    sid = (await cluster.create_session(api))["session_id"]
    lost = cluster.api_procs[cluster.apis.index(api)]
    assert await lost.stop(signal.SIGKILL) == -signal.SIGKILL
    cluster.apis.remove(api)

    await asyncio.sleep(HOST_TTL_S)  # longer than any host could have missed a beat
    assert (await cluster.store.get_session(sid)).status == "ready"
    assert await cluster.host_of(sid) in cluster.hosts
    await cluster.end_session(other, sid)
    assert (await cluster.store.get_session(sid)).end_reason == "ended by client"
