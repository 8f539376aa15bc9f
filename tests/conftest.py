"""Shared fixtures: real test recordings from registry packages, databases, the API harness."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from testkit.audio import LIBRIVOX, librivox_transcripts

# Sessions the tests start talk to fake or small LLMs: they must not also load the real
# model in-process for the assessment scorers (seconds of CPU per turn, skewing timings).
# The tests of the scorers turn them on explicitly: Settings(assessment_scorer=True).
os.environ.setdefault("VOXTUTOR_ASSESSMENT_SCORER", "false")
# The API tests start many stand-in local sessions against fake LLMs; the local-server cap
# has tests of its own (tests/api/test_launch.py), which set it explicitly.
os.environ.setdefault("VOXTUTOR_MAX_LOCAL_SESSIONS", "64")
# The tests' browsers and peers are on loopback (tests/api/test_webrtc_hardening.py turns it off).
os.environ.setdefault("VOXTUTOR_WEBRTC_PRIVATE_CANDIDATES", "true")

if TYPE_CHECKING:
    from testkit.api_support import Api

PG_ADMIN_DSN = os.environ.get(
    "VOXTUTOR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""A PostgreSQL role that may CREATE DATABASE; each test gets a fresh database from it."""

PROVIDER_KEYS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "DEEPGRAM_API_KEY",
    "CARTESIA_API_KEY",
    "DAILY_API_KEY",
)


@pytest.fixture(autouse=True)
def _no_real_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a developer's real provider keys; those that need keys set fakes'."""
    for name in PROVIDER_KEYS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def librivox() -> dict[Path, str]:
    """Real English speech: path → known transcript. Installed by .ci/run (apt)."""
    if not (LIBRIVOX / "transcription").is_file():
        pytest.fail(
            "test audio missing: install the Debian package pocketsphinx-testdata "
            "(scripts/setup.sh does)"
        )
    return {LIBRIVOX / f"{k}.wav": v for k, v in librivox_transcripts().items()}


@contextlib.asynccontextmanager
async def fresh_postgres(prefix: str = "voxtutor_test") -> AsyncIterator[str]:
    """A new, empty PostgreSQL database ``<prefix>_<hex>``; yields its SQLAlchemy URL.

    Dropped at the end. Fails the test (no skip) when PostgreSQL is unreachable.
    """
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        pytest.fail(
            f"PostgreSQL is unreachable at {PG_ADMIN_DSN} ({e!r}). The store suite runs against "
            "SQLite and PostgreSQL: start PostgreSQL or point VOXTUTOR_TEST_PG_DSN at one "
            "(a role that may CREATE DATABASE).",
            pytrace=False,
        )
    name = f"{prefix}_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(PG_ADMIN_DSN).set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated-nothing, empty database URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'voxtutor.db'}"
        return
    async with fresh_postgres() as url:
        yield url


# -- the HTTP API (tests/api/; helpers in testkit/api_support.py) ---------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite file database."""
    return f"sqlite+aiosqlite:///{tmp_path / 'voxtutor.db'}"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The running API with a fake supervisor and keys A and B, on SQLite and PostgreSQL."""
    from testkit.api_support import make_api

    async for a in make_api(db_url, tmp_path):
        yield a


@pytest.fixture
async def lite(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The same on SQLite only, for tests about the HTTP layer rather than the database."""
    from testkit.api_support import make_api

    async for a in make_api(sqlite_url, tmp_path):
        yield a


@pytest.fixture
def llm_stub() -> Iterator[str]:
    """The base URL (``…/v1``) of a real HTTP server answering ``GET /v1/models``."""
    from testkit.api_support import serve_llm_stub

    with serve_llm_stub() as url:
        yield url
