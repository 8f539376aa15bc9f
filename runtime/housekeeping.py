"""What the server does in the background besides sessions: end revoked keys' sessions, purge.

Keys are revoked from the command line (``voxtutor keys revoke``), another process: the server
looks for live sessions whose key is revoked every ``revocation_poll_s`` and ends them (the
tutor says goodbye), so a revoked key stops costing anything within seconds. With
``transcript_retention_days`` set, the turns of sessions that ended longer ago are deleted
once an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Protocol

from loguru import logger

from runtime.protocol import SessionNotRunningError
from store import Store
from store.models import utcnow

REVOKED = "API key revoked"
PURGE_EVERY_S = 3600.0
"""How often old transcripts are purged, s."""


class Ender(Protocol):
    """What ending a session needs (``runtime.supervisor.SessionSupervisor`` is one)."""

    async def end(self, session_id: str, reason: str) -> None:
        """Ask the session to say goodbye and stop."""
        ...


async def end_revoked_sessions(store: Store, supervisor: Ender) -> int:
    """End every live session whose API key is revoked; return how many.

    A session without a running process is marked ended in the store.
    """
    ids = await store.live_sessions_of_revoked_keys()
    for sid in ids:
        try:
            await supervisor.end(sid, REVOKED)
        except SessionNotRunningError:
            await store.set_session_status(sid, "ended", REVOKED)
        logger.bind(session_id=sid).info("session ended: its API key was revoked")
    return len(ids)


async def purge_old_transcripts(store: Store, retention_days: float | None) -> int:
    """Delete the turns of sessions that ended over ``retention_days`` ago (``None``: keep)."""
    if retention_days is None:
        return 0
    purged = await store.purge_transcripts(utcnow() - timedelta(days=retention_days))
    if purged:
        logger.info(f"retention: {purged} turn(s) older than {retention_days} days deleted")
    return purged


async def housekeeping(
    store: Store, supervisor: Ender, every_s: float, retention_days: float | None = None
) -> None:
    """End revoked keys' sessions every ``every_s`` seconds, purge hourly, until cancelled."""
    last_purge = -PURGE_EVERY_S
    while True:
        with contextlib.suppress(Exception):  # a database hiccup: try again next time
            await end_revoked_sessions(store, supervisor)
        if time.monotonic() - last_purge >= PURGE_EVERY_S:
            last_purge = time.monotonic()
            with contextlib.suppress(Exception):
                await purge_old_transcripts(store, retention_days)
        await asyncio.sleep(every_s)
