"""The store's engine, transactions, secrets and ORM → record conversion (shared by the facade)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from store.models import ApiKey, Learner, Turn, TutorSession, UsageEvent
from store.records import (
    ApiKeyInfo,
    LearnerInfo,
    NotFoundError,
    SessionInfo,
    TurnInfo,
    UsageEventInfo,
)

SECRET_BYTES = 32
"""Random bytes in an API key or browser token (``secrets.token_urlsafe``: 43 characters)."""

PREFIX_LEN = 8
"""Characters of an API key kept in clear for display and revocation."""


def new_secret() -> str:
    """Return a new URL-safe secret with :data:`SECRET_BYTES` random bytes."""
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(plaintext: str) -> str:
    """Return the SHA-256 hex digest of a secret.

    A fast hash suffices: the secrets are 256-bit random, not passwords, so there is
    nothing to brute-force.
    """
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def secret_matches(plaintext: str, stored_hash: str) -> bool:
    """Compare a secret with a stored hash in constant time."""
    return hmac.compare_digest(hash_secret(plaintext), stored_hash)


async def owned_learner(
    s: AsyncSession, learner_id: str, owner_key_id: str, *, lock: bool = False
) -> Learner:
    """The learner row if ``owner_key_id`` owns it and it is not erased (``lock``: FOR UPDATE).

    Raises:
        NotFoundError: no such learner for this key.
    """
    row = await s.get(Learner, learner_id, with_for_update=lock)
    if row is None or row.erased or row.owner_key_id != owner_key_id:
        raise NotFoundError(f"no learner {learner_id!r}")
    return row


def key_info(row: ApiKey) -> ApiKeyInfo:
    """Copy an ``api_keys`` row into an :class:`ApiKeyInfo`."""
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        plans=row.plans,
    )


def learner_info(row: Learner) -> LearnerInfo:
    """Copy a ``learners`` row into a :class:`LearnerInfo`."""
    return LearnerInfo(
        id=row.id,
        owner_key_id=row.owner_key_id,
        name=row.name,
        target_language=row.target_language,
        cefr_level=row.cefr_level,
        interests=tuple(row.interests or ()),
        phone=row.phone,
        created_at=row.created_at,
        plan=row.plan,
    )


def session_info(row: TutorSession) -> SessionInfo:
    """Copy a ``sessions`` row into a :class:`SessionInfo` (without the token hash)."""
    return SessionInfo(
        id=row.id,
        learner_id=row.learner_id,
        owner_key_id=row.owner_key_id,
        persona=row.persona,
        tier=row.tier,
        transport=row.transport,
        status=row.status,
        created_at=row.created_at,
        ready_at=row.ready_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        mode=row.mode or "conversation",
    )


def turn_info(row: Turn) -> TurnInfo:
    """Copy a ``turns`` row into a :class:`TurnInfo`."""
    return TurnInfo(
        index=row.index,
        role=row.role,
        text=row.text,
        start_ms=row.start_ms,
        end_ms=row.end_ms,
        latency_ms=row.latency_ms,
        ttfb_ms=dict(row.ttfb_ms or {}),
        interrupted=row.interrupted,
        created_at=row.created_at,
    )


def usage_info(row: UsageEvent) -> UsageEventInfo:
    """Copy a ``usage_events`` row into a :class:`UsageEventInfo`."""
    return UsageEventInfo(
        id=row.id,
        session_id=row.session_id,
        service=row.service,
        provider=row.provider,
        model=row.model,
        metric=row.metric,
        quantity=row.quantity,
        created_at=row.created_at,
    )


class StoreBase:
    """Holds the engine and opens one short transaction per operation.

    Args:
        engine: An async engine on a migrated database.
    """

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._sessionmaker = async_sessionmaker(engine, expire_on_commit=False)

    @property
    def engine(self) -> AsyncEngine:
        """The underlying async engine (for diagnostics and tests)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """The backend: ``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        """Yield a session in a transaction, committed on exit (rolled back on error)."""
        async with self._sessionmaker() as session, session.begin():
            yield session

    async def close(self) -> None:
        """Close every pooled connection; the store is unusable afterwards."""
        await self._engine.dispose()
