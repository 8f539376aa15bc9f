"""What the store returns: small frozen dataclasses (never ORM objects) and its errors.

Callers never hold a database session or trigger a lazy load: every value is read inside
the store's own transaction and copied out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict


class StoreError(Exception):
    """Base class of the store's errors."""


class NotFoundError(StoreError, LookupError):
    """A referenced row (API key, learner, session) does not exist or is not the caller's."""


class ConflictError(StoreError):
    """A write would break a uniqueness rule (e.g. a phone number already in use)."""


class LimitError(StoreError):
    """A write would go over a limit (learners per key)."""


class QuotaExceededError(StoreError):
    """A session start would go over a monthly quota.

    Attributes:
        quota: ``sessions_per_month`` or ``tts_chars_per_month``.
        scope: ``plan`` (over every tier) or ``tier``.
        limit: The quota.
        used: What the learner has used (and reserved) of it this month.
    """

    def __init__(self, quota: str, scope: str, limit: int, used: int):
        super().__init__(f"{quota} of the {scope}: {used} of {limit} used")
        self.quota, self.scope, self.limit, self.used = quota, scope, limit, used


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key, without its secret.

    Attributes:
        id: Key id (UUID string); learners and sessions point at it as their owner.
        name: Human label given at creation.
        prefix: The first 8 characters of the plaintext key, for display and revocation.
        created_at: Creation time (UTC).
        revoked_at: Revocation time (UTC), ``None`` while the key is active.
        plans: The plans the key may put its learners on, comma-separated, or ``*``.
    """

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    plans: str = "free"

    @property
    def active(self) -> bool:
        """Whether the key has not been revoked."""
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class LearnerInfo:
    """A learner.

    Attributes:
        id: Learner id (UUID string).
        owner_key_id: The API key that created (and alone sees) the learner.
        name: Display name.
        target_language: Language being learned: ``en``, ``de`` or ``cs``.
        cefr_level: CEFR level, ``A1`` … ``C2``.
        interests: Topics the tutor can talk about.
        phone: Phone number (E.164 recommended) that identifies the learner on calls.
        created_at: Creation time (UTC).
        plan: The learner's plan (``config/plans.yaml``): tiers and monthly limits.
    """

    id: str
    owner_key_id: str
    name: str
    target_language: str
    cefr_level: str
    interests: tuple[str, ...]
    phone: str | None
    created_at: datetime
    plan: str = "free"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A tutoring session (the browser token's hash is never exposed).

    Attributes:
        id: Session id (UUID string).
        learner_id: The learner being tutored.
        owner_key_id: The API key that started the session.
        persona: Persona id (e.g. ``de_tutor``).
        tier: Service tier (e.g. ``local``).
        transport: Transport (e.g. ``webrtc``, ``twilio``, ``file``).
        status: ``starting``, ``ready``, ``active``, ``ended`` or ``failed``.
        created_at: Creation time (UTC).
        ready_at: When the pipeline became ready (UTC), if it did.
        ended_at: When the session ended or failed (UTC).
        end_reason: Why it ended (free text such as ``hangup`` or an error summary).
        mode: ``conversation``, or ``review`` (the tutor drills due review items).
    """

    id: str
    learner_id: str
    owner_key_id: str
    persona: str
    tier: str
    transport: str
    status: str
    created_at: datetime
    ready_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    mode: str = "conversation"

    @property
    def terminal(self) -> bool:
        """Whether the session has ended or failed (its status can no longer change)."""
        return self.status in ("ended", "failed")


@dataclass(frozen=True, slots=True)
class TurnInfo:
    """A stored turn; the fields of ``observers.turn_recorder.TurnRecord`` plus ``created_at``.

    Attributes:
        index: 0-based position in the session.
        role: ``learner`` or ``bot``.
        text: What was said (bot: what was actually played).
        start_ms: Start of speech, ms since the session started.
        end_ms: End of speech, ms since the session started.
        latency_ms: Bot turns: voice-to-voice latency in ms, else ``None``.
        ttfb_ms: Bot turns: time to first byte per service in ms (``stt``, ``llm``, ``tts``).
        interrupted: Bot turns: the learner barged in.
        created_at: When the turn was written (UTC).
    """

    index: int
    role: str
    text: str
    start_ms: int | None
    end_ms: int | None
    latency_ms: int | None
    ttfb_ms: dict[str, int] = field(hash=False)
    interrupted: bool
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Return the turn in the ``transcript.json`` turn schema (without ``created_at``)."""
        return {
            "index": self.index,
            "role": self.role,
            "text": self.text,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "latency_ms": self.latency_ms,
            "ttfb_ms": dict(self.ttfb_ms),
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True, slots=True)
class UsageEventInfo:
    """A stored usage event.

    Attributes:
        id: Row id.
        session_id: The session that consumed it.
        service: ``stt``, ``llm`` or ``tts``.
        provider: Provider name (e.g. ``local``, ``openai``).
        model: Model name.
        metric: What ``quantity`` counts (``characters``, ``prompt_tokens``, …).
        quantity: The amount.
        created_at: When it was recorded (UTC).
    """

    id: int
    session_id: str
    service: str
    provider: str
    model: str
    metric: str
    quantity: float
    created_at: datetime


class LatencySummary(TypedDict):
    """Voice-to-voice latency over a session's bot turns that have one.

    Attributes:
        turns: How many bot turns carry a latency.
        median_ms: Median latency in ms, ``None`` without turns.
        p95_ms: 95th percentile (``statistics.quantiles(n=20, method="inclusive")``, as the
            benchmarks compute it), ``None`` without turns.
        max_ms: Worst latency in ms, ``None`` without turns.
    """

    turns: int
    median_ms: float | None
    p95_ms: float | None
    max_ms: int | None
