"""Quota refusals: the API answer when a session start would go over a monthly quota.

The check itself is the store's (:meth:`store.Store.reserve_session`: the learner's plan over
every tier, and the tier's own limits, reserved atomically with the session row). The
exchanges-per-session limit and the TTS characters reserved are handed to the session
process (``SessionSpec``), which ends the session politely by voice when one is reached
(:mod:`pipelines.quota`).
"""

from __future__ import annotations

from api.errors import ApiError
from store import QuotaExceededError

WHAT = {"sessions_per_month": "sessions", "tts_chars_per_month": "spoken characters"}


def quota_refusal(e: QuotaExceededError, upgrade_url: str) -> ApiError:
    """The 402 ``quota_exceeded`` answer for ``e``.

    Its body has ``quota``, ``scope`` (``plan`` or ``tier``), ``limit``, ``used`` and
    ``upgrade_url``.
    """
    return ApiError(
        402,
        "quota_exceeded",
        f"the {e.scope}'s {WHAT.get(e.quota, e.quota)} quota is used up "
        f"({e.used} of {e.limit} this month)",
        extra={
            "quota": e.quota,
            "scope": e.scope,
            "limit": e.limit,
            "used": e.used,
            "upgrade_url": upgrade_url,
        },
    )
