"""Learner access tokens: what a learner's browser holds instead of the operator's API key.

The operator's API key reads every learner's transcripts, so it must never reach a learner's
browser. The app that owns a learner mints a token for them (:meth:`AccessStore.mint_access`);
the token opens only that learner's own sessions, history and progress, within their plan,
and expires (default 24 h). Only its SHA-256 hash is stored, as for API keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from store.base import StoreBase, hash_secret, learner_info, new_secret, owned_learner
from store.models import ApiKey, Learner, LearnerAccessToken, utcnow
from store.records import LearnerInfo, StoreError

MAX_TTL = timedelta(days=7)
"""The longest a token may live (a link a learner keeps on their phone's home screen)."""


class AccessExpiredError(StoreError):
    """The token was valid once and has expired."""


@dataclass(frozen=True)
class LearnerAccess:
    """A presented token's learner and when the token expires (UTC)."""

    learner: LearnerInfo
    expires_at: datetime


class AccessStore(StoreBase):
    """Minting and checking learner access tokens (mixed into :class:`store.Store`)."""

    async def mint_access(
        self, learner_id: str, owner_key_id: str, ttl: timedelta
    ) -> tuple[str, datetime]:
        """A new token for the learner; returns ``(plaintext, expires_at)`` (shown once).

        Raises:
            NotFoundError: no such learner for this key.
            ValueError: ``ttl`` is not positive or longer than :data:`MAX_TTL`.
        """
        if not timedelta(0) < ttl <= MAX_TTL:
            raise ValueError(f"ttl must be more than 0 and at most {MAX_TTL}")
        token, now = new_secret(), utcnow()
        async with self._tx() as s:
            await owned_learner(s, learner_id, owner_key_id)
            # Expired tokens of this learner are of no use to anyone: drop them here.
            await s.execute(
                delete(LearnerAccessToken).where(
                    LearnerAccessToken.learner_id == learner_id,
                    LearnerAccessToken.expires_at <= now,
                )
            )
            row = LearnerAccessToken(
                learner_id=learner_id, hash=hash_secret(token), expires_at=now + ttl
            )
            s.add(row)
        return token, row.expires_at

    async def learner_access(self, token: str) -> LearnerAccess | None:
        """The learner a token opens, or ``None`` for an unknown or revoked token.

        A token stops working when it expires, when the learner is erased, when it is
        revoked (:meth:`revoke_access`) and when the owning app's API key is revoked.

        Raises:
            AccessExpiredError: The token exists and has expired.
        """
        async with self._tx() as s:
            found = (
                await s.execute(
                    select(LearnerAccessToken, Learner)
                    .join(Learner, Learner.id == LearnerAccessToken.learner_id)
                    .join(ApiKey, ApiKey.id == Learner.owner_key_id)
                    .where(
                        LearnerAccessToken.hash == hash_secret(token),
                        ApiKey.revoked_at.is_(None),  # revoking the app's key ends its links
                    )
                )
            ).first()
            if found is None or found[1].erased:
                return None
            access, learner = found
            if access.expires_at <= utcnow():
                raise AccessExpiredError("this access link has expired")
            return LearnerAccess(learner_info(learner), access.expires_at)

    async def revoke_access(self, learner_id: str, owner_key_id: str) -> int:
        """Revoke every link of the learner (a leaked one, a lost phone); how many there were.

        Raises:
            NotFoundError: no such learner for this key.
        """
        async with self._tx() as s:
            await owned_learner(s, learner_id, owner_key_id)
            done = await s.execute(
                delete(LearnerAccessToken).where(LearnerAccessToken.learner_id == learner_id)
            )
            return int(getattr(done, "rowcount", 0) or 0)
