"""Alembic environment: async engines (``sqlite+aiosqlite``, ``postgresql+asyncpg``).

Two ways in:

* Programmatically (:func:`store.migrate`): the caller opens an async connection and runs
  ``alembic.command.upgrade`` inside ``AsyncConnection.run_sync``, passing the sync connection
  in ``config.attributes["connection"]``; migrations run on it directly.
* The ``alembic`` command line (``alembic upgrade head`` from the repository root): the URL is
  ``$DATABASE_URL``, else ``sqlalchemy.url`` from ``alembic.ini``, else the default SQLite
  file under ``$VOXTUTOR_HOME``; an async engine is created and driven with ``asyncio.run``
  (Alembic's documented async template).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from config.database import default_database_url, normalize_url
from config.settings import Settings
from store.db import create_engine
from store.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    """``DATABASE_URL``, else alembic.ini's ``sqlalchemy.url``, else the embedded SQLite file."""
    settings = Settings()
    url = settings.database_url or config.get_main_option("sqlalchemy.url")
    return normalize_url(url) if url else default_database_url(settings.home)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
    )


def run_migrations_offline() -> None:
    """Emit the migration SQL for the configured URL without connecting (``--sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the pending migrations on a sync connection (inside ``run_sync``).

    On SQLite, batch mode rebuilds a table to change a constraint (copy, drop, rename); with
    foreign keys on, dropping the old ``learners`` would cascade and delete every session.
    So foreign keys are off while migrations run (the pragma only takes effect outside a
    transaction, where a run starts: nothing has written yet) and every reference is checked
    before the run commits (https://www.sqlite.org/lang_altertable.html#otheralter). The
    caller turns them on again after the commit (:func:`store.db.migrate_engine`).

    Raises:
        RuntimeError: SQLite's foreign keys could not be turned off (a transaction was
            open), or a migration left a dangling reference.
    """
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        if connection.exec_driver_sql("PRAGMA foreign_keys").scalar():
            raise RuntimeError("SQLite foreign keys are still on: migrate outside a transaction")
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()
        if sqlite and (bad := connection.exec_driver_sql("PRAGMA foreign_key_check").first()):
            raise RuntimeError(f"a migration left a dangling reference: {tuple(bad)}")


async def run_async_migrations() -> None:
    """Create an async engine for the configured URL and run the migrations on it."""
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Run migrations on the caller's connection, or on a new async engine."""
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
