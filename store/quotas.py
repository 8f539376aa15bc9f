"""Monthly quotas: what a learner has used, and session starts that reserve their share.

A session start (:meth:`QuotaStore.reserve_session`) checks the learner's plan limits (over
every tier) and the tier's own, and inserts the session, in one transaction that first bumps
the learner's ``quota_version``: that row lock makes concurrent starts for one learner take
turns on both SQLite and PostgreSQL, so twenty at once cannot each see the same room. The TTS
characters a session may speak are reserved on its row; a live session counts with its
reservation, an ended one with what it actually spoke (the unused rest is released).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, func, not_, or_, select, update

from store.base import StoreBase, hash_secret, new_secret, session_info
from store.models import (
    LIVE_STATUSES,
    SESSION_MODES,
    ApiKey,
    Learner,
    TutorSession,
    UsageEvent,
)
from store.records import NotFoundError, QuotaExceededError, SessionInfo

NOT_STARTED_PREFIXES = ("rejected", "failed to start")
"""``end_reason`` prefixes of sessions that never ran: they do not count against a quota."""


def month_start(now: datetime | None = None) -> datetime:
    """First instant of ``now``'s calendar month in UTC (quotas reset then)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class MonthlyUsage:
    """A learner's use of one tier since the start of the month (UTC).

    Attributes:
        sessions: Sessions started (those refused or that failed to start are not counted).
        tts_characters: Characters spoken by TTS in those sessions (``usage_events`` rows
            with service ``tts`` and metric ``characters``).
    """

    sessions: int
    tts_characters: int


@dataclass(frozen=True)
class Limits:
    """The monthly limits a session start must respect; ``None`` = unlimited.

    Attributes:
        plan_sessions: Sessions per month over every tier (the learner's plan).
        plan_tts_chars: TTS characters per month over every tier (the plan).
        tier_sessions: Sessions per month on this tier (``config/tiers.yaml``).
        tier_tts_chars: TTS characters per month on this tier.
        session_tts_chars: The most TTS characters one session reserves of what is left, so
            that two sessions at once each get a share, not the first one the whole month.
        key_sessions: Live sessions the learner's API key may have at once.
    """

    plan_sessions: int | None = None
    plan_tts_chars: int | None = None
    tier_sessions: int | None = None
    tier_tts_chars: int | None = None
    session_tts_chars: int | None = None
    key_sessions: int | None = None


def _never_ran() -> ColumnElement[bool]:
    reason = func.coalesce(TutorSession.end_reason, "")
    return and_(
        TutorSession.status == "failed",
        or_(*(reason.startswith(p) for p in NOT_STARTED_PREFIXES)),
    )


class QuotaStore(StoreBase):
    """Quota queries (mixed into :class:`store.Store`)."""

    async def monthly_usage(
        self, learner_id: str, tier: str, now: datetime | None = None
    ) -> MonthlyUsage:
        """Return what ``learner_id`` used of ``tier`` this calendar month (UTC).

        Args:
            learner_id: The learner.
            tier: The tier name; quotas are per tier.
            now: The moment whose month counts (tests pass one; default: now).
        """
        since = month_start(now)
        reason = func.coalesce(TutorSession.end_reason, "")
        never_ran = and_(
            TutorSession.status == "failed",
            or_(*(reason.startswith(p) for p in NOT_STARTED_PREFIXES)),
        )
        mine = and_(
            TutorSession.learner_id == learner_id,
            TutorSession.tier == tier,
            TutorSession.created_at >= since,
        )
        async with self._tx() as s:
            sessions = await s.scalar(
                select(func.count()).select_from(TutorSession).where(mine, not_(never_ran))
            )
            chars = await s.scalar(
                select(func.coalesce(func.sum(UsageEvent.quantity), 0.0))
                .join(TutorSession, TutorSession.id == UsageEvent.session_id)
                .where(
                    mine,
                    UsageEvent.service == "tts",
                    UsageEvent.metric == "characters",
                    UsageEvent.created_at >= since,
                )
            )
        return MonthlyUsage(sessions=int(sessions or 0), tts_characters=int(chars or 0))

    async def plan_usage(self, learner_id: str, now: datetime | None = None) -> tuple[int, int]:
        """``(sessions, tts characters)`` the learner used this month over every tier (UTC).

        What their plan's monthly limits count (live sessions with their reservation).
        """
        async with self._tx() as s:
            return await self._used(s, learner_id, None, month_start(now))

    async def _used(
        self, s: Any, learner_id: str, tier: str | None, since: datetime
    ) -> tuple[int, int]:
        """``(sessions, tts characters)`` used since ``since`` (``tier`` ``None``: every tier).

        Ended sessions count with what TTS spoke, live ones with their reservation.
        """
        mine = [TutorSession.learner_id == learner_id, TutorSession.created_at >= since]
        if tier is not None:
            mine.append(TutorSession.tier == tier)
        live = TutorSession.status.in_(LIVE_STATUSES)
        sessions = await s.scalar(
            select(func.count()).select_from(TutorSession).where(*mine, not_(_never_ran()))
        )
        spoken = await s.scalar(
            select(func.coalesce(func.sum(UsageEvent.quantity), 0.0))
            .join(TutorSession, TutorSession.id == UsageEvent.session_id)
            .where(
                *mine,
                not_(live),
                UsageEvent.service == "tts",
                UsageEvent.metric == "characters",
                UsageEvent.created_at >= since,
            )
        )
        reserved = await s.scalar(
            select(func.coalesce(func.sum(TutorSession.tts_reserved), 0)).where(*mine, live)
        )
        return int(sessions or 0), int(spoken or 0) + int(reserved or 0)

    async def reserve_session(
        self,
        learner_id: str,
        owner_key_id: str,
        persona: str,
        tier: str,
        transport: str,
        limits: Limits,
        mode: str = "conversation",
        now: datetime | None = None,
    ) -> tuple[SessionInfo, str, int | None]:
        """Check the limits and create the session, atomically per learner.

        Args:
            learner_id: The learner (must belong to ``owner_key_id``).
            owner_key_id: The key starting the session.
            persona: Persona id.
            tier: Tier name.
            transport: Transport name.
            limits: The plan's and the tier's monthly limits.
            mode: ``conversation`` or ``review``.
            now: The moment whose month counts (tests pass one).

        Returns:
            The session (``starting``), its browser token, and the TTS characters reserved
            for it (``None``: unlimited).

        Raises:
            QuotaExceededError: a limit is reached (``limit - 1`` used is still allowed).
            NotFoundError: no such learner for this key.
            ValueError: an unknown mode.
        """
        if mode not in SESSION_MODES:
            raise ValueError(f"mode must be one of {SESSION_MODES}, got {mode!r}")
        since = month_start(now)
        token = new_secret()
        async with self._tx() as s:
            bumped = await s.execute(
                update(Learner)
                .where(Learner.id == learner_id, Learner.owner_key_id == owner_key_id)
                .values(quota_version=Learner.quota_version + 1)
            )
            if cast(CursorResult[Any], bumped).rowcount != 1:
                raise NotFoundError(f"no learner {learner_id!r} for this key")
            if limits.key_sessions is not None:
                # The key's row lock makes the starts of all its learners take turns here.
                await s.execute(
                    update(ApiKey).where(ApiKey.id == owner_key_id).values(plans=ApiKey.plans)
                )
                live = await s.scalar(
                    select(func.count())
                    .select_from(TutorSession)
                    .where(
                        TutorSession.owner_key_id == owner_key_id,
                        TutorSession.status.in_(LIVE_STATUSES),
                    )
                )
                if int(live or 0) >= limits.key_sessions:
                    raise QuotaExceededError(
                        "concurrent_sessions", "key", limits.key_sessions, int(live or 0)
                    )
            left: list[int] = []
            for scope, scope_tier, max_sessions, max_chars in (
                ("plan", None, limits.plan_sessions, limits.plan_tts_chars),
                ("tier", tier, limits.tier_sessions, limits.tier_tts_chars),
            ):
                if max_sessions is None and max_chars is None:
                    continue
                sessions, chars = await self._used(s, learner_id, scope_tier, since)
                if max_sessions is not None and sessions >= max_sessions:
                    raise QuotaExceededError("sessions_per_month", scope, max_sessions, sessions)
                if max_chars is not None:
                    if chars >= max_chars:
                        raise QuotaExceededError("tts_chars_per_month", scope, max_chars, chars)
                    left.append(max_chars - chars)
            if left and limits.session_tts_chars is not None:
                left.append(limits.session_tts_chars)
            reserved = min(left) if left else None
            row = TutorSession(
                learner_id=learner_id,
                owner_key_id=owner_key_id,
                persona=persona,
                tier=tier,
                transport=transport,
                status="starting",
                token_hash=hash_secret(token),
                mode=mode,
                tts_reserved=reserved,
            )
            s.add(row)
        return session_info(row), token, reserved
