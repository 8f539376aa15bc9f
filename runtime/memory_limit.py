"""The memory limit a session process puts on itself before it loads anything.

A session parses untrusted input (SDP, RTP, audio), so a bug or a hostile peer that makes it
allocate without end must end that one session, not starve the machine's other sessions or
the server. The supervisor passes the limit in :data:`MEMORY_LIMIT_ENV` (setting
``VOXTUTOR_SESSION_MEMORY_LIMIT_MB``); the process sets it as both the soft and the hard
``RLIMIT_AS`` (address space, bytes; ``man 2 setrlimit``), so it cannot raise it again. An
allocation past it fails (``MemoryError``, or the native library aborts); the process exits,
and the supervisor marks the session failed and frees its slot.

``RLIMIT_AS`` counts reserved address space, not resident memory: thread stacks and
allocator arenas reserve more than they touch, so the limit is set well above a session's
resident size (``bench/README.md`` has both, measured).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping

MEMORY_LIMIT_ENV = "VOXTUTOR_SESSION_MEMORY_LIMIT_MB"
"""Environment variable carrying the limit, MiB (absent or empty: no limit)."""


def apply_memory_limit(environ: Mapping[str, str] | None = None) -> int | None:
    """Limit this process's address space to the MiB in :data:`MEMORY_LIMIT_ENV`.

    Returns:
        The limit set, bytes, or ``None`` if none was asked for.

    Raises:
        ValueError: The variable is not a positive whole number.
        OSError: The kernel refused the limit (e.g. above a hard limit already set).
    """
    raw = (os.environ if environ is None else environ).get(MEMORY_LIMIT_ENV, "").strip()
    if not raw:
        return None
    mib = int(raw)
    if mib <= 0:
        raise ValueError(f"{MEMORY_LIMIT_ENV} must be a positive number of MiB, got {raw!r}")
    limit = mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def address_space_bytes(pid: int) -> int:
    """The address space ``pid`` has reserved now (``VmSize`` in ``/proc/<pid>/status``), bytes.

    Raises:
        OSError: No such process, or not Linux.
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmSize for process {pid}")
