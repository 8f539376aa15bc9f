"""Request and session-start rate limits per API key and per learner (the ``limits`` library).

Moving windows (https://limits.readthedocs.io/en/stable/strategies.html): requests per API key
(``VOXTUTOR_RATE_LIMIT_PER_KEY``, every ``/api/v1`` call with a key) and session starts per
learner (``VOXTUTOR_SESSION_STARTS_PER_LEARNER``). Counters live in memory by default, or in
Redis when ``VOXTUTOR_LIMITS_URL`` is set (``async+redis://host:6379``), so several server
processes share them. Over a limit the API answers 429 ``rate_limited`` with ``Retry-After``.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from api.errors import ApiError
from config.settings import Settings


class ApiLimits:
    """The server's rate limits.

    Args:
        settings: ``rate_limit_per_key``, ``session_starts_per_learner``,
            ``phone_verify_calls_per_key`` (``limits`` notation, e.g. ``600/minute``) and
            ``limits_url``.

    Raises:
        ValueError: a limit that ``limits`` cannot parse, or an unknown storage URL.
    """

    def __init__(self, settings: Settings):
        storage = storage_from_string(settings.limits_url or "async+memory://")
        self._limiter = MovingWindowRateLimiter(storage)
        self.per_key: RateLimitItem = parse(settings.rate_limit_per_key)
        self.per_learner: RateLimitItem = parse(settings.session_starts_per_learner)
        self.code_calls: RateLimitItem = parse(settings.phone_verify_calls_per_key)

    async def _hit(self, item: RateLimitItem, what: str, who: str) -> None:
        if await self._limiter.hit(item, "voxtutor", what, who):
            return
        stats = await self._limiter.get_window_stats(item, "voxtutor", what, who)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"too many {what} (limit {item}); try again in {retry} s",
            {"Retry-After": str(retry)},
        )

    async def request(self, key_id: str) -> None:
        """Count one request of ``key_id``.

        Raises:
            ApiError: 429 ``rate_limited`` with ``Retry-After`` over the key's limit.
        """
        await self._hit(self.per_key, "requests", key_id)

    async def session_start(self, learner_id: str) -> None:
        """Count one session start of ``learner_id``.

        Raises:
            ApiError: 429 ``rate_limited`` with ``Retry-After`` over the learner's limit.
        """
        await self._hit(self.per_learner, "session starts", learner_id)

    async def code_call(self, key_id: str) -> None:
        """Count one verification call placed for ``key_id``'s learners (each is paid).

        Raises:
            ApiError: 429 ``rate_limited`` with ``Retry-After`` over the key's limit.
        """
        await self._hit(self.code_calls, "verification calls", key_id)
