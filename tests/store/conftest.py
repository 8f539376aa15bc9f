"""The store tests' fixture: an open store on each database of ``db_url`` (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store import Store


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated, empty store; closed after the test."""
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()
