"""The async engine (SQLite tuned for a server) and programmatic migrations.

Database URLs are settings: :mod:`config.database` makes and normalises them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from config.database import normalize_url

if TYPE_CHECKING:
    # Imported where used: a session process never migrates, and Alembic costs ~20 MB RSS
    # and ~0.4 s of import.
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""Alembic's script location, resolved from this file so an installed package works too."""

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite connection waits for another writer's lock before ``database is locked``."""


def _is_memory(database: str | None) -> bool:
    return not database or database == ":memory:" or database.startswith("file::memory:")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL + NORMAL: a commit survives a process crash (not necessarily a power loss)
        # without an fsync per commit, i.e. per turn.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create an async engine; SQLite gets WAL, foreign keys and a busy timeout.

    For a SQLite file the parent directory is created. In-memory SQLite uses a single shared
    connection (each connection would otherwise see its own empty database).

    Args:
        url: Database URL (normalised with :func:`normalize_url`).
        **kwargs: Passed to :func:`sqlalchemy.ext.asyncio.create_async_engine`.

    Raises:
        ValueError: If the URL is invalid or the backend unsupported.
    """
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(parsed, **kwargs)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
    if _is_memory(parsed.database):
        kwargs.setdefault("poolclass", StaticPool)
    else:
        Path(str(parsed.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(parsed, connect_args=connect_args, **kwargs)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def alembic_config() -> Config:
    """Return an Alembic config built in code, pointing at ``store/migrations``.

    It needs no ``alembic.ini``, so migrations run from an installed package.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def _upgrade(connection: Connection, cfg: Config, revision: str) -> None:
    from alembic import command

    cfg.attributes["connection"] = connection  # env.py runs on this connection
    command.upgrade(cfg, revision)


async def migrate_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Run ``alembic upgrade <revision>`` on an existing engine (a no-op when up to date).

    Args:
        engine: The engine to migrate.
        revision: Target revision.

    Raises:
        alembic.util.CommandError: If the revision is unknown.
        sqlalchemy.exc.SQLAlchemyError: If the database rejects a migration.
    """
    async with engine.connect() as conn:
        try:
            await conn.run_sync(_upgrade, alembic_config(), revision)
            await conn.commit()
        finally:
            if engine.dialect.name == "sqlite":
                # Migrations run with foreign keys off (store/migrations/env.py); this pooled
                # connection gets them back before anyone else uses it, even after a failure.
                await conn.rollback()
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")


async def migrate(url: str) -> None:
    """Run ``alembic upgrade head`` on the database at ``url`` (a no-op when up to date).

    Args:
        url: Database URL (``sqlite+aiosqlite://…``, ``postgresql+asyncpg://…``, or a plain
            ``sqlite://``/``postgresql://`` URL, normalised to its async driver).

    Raises:
        ValueError: If the URL is invalid or the backend unsupported.
        sqlalchemy.exc.SQLAlchemyError: If the database is unreachable or rejects a migration.
    """
    engine = create_engine(url)
    try:
        await migrate_engine(engine)
    finally:
        await engine.dispose()
