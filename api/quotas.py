"""Tier quotas checked when a session is created: hard limits, enforced on the server.

Sessions per month and TTS characters per month are checked here, before anything starts;
the exchanges-per-session limit and the TTS characters left are handed to the session
process (``SessionSpec``), which ends the session politely by voice when one is reached
(:mod:`pipelines.quota`).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.errors import ApiError
from config.tiers import Tier
from store import Store


@dataclass(frozen=True)
class QuotaGrant:
    """What a new session may still use.

    Attributes:
        exchanges: Learner turns the session may answer, or ``None`` (unlimited).
        tts_characters: Characters TTS may still speak this month, or ``None`` (unlimited).
    """

    exchanges: int | None
    tts_characters: int | None


def _refuse(quota: str, limit: int, used: int, what: str, upgrade_url: str) -> ApiError:
    return ApiError(
        402,
        "quota_exceeded",
        f"the tier's {what} quota is used up ({used} of {limit} this month)",
        extra={"quota": quota, "limit": limit, "used": used, "upgrade_url": upgrade_url},
    )


async def check_quotas(store: Store, tier: Tier, learner_id: str, upgrade_url: str) -> QuotaGrant:
    """Refuse a session the learner's monthly quotas do not allow; else say what is left.

    ``limit - 1`` sessions used → allowed (it becomes the ``limit``-th); ``limit`` used →
    refused. The same holds for TTS characters (refused once ``used >= limit``).

    Raises:
        ApiError: 402 ``quota_exceeded`` with ``quota``, ``limit``, ``used``, ``upgrade_url``.
    """
    q = tier.quotas
    if q.sessions_per_month is None and q.tts_chars_per_month is None:
        return QuotaGrant(exchanges=q.exchanges_per_session, tts_characters=None)
    used = await store.monthly_usage(learner_id, tier.name)
    if q.sessions_per_month is not None and used.sessions >= q.sessions_per_month:
        raise _refuse(
            "sessions_per_month", q.sessions_per_month, used.sessions, "sessions", upgrade_url
        )
    left = None
    if q.tts_chars_per_month is not None:
        if used.tts_characters >= q.tts_chars_per_month:
            raise _refuse(
                "tts_chars_per_month",
                q.tts_chars_per_month,
                used.tts_characters,
                "spoken characters",
                upgrade_url,
            )
        left = q.tts_chars_per_month - used.tts_characters
    return QuotaGrant(exchanges=q.exchanges_per_session, tts_characters=left)
