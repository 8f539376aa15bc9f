"""Persistence of voxtutor: API keys, learners, sessions, turns and usage (SQLAlchemy 2, async).

SQLite (WAL) by default, PostgreSQL via ``DATABASE_URL``; the schema is managed by Alembic
(``store/migrations``) and migrated on :meth:`Store.open`. Usage::

    store = await Store.open(default_database_url(settings.home))
    key, plaintext = await store.create_api_key("web app")
    ...
    await store.close()

From a synchronous command (typer), wrap one coroutine in ``asyncio.run``; see
:func:`create_api_key_sync` and :func:`revoke_api_key_sync`.
"""

from __future__ import annotations

import asyncio

from config.database import default_database_url, normalize_url
from store.billing import BillingAccount, BillingChange, SubscriptionActiveError
from store.db import create_engine, migrate
from store.records import (
    ApiKeyInfo,
    ConflictError,
    LatencySummary,
    LearnerInfo,
    LimitError,
    NotFoundError,
    QuotaExceededError,
    SessionInfo,
    StoreError,
    TurnInfo,
    UsageEventInfo,
)
from store.repo import Store

__all__ = [
    "ApiKeyInfo",
    "BillingAccount",
    "BillingChange",
    "ConflictError",
    "LatencySummary",
    "LearnerInfo",
    "LimitError",
    "NotFoundError",
    "QuotaExceededError",
    "SessionInfo",
    "Store",
    "StoreError",
    "SubscriptionActiveError",
    "TurnInfo",
    "UsageEventInfo",
    "create_api_key_sync",
    "create_engine",
    "default_database_url",
    "migrate",
    "normalize_url",
    "revoke_api_key_sync",
]


async def _create_key(url: str, name: str, plans: str) -> tuple[ApiKeyInfo, str]:
    async with await Store.open(url) as store:
        return await store.create_api_key(name, plans)


async def _revoke_key(url: str, key_id_or_prefix: str) -> bool:
    async with await Store.open(url) as store:
        return await store.revoke_api_key(key_id_or_prefix)


def create_api_key_sync(url: str, name: str, plans: str = "free") -> tuple[ApiKeyInfo, str]:
    """Create an API key from synchronous code (``voxtutor keys create``).

    Opens the store (migrating it), creates the key and closes the store. Must not be called
    from a running event loop.

    Args:
        url: Database URL.
        name: Human label of the key.
        plans: The plans the key may put its learners on, comma-separated, or ``*``.

    Returns:
        The key's record and its plaintext (show it once; only its hash is stored).

    Raises:
        ValueError: If ``name`` is empty or the URL invalid.
        sqlalchemy.exc.SQLAlchemyError: If the database is unreachable.
    """
    return asyncio.run(_create_key(url, name, plans))


def revoke_api_key_sync(url: str, key_id_or_prefix: str) -> bool:
    """Revoke an API key by id or prefix from synchronous code (``voxtutor keys revoke``).

    Args:
        url: Database URL.
        key_id_or_prefix: The key's id or 8-character prefix.

    Returns:
        ``True`` if a key was revoked, ``False`` if none matched or it already was.

    Raises:
        ValueError: If the prefix is ambiguous or the URL invalid.
        sqlalchemy.exc.SQLAlchemyError: If the database is unreachable.
    """
    return asyncio.run(_revoke_key(url, key_id_or_prefix))
