"""ORM models: API keys, learners, tutoring sessions, turns, usage and session events.

The schema is portable between SQLite and PostgreSQL (``String``, ``Integer``, ``Float``,
``Boolean``, ``JSON``, ``DateTime(timezone=True)``). Every timestamp is timezone-aware UTC in
Python; SQLite stores it as naive UTC text and :class:`UTCDateTime` re-attaches the zone.

The Alembic migrations (``store/migrations/versions/``: ``0001_initial.py``, then
``0002_session_events.py``, ``0003_assessments.py``, ``0004_learner_memory.py``,
``0005_plans.py``, ``0006_phone_identity.py``, ``0007_billing.py``,
``0008_usage_write_id.py``) create exactly these tables; a change here needs a new migration.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

TARGET_LANGUAGES = ("en", "de", "cs")
CEFR_LEVELS = ("A1", "A2", "B1", "B2", "C1", "C2")
SESSION_STATUSES = ("starting", "ready", "active", "ended", "failed")
TERMINAL_STATUSES = ("ended", "failed")
LIVE_STATUSES = ("starting", "ready", "active")
TURN_ROLES = ("learner", "bot")
USAGE_SERVICES = ("stt", "llm", "tts")
ACS_GRADES = ("satisfactory", "probe", "unsatisfactory")
SESSION_MODES = ("conversation", "review")
REVIEW_KINDS = ("gec", "word", "acs")
REPORT_STATUSES = ("pending", "running", "done", "failed")
LEVEL_SOURCES = ("created", "set", "estimate")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names, identical on both backends (Alembic can address them)."""


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def new_id() -> str:
    """Return a new random UUID4 as its 36-character string."""
    return str(uuid.uuid4())


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always round-trips aware UTC datetimes.

    PostgreSQL stores ``timestamptz``; SQLite has no zone support, so values are stored as
    naive UTC and the zone is re-attached when read.

    Raises:
        ValueError: When binding a naive datetime (its zone would be a guess).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive UTC for SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return the stored value as an aware UTC datetime."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the voxtutor schema."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiKey(Base):
    """An API key; only its SHA-256 hash and an 8-character display prefix are stored.

    ``plans``: the plans (``config/plans.yaml``) the key may put its learners on,
    comma-separated, or ``*`` for all (keys made before plans existed).
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(8), index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    plans: Mapped[str] = mapped_column(String(500), default="free")


class Learner(Base):
    """A learner, owned by the API key that created it.

    ``plan`` says which tiers and monthly limits they get; ``quota_version`` is bumped by every
    session start, which makes starts for one learner take turns (the row lock) so their quota
    reservations cannot race. ``erased``: the key's one placeholder that holds the content-free
    sessions of erased learners, so their usage still counts (``store.erasure``); never listed.
    """

    __tablename__ = "learners"
    __table_args__ = (
        CheckConstraint(_in("target_language", TARGET_LANGUAGES), name="target_language"),
        UniqueConstraint("owner_key_id", "phone"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    target_language: Mapped[str] = mapped_column(String(2))
    cefr_level: Mapped[str] = mapped_column(String(2))
    interests: Mapped[list[str]] = mapped_column(JSON, default=list)
    phone: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    phone_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    plan: Mapped[str] = mapped_column(String(32), default="free")
    quota_version: Mapped[int] = mapped_column(Integer, default=0)
    erased: Mapped[bool] = mapped_column(Boolean, default=False)
    # Billing (store.billing): the learner's Stripe customer and subscription, who set the plan
    # ("key", "stripe" while a subscription holds it, "revoked" once Stripe took it back) and
    # the `created` time of the last Stripe event applied (an older one changes nothing).
    stripe_customer_id: Mapped[str | None] = mapped_column(
        String(255), unique=True, index=True, default=None
    )
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), default=None)
    plan_source: Mapped[str] = mapped_column(String(16), default="key")
    billing_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class TutorSession(Base):
    """One tutoring session (a call or a browser conversation).

    ``tts_reserved``: the TTS characters the session was granted at its start (of the
    learner's monthly allowance); a live session counts with it, an ended one with its usage.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint(_in("status", SESSION_STATUSES), name="status"),
        Index("ix_sessions_owner_key_id_created_at", "owner_key_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    learner_id: Mapped[str] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    owner_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    persona: Mapped[str] = mapped_column(String(100))
    tier: Mapped[str] = mapped_column(String(50))
    transport: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(16), default="starting", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    end_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    token_hash: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16), default="conversation")
    tts_reserved: Mapped[int | None] = mapped_column(Integer, default=None)


class Turn(Base):
    """One completed learner or bot turn, written as soon as it completes."""

    __tablename__ = "turns"
    __table_args__ = (
        UniqueConstraint("session_id", "index"),
        CheckConstraint(_in("role", TURN_ROLES), name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    start_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    end_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    ttfb_ms: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UsageEvent(Base):
    """A metered quantity (characters, tokens, audio seconds) used by one service.

    ``write_id``: the relayed write's id, unique, so a write retried from the server's
    outbox (:mod:`runtime.outbox`) after its answer was lost is not counted twice.
    """

    __tablename__ = "usage_events"
    __table_args__ = (CheckConstraint(_in("service", USAGE_SERVICES), name="service"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    service: Mapped[str] = mapped_column(String(8))
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(50))
    quantity: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    write_id: Mapped[str | None] = mapped_column(String(36), unique=True, default=None)


class SessionEvent(Base):
    """Something that happened in a session worth keeping, e.g. a provider switch.

    ``kind`` names it (``provider_switch``); ``data`` holds its details as JSON (for a switch:
    ``role``, ``from``, ``to``, ``reason``). Never secrets.
    """

    __tablename__ = "session_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(50))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Mistake(Base):
    """One error a tutor found in a learner's sentence, checked before it was spoken.

    ``turn_index`` is the learner turn's index in the session (``None`` when the turn was
    not recorded, e.g. the session ended first); ``spoken`` marks the one correction the
    tutor said aloud (at most one per turn).
    """

    __tablename__ = "mistakes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    turn_index: Mapped[int | None] = mapped_column(Integer, default=None)
    sentence: Mapped[str] = mapped_column(Text)
    corrected_sentence: Mapped[str] = mapped_column(Text)
    original: Mapped[str] = mapped_column(String(500))
    corrected: Mapped[str] = mapped_column(String(500))
    rule: Mapped[str] = mapped_column(String(500))
    category: Mapped[str] = mapped_column(String(20), index=True)
    spoken: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AcsResult(Base):
    """The examiner's grade of one answer to an ACS question bank question."""

    __tablename__ = "acs_results"
    __table_args__ = (CheckConstraint(_in("grade", ACS_GRADES), name="grade"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    turn_index: Mapped[int | None] = mapped_column(Integer, default=None)
    answer: Mapped[str] = mapped_column(Text)
    question_id: Mapped[str] = mapped_column(String(30))
    task: Mapped[str] = mapped_column(String(20), index=True)
    grade: Mapped[str] = mapped_column(String(16))
    missing: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LearnerLevel(Base):
    """One entry of a learner's CEFR level history: set by the learner or app, or estimated.

    ``evidence`` says why (for an estimate: learner turns, errors per turn, words per turn and
    the sessions it was read from).
    """

    __tablename__ = "learner_levels"
    __table_args__ = (
        CheckConstraint(_in("source", LEVEL_SOURCES), name="source"),
        CheckConstraint(_in("cefr_level", CEFR_LEVELS), name="cefr_level"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    learner_id: Mapped[str] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    cefr_level: Mapped[str] = mapped_column(String(2))
    source: Mapped[str] = mapped_column(String(10))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReviewItem(Base):
    """Something a learner got wrong, scheduled for review with FSRS.

    ``kind``: ``gec`` (a grammar mistake: ``prompt`` is the sentence as said, ``answer`` the
    corrected one, ``original``/``corrected`` the span), ``word`` (a vocabulary mistake, the
    word the tutor taught), ``acs`` (an ACS question answered unsatisfactorily: ``prompt`` is
    the question, ``answer`` its reference). ``key`` makes one item per learner and mistake:
    the same mistake again lapses the item instead of adding one. ``card`` is the FSRS card
    (``fsrs.Card.to_dict()``); ``review_logs`` keep every rating, so SM-2 can be computed too.
    """

    __tablename__ = "review_items"
    __table_args__ = (
        UniqueConstraint("learner_id", "key"),
        CheckConstraint(_in("kind", REVIEW_KINDS), name="kind"),
        Index("ix_review_items_learner_id_due", "learner_id", "due"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    learner_id: Mapped[str] = mapped_column(ForeignKey("learners.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    key: Mapped[str] = mapped_column(String(600))
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    original: Mapped[str] = mapped_column(String(500), default="")
    corrected: Mapped[str] = mapped_column(String(500), default="")
    rule: Mapped[str] = mapped_column(String(500), default="")
    category: Mapped[str] = mapped_column(String(20), default="other")
    source_session_id: Mapped[str | None] = mapped_column(String(36), default=None)
    card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    due: Mapped[datetime] = mapped_column(UTCDateTime())
    reps: Mapped[int] = mapped_column(Integer, default=0)
    lapses: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReviewLog(Base):
    """One rating of a review item (FSRS ``Rating``: 1 again, 2 hard, 3 good, 4 easy).

    ``source``: ``review`` (answered in a review session), ``repeat`` (the mistake was made
    again in a conversation), ``recall`` (an ACS question answered satisfactorily later).
    """

    __tablename__ = "review_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(
        ForeignKey("review_items.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[str | None] = mapped_column(String(36), default=None)
    rating: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(10))
    answer: Mapped[str] = mapped_column(Text, default="")
    due_before: Mapped[datetime] = mapped_column(UTCDateTime())
    due_after: Mapped[datetime] = mapped_column(UTCDateTime())
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SessionReport(Base):
    """A session's report and the durable job that writes it.

    A row is added ``pending`` in the transaction that ends the session; a worker claims it
    (``running``, ``owner``, ``lease_until``), and only that claim may finish it (``done``,
    ``report``). A claim whose lease ran out (the worker died) is taken again; after
    ``attempts`` reach the limit the job is ``failed`` with its ``error``.
    """

    __tablename__ = "session_reports"
    __table_args__ = (CheckConstraint(_in("status", REPORT_STATUSES), name="status"),)

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(10), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class PhoneVerification(Base):
    """A code called to a phone number, which the learner enters to make the number theirs.

    ``code_hash``: SHA-256 of the learner id and the code (the code itself is never stored);
    ``attempts``: wrong entries so far; ``call_id``: the carrier's id of the call that read it.
    """

    __tablename__ = "phone_verifications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    learner_id: Mapped[str] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    phone: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    carrier: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[str | None] = mapped_column(String(100), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BillingEvent(Base):
    """A Stripe webhook event the server has handled, once per event id (``store.billing``).

    The primary key makes a replayed event (Stripe redelivers, or two deliveries race) a
    duplicate that is applied zero more times. ``created_at``: the event's own ``created``;
    ``outcome``: what it did (``granted``, ``revoked``, ``linked``, ``stale``, ``unchanged``,
    ``no_learner``). An erased learner's rows keep only the event's id, type and times.
    """

    __tablename__ = "billing_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    learner_id: Mapped[str | None] = mapped_column(
        ForeignKey("learners.id", ondelete="SET NULL"), index=True, default=None
    )
    outcome: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LearnerAccessToken(Base):
    """A short-lived token that lets a learner use their own app (``store.access``).

    Only its SHA-256 ``hash`` is stored; ``expires_at`` ends it, as does erasing the learner.
    """

    __tablename__ = "learner_access_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    learner_id: Mapped[str] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
