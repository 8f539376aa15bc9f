"""What a session host publishes about itself, and how the dispatcher picks one.

Each host puts a :class:`HostRecord` in the ``voxtutor_hosts`` bucket every heartbeat; the
bucket's ``max_age`` (the host TTL) drops the record of a host that stopped. The API's
dispatcher reads them all and tries hosts in :func:`rank` order: the least loaded host
with a free slot, one with a warm spare of the session's kind first (the spare makes
spawn-to-ready a fraction of a second instead of ~3 s).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from runtime.cluster.bus import decode, encode


@dataclass(frozen=True)
class HostRecord:
    """One session host as the registry holds it.

    Attributes:
        host_id: The host's name (``VOXTUTOR_HOST_ID``).
        max_sessions: Sessions it runs at most (``VOXTUTOR_MAX_SESSIONS``).
        active: Sessions it runs now (starting ones included).
        free: Free slots per spare kind (``local``, ``cloud``, ``phone``): ``max_sessions -
            active`` for every kind, 0 for all while draining or at the load threshold.
        warm: Spare kinds with a preloaded process waiting now.
        tiers: The tier of each active session.
        load: 1-minute load average per CPU core (``os.getloadavg()[0] / os.cpu_count()``).
        memory_available_mb: ``MemAvailable`` from ``/proc/meminfo``, MiB (0 where unknown).
        draining: Takes no new sessions; exits when its last one ends.
        updated: When the record was written, Unix time, s.
    """

    host_id: str
    max_sessions: int
    active: int
    free: dict[str, int] = field(default_factory=dict)
    warm: list[str] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    load: float = 0.0
    memory_available_mb: int = 0
    draining: bool = False
    updated: float = 0.0

    def to_bytes(self) -> bytes:
        """The record as the JSON stored in the bucket."""
        return encode(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> HostRecord | None:
        """A record read from the bucket; ``None`` for one that does not parse."""
        obj: dict[str, Any] = decode(data)
        try:
            return cls(
                host_id=str(obj["host_id"]),
                max_sessions=int(obj["max_sessions"]),
                active=int(obj["active"]),
                free={str(k): int(v) for k, v in dict(obj.get("free") or {}).items()},
                warm=[str(k) for k in obj.get("warm") or []],
                tiers=[str(t) for t in obj.get("tiers") or []],
                load=float(obj.get("load") or 0.0),
                memory_available_mb=int(obj.get("memory_available_mb") or 0),
                draining=bool(obj.get("draining")),
                updated=float(obj.get("updated") or 0.0),
            )
        except (KeyError, TypeError, ValueError):
            return None


def machine_load() -> tuple[float, int]:
    """(1-minute load average per CPU core, available memory in MiB) of this machine."""
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        load = 0.0
    available = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    return round(load, 3), available


async def read_hosts(kv: KeyValue, max_age_s: float | None = None) -> list[HostRecord]:
    """Every host in the registry, by id.

    Args:
        kv: The ``voxtutor_hosts`` bucket.
        max_age_s: Also leave out records written longer ago than this, s (the bucket's
            own ``max_age`` removes them too, within a second or so).
    """
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    now = time.time()
    hosts = []
    for key in sorted(keys):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        record = HostRecord.from_bytes(entry.value or b"")
        if record is None or (max_age_s is not None and now - record.updated > max_age_s):
            continue
        hosts.append(record)
    return hosts


def rank(hosts: list[HostRecord], kind: str) -> list[HostRecord]:
    """The hosts that can take a session of spare ``kind``, best first.

    Draining hosts and hosts with no free slot of ``kind`` are left out. Order: a warm spare
    of ``kind`` first, then the lowest share of slots in use, then the lowest CPU load, then
    the host id (a stable tie-break).
    """
    able = [h for h in hosts if not h.draining and h.free.get(kind, 0) > 0]
    return sorted(
        able,
        key=lambda h: (kind not in h.warm, h.active / max(h.max_sessions, 1), h.load, h.host_id),
    )
