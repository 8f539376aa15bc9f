"""What the server does in the background besides sessions: end sessions of revoked keys.

Keys are revoked from the command line (``voxtutor keys revoke``), another process: the server
looks for live sessions whose key is revoked every ``revocation_poll_s`` and ends them (the
tutor says goodbye), so a revoked key stops costing anything within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from loguru import logger

from runtime.protocol import SessionNotRunningError
from store import Store

REVOKED = "API key revoked"


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


async def watch_revocations(store: Store, supervisor: Ender, every_s: float) -> None:
    """Run :func:`end_revoked_sessions` every ``every_s`` seconds until cancelled."""
    while True:
        with contextlib.suppress(Exception):  # a database hiccup: try again next time
            await end_revoked_sessions(store, supervisor)
        await asyncio.sleep(every_s)
