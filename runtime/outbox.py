"""A durable local outbox for session writes the database cannot take right now.

Session processes write through the server (:mod:`runtime.store_relay`). When the database is
unreachable (PostgreSQL stopped or restarting, the network to it down, SQLite locked), a
write used to be logged and lost. Now it goes into a SQLite file on the server's disk
(stdlib ``sqlite3``, WAL, ``synchronous=FULL``: a write is on disk when :meth:`Outbox.write`
returns) and a background task applies the queued writes in order, every ``retry_s``
seconds, until the database takes them; a server restarted meanwhile finds them in the file.

Order is kept: while anything is queued, new writes queue behind it, and so does the terminal
status the supervisor writes when a process exits. Turns and usage are never doubled: a turn
is unique per session and index, a usage row carries a ``write_id`` made when the write
arrived, so a write whose commit reached the database although its answer did not is
refused as a duplicate on the retry and dropped. An assessment, session event or review
rating has no such id yet: in that one window (the commit made, its answer lost) its retry
is applied again. A write the database refuses for what it is (a bad row, not an outage) is
logged and dropped, as before. A queued row's ``created_at`` is when it was applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

Apply = Callable[[str, list[Any], dict[str, Any]], Awaitable[None]]
"""Applies one write: ``(store method, positional args, keyword args)``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call TEXT NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL
)
"""


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` means the database is unreachable (retry later), not a bad write."""
    if isinstance(error, IntegrityError):
        return False
    if isinstance(error, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OSError | TimeoutError | ConnectionError)


def store_writes(store: object) -> Apply:
    """The :data:`Apply` that calls ``store``'s method of that name (``store.Store``)."""

    async def apply(call: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        await getattr(store, call)(*args, **kwargs)

    return apply


class Outbox:
    """The queue file and its retry task.

    Args:
        path: The SQLite file (created with its folder).
        apply: Applies one write to the store; raises what the store raises.
        retry_s: Seconds between tries while the database is unreachable.
    """

    def __init__(self, path: Path, apply: Apply, retry_s: float = 2.0):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._apply = apply
        self.retry_s = retry_s
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Writes waiting for the database."""
        return int(self._db.execute("SELECT count(*) FROM writes").fetchone()[0])

    def start(self) -> None:
        """Start applying writes left in the file (by an earlier run), if any."""
        if self.pending:
            logger.warning("store outbox: {} writes from before; applying them", self.pending)
            self._ensure_drain()

    async def write(self, call: str, args: list[Any], kwargs: dict[str, Any]) -> bool:
        """Apply a write now, or queue it durably if the database is unreachable.

        Returns:
            ``True`` if applied now, ``False`` if queued (it will be applied in order).

        Raises:
            Exception: What the store raised for a write it refused (not an outage).
        """
        if not self.pending:
            try:
                await self._apply(call, args, kwargs)
                return True
            except Exception as e:
                if not is_outage(e):
                    raise
                logger.warning("store unreachable ({!r}); queueing writes", e)
        self._db.execute(
            "INSERT INTO writes (call, args, kwargs) VALUES (?, ?, ?)",
            (call, json.dumps(args), json.dumps(kwargs)),
        )
        self._ensure_drain()
        return False

    def _ensure_drain(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        # Writers never wait for this loop: while a row is queued they append behind it.
        while True:
            row = self._db.execute(
                "SELECT seq, call, args, kwargs FROM writes ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                logger.info("store outbox: every queued write is applied")
                return
            seq, call, args, kwargs = row
            try:
                await self._apply(call, json.loads(args), json.loads(kwargs))
                done = True
            except IntegrityError as e:  # already applied (its answer was lost), or a bad row
                logger.info("store outbox: {} #{} refused as a duplicate: {!r}", call, seq, e)
                done = True
            except Exception as e:
                done = not is_outage(e)
                if done:
                    logger.error("store outbox: {} #{} failed: {!r}", call, seq, e)
            if done:
                self._db.execute("DELETE FROM writes WHERE seq = ?", (seq,))
            else:
                await asyncio.sleep(self.retry_s)

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the queue to empty; ``True`` if it did."""
        if self._task is None:
            return not self.pending
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        return not self.pending

    async def close(self) -> None:
        """Stop retrying (queued writes stay in the file for the next start) and close it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._db.close()
