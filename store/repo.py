"""The :class:`Store` facade: opening, sessions; keys/learners, turns, events come from mixins."""

from __future__ import annotations

from typing import Any, Self, cast

from sqlalchemy import CursorResult, func, literal, select, update

from store.access import AccessStore
from store.accounts import AccountStore, non_empty
from store.assessments import AssessmentStore
from store.base import secret_matches, session_info
from store.billing import BillingStore
from store.db import create_engine, migrate_engine
from store.erasure import ErasureStore
from store.events import EventStore
from store.learner_model import LearnerModelStore
from store.models import (
    LIVE_STATUSES,
    SESSION_STATUSES,
    TERMINAL_STATUSES,
    SessionReport,
    TutorSession,
    UTCDateTime,
    utcnow,
)
from store.phone_identity import PhoneIdentityStore
from store.quotas import Limits, QuotaStore
from store.records import NotFoundError, SessionInfo
from store.reports import ReportStore
from store.reviews import ReviewStore
from store.turns import TurnStore
from store.usage import UsageStore


class Store(
    AccountStore,
    TurnStore,
    QuotaStore,
    EventStore,
    UsageStore,
    AssessmentStore,
    ReviewStore,
    ReportStore,
    LearnerModelStore,
    ErasureStore,
    BillingStore,
    PhoneIdentityStore,
    AccessStore,
):
    """Async persistence of voxtutor: open with :meth:`open`, close with :meth:`close`.

    Every method runs in its own short transaction and returns frozen records, never ORM
    objects. Also an async context manager (``async with await Store.open(url) as store``).

    Args:
        engine: An async engine on a migrated database (prefer :meth:`open`).
    """

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, **engine_kwargs: Any) -> Self:
        """Create the engine for ``url`` and (by default) migrate the database to head.

        SQLite files get WAL journaling, foreign keys and a busy timeout; the default URL is
        ``store.default_database_url(home)``.

        Args:
            url: Database URL (``sqlite+aiosqlite:///…``, ``postgresql+asyncpg://…``; plain
                ``sqlite://``/``postgresql://`` get the async driver).
            migrate: Run ``alembic upgrade head`` first (a no-op when up to date).
            **engine_kwargs: Passed to ``create_async_engine`` (e.g. ``pool_size``).

        Raises:
            ValueError: If the URL is invalid or the backend unsupported.
            sqlalchemy.exc.SQLAlchemyError: If the database is unreachable or a migration fails.
            OSError: If the database is unreachable (asyncpg connection errors).
        """
        engine = create_engine(url, **engine_kwargs)
        try:
            if migrate:
                await migrate_engine(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sessions -------------------------------------------------------------------------

    async def create_session(
        self,
        learner_id: str,
        owner_key_id: str,
        persona: str,
        tier: str,
        transport: str,
        mode: str = "conversation",
    ) -> tuple[SessionInfo, str]:
        """Create a session in status ``starting`` with a fresh browser token.

        Args:
            learner_id: The learner, who must belong to ``owner_key_id``.
            owner_key_id: The key starting the session.
            persona: Persona id.
            tier: Service tier.
            transport: Transport name.
            mode: ``conversation`` or ``review``.

        Returns:
            The session and its browser token's plaintext (only the hash is stored).

        Raises:
            ValueError: If persona, tier or transport is empty.
            NotFoundError: If the learner does not exist or belongs to another key.
        """
        persona = non_empty(persona, "persona")
        tier = non_empty(tier, "tier")
        transport = non_empty(transport, "transport")
        info, token, _ = await self.reserve_session(
            learner_id, owner_key_id, persona, tier, transport, Limits(), mode
        )
        return info, token

    async def check_session_token(self, session_id: str, token: str) -> bool:
        """Whether ``token`` is the session's browser token (constant-time comparison).

        Args:
            session_id: The session.
            token: The token the browser presented.

        Returns:
            ``False`` for an unknown session or a wrong token.
        """
        async with self._tx() as s:
            stored = await s.scalar(
                select(TutorSession.token_hash).where(TutorSession.id == session_id)
            )
        return stored is not None and secret_matches(token, stored)

    async def set_session_status(
        self, session_id: str, status: str, end_reason: str | None = None
    ) -> bool:
        """Move a session to ``status``, atomically; ``ended`` and ``failed`` are terminal.

        ``ready``/``active`` set ``ready_at`` (once); ``ended``/``failed`` set ``ended_at``
        and, in the same transaction, add the session's report job (:mod:`store.reports`).

        Args:
            session_id: The session.
            status: ``starting``, ``ready``, ``active``, ``ended`` or ``failed``.
            end_reason: Why it ended (stored when given, cut to 200 characters).

        Returns:
            ``True`` if changed; ``False`` if the session was already terminal (ignored).

        Raises:
            ValueError: If ``status`` is unknown.
            NotFoundError: If the session does not exist.
        """
        if status not in SESSION_STATUSES:
            raise ValueError(f"status must be one of {SESSION_STATUSES}, got {status!r}")
        now = utcnow()
        values: dict[str, Any] = {"status": status}
        if status in ("ready", "active"):
            values["ready_at"] = func.coalesce(TutorSession.ready_at, literal(now, UTCDateTime()))
        if status in TERMINAL_STATUSES:
            values["ended_at"] = now
        if end_reason is not None:
            values["end_reason"] = end_reason[:200]
        async with self._tx() as s:
            result = await s.execute(
                update(TutorSession)
                .where(TutorSession.id == session_id, TutorSession.status.not_in(TERMINAL_STATUSES))
                .values(**values)
            )
            if cast(CursorResult[Any], result).rowcount == 1:
                if status in TERMINAL_STATUSES:
                    s.add(SessionReport(session_id=session_id, status="pending", attempts=0))
                return True
            if await s.get(TutorSession, session_id) is None:
                raise NotFoundError(f"no session {session_id!r}")
            return False

    async def get_session(
        self, session_id: str, owner_key_id: str | None = None
    ) -> SessionInfo | None:
        """Return a session, or ``None`` if unknown or not owned by ``owner_key_id``.

        Args:
            session_id: The session.
            owner_key_id: If given, the key that must own the session.
        """
        async with self._tx() as s:
            row = await s.get(TutorSession, session_id)
            if row is None or (owner_key_id is not None and row.owner_key_id != owner_key_id):
                return None
            return session_info(row)

    async def list_sessions(
        self,
        owner_key_id: str,
        learner_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[SessionInfo], int]:
        """Return a page of a key's sessions, newest first, and how many match in total.

        Args:
            owner_key_id: The owning key (a key sees only its own sessions).
            learner_id: Only this learner's sessions.
            status: Only sessions in this status.
            limit: Page size (1-1000).
            offset: Sessions to skip.

        Raises:
            ValueError: If ``status``, ``limit`` or ``offset`` is invalid.
        """
        if status is not None and status not in SESSION_STATUSES:
            raise ValueError(f"status must be one of {SESSION_STATUSES}, got {status!r}")
        if not 1 <= limit <= 1000 or offset < 0:
            raise ValueError("limit must be 1-1000 and offset non-negative")
        where = [TutorSession.owner_key_id == owner_key_id]
        if learner_id is not None:
            where.append(TutorSession.learner_id == learner_id)
        if status is not None:
            where.append(TutorSession.status == status)
        async with self._tx() as s:
            total = await s.scalar(select(func.count()).select_from(TutorSession).where(*where))
            rows = await s.scalars(
                select(TutorSession)
                .where(*where)
                .order_by(TutorSession.created_at.desc(), TutorSession.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [session_info(r) for r in rows], int(total or 0)

    async def count_active_sessions(self, owner_key_id: str | None = None) -> int:
        """Count sessions not yet ended or failed (``starting``, ``ready``, ``active``).

        Args:
            owner_key_id: Only this key's sessions.
        """
        stmt = select(func.count()).select_from(TutorSession)
        stmt = stmt.where(TutorSession.status.in_(LIVE_STATUSES))
        if owner_key_id is not None:
            stmt = stmt.where(TutorSession.owner_key_id == owner_key_id)
        async with self._tx() as s:
            return int(await s.scalar(stmt) or 0)

    async def fail_live_sessions(self, end_reason: str = "server restarted") -> int:
        """Mark every live session ``failed`` (at startup, after a crash left some behind).

        Only call it when no other process is serving sessions from the same database.

        Args:
            end_reason: Stored as the sessions' end reason.

        Returns:
            How many sessions were marked.
        """
        async with self._tx() as s:
            # Only the rows this UPDATE changed get a report job: another server process
            # failing the same sessions at once adds none twice.
            ids = list(
                await s.scalars(
                    update(TutorSession)
                    .where(TutorSession.status.in_(LIVE_STATUSES))
                    .values(status="failed", ended_at=utcnow(), end_reason=end_reason[:200])
                    .returning(TutorSession.id)
                )
            )
            s.add_all(SessionReport(session_id=i, status="pending", attempts=0) for i in ids)
            return len(ids)
