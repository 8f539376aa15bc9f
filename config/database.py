"""Database URLs: the embedded default (SQLite under the voxtutor home) and async drivers.

The store is SQLite unless ``DATABASE_URL`` names PostgreSQL (:attr:`config.settings.
Settings.store_url`). URLs are written the usual way (``postgresql://…``) and get
SQLAlchemy's async driver here. Import this module only where a URL is made: it imports
SQLAlchemy, which a session process does without.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url


def default_database_url(home: Path | str) -> str:
    """Return the default database URL, ``sqlite+aiosqlite:///<home>/voxtutor.db``.

    Args:
        home: The voxtutor home directory (``VOXTUTOR_HOME``).
    """
    return f"sqlite+aiosqlite:///{Path(home).expanduser().resolve() / 'voxtutor.db'}"


def normalize_url(url: str) -> str:
    """Return ``url`` with an async driver: ``sqlite+aiosqlite`` or ``postgresql+asyncpg``.

    Plain ``sqlite://``, ``postgres://`` and ``postgresql://`` URLs (as ``DATABASE_URL`` is
    usually written) get the async driver; URLs that name a driver are left alone.

    Args:
        url: A SQLAlchemy database URL.

    Raises:
        ValueError: If the URL is malformed or names a backend other than SQLite/PostgreSQL.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    try:
        parsed = make_url(url)
    except Exception as e:  # sqlalchemy.exc.ArgumentError
        raise ValueError(f"invalid database URL: {e}") from e
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)
