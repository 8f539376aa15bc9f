"""What a learner has used of a tier's monthly quotas (sessions started, TTS characters)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, func, not_, or_, select

from store.base import StoreBase
from store.models import TutorSession, UsageEvent

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
