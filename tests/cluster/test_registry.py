"""Which host a session goes to, and what a subject may carry (no broker needed)."""

from __future__ import annotations

import pytest

from runtime.cluster.bus import host_subject, relay_subject, session_subject
from runtime.cluster.registry import HostRecord, rank


def _host(host_id: str, active: int = 0, *, warm=("local",), free=None, load=0.1, draining=False):
    slots = 4 - active if free is None else free
    return HostRecord(
        host_id=host_id,
        max_sessions=4,
        active=active,
        free={"local": slots, "cloud": slots, "phone": slots},
        warm=list(warm),
        load=load,
        draining=draining,
    )


def test_a_warm_spare_of_the_kind_wins_over_a_less_loaded_host():
    cold, warm = _host("a", 0, warm=()), _host("b", 2)
    assert [h.host_id for h in rank([cold, warm], "local")] == ["b", "a"]
    assert [h.host_id for h in rank([cold, warm], "cloud")] == ["a", "b"]


def test_then_the_lowest_share_of_slots_in_use_then_the_lowest_load():
    hosts = [_host("a", 2), _host("b", 1, load=0.9), _host("c", 1, load=0.2)]
    assert [h.host_id for h in rank(hosts, "local")] == ["c", "b", "a"]


def test_draining_and_full_hosts_take_nothing():
    hosts = [_host("a", draining=True), _host("b", 4), _host("c", 0, free=0)]
    assert rank(hosts, "local") == []
    assert [h.host_id for h in rank([*hosts, _host("d")], "phone")] == ["d"]


def test_a_record_survives_the_bucket_and_a_bad_one_is_dropped():
    record = _host("host-1", 1, load=0.25)
    assert HostRecord.from_bytes(record.to_bytes()) == record
    assert HostRecord.from_bytes(b'{"host_id": "x"}') is None
    assert HostRecord.from_bytes(b"not json") is None
    assert HostRecord.from_bytes(b'{"host_id": "x", "max_sessions": "many", "active": 0}') is None


@pytest.mark.parametrize("bad", ["", "a.b", "a*", ">", "a b", "x" * 65, "ä"])
def test_subjects_carry_only_generated_ids(bad):
    with pytest.raises(ValueError):
        host_subject(bad, "spawn")
    with pytest.raises(ValueError):
        session_subject(bad, "offer")
    with pytest.raises(ValueError):
        relay_subject(bad, "up")


def test_subjects():
    sid = "0b5d1c1e-7b55-4c61-9f5e-2f8f6c1e9a10"
    assert session_subject(sid, "offer") == f"voxtutor.session.{sid}.offer"
    assert host_subject("host-1", "drain") == "voxtutor.host.host-1.drain"
    with pytest.raises(ValueError):
        session_subject(sid, "spawn")
    with pytest.raises(ValueError):
        relay_subject("r1", "sideways")
