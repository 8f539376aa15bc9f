"""API keys and learners: who may call the API, and whom it tutors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from store.base import (
    PREFIX_LEN,
    StoreBase,
    hash_secret,
    key_info,
    learner_info,
    new_secret,
    secret_matches,
)
from store.models import (
    CEFR_LEVELS,
    LIVE_STATUSES,
    TARGET_LANGUAGES,
    ApiKey,
    Learner,
    LearnerLevel,
    TutorSession,
    utcnow,
)
from store.records import ApiKeyInfo, ConflictError, LearnerInfo, LimitError, NotFoundError


def non_empty(value: str, what: str) -> str:
    """Return ``value`` stripped.

    Raises:
        ValueError: If nothing is left.
    """
    value = value.strip()
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


class AccountStore(StoreBase):
    """API-key and learner persistence (mixed into :class:`store.Store`)."""

    # -- API keys -------------------------------------------------------------------------

    async def create_api_key(self, name: str, plans: str = "free") -> tuple[ApiKeyInfo, str]:
        """Create an API key; only its hash and 8-character prefix are stored.

        Args:
            name: Human label (e.g. the client's name).
            plans: The plans the key may put its learners on, comma-separated, or ``*``.

        Returns:
            The key's record and its plaintext, which is shown once and cannot be recovered.

        Raises:
            ValueError: If ``name`` is empty.
        """
        name = non_empty(name, "key name")
        plaintext = new_secret()
        plans = ",".join(p.strip() for p in plans.split(",") if p.strip()) or "free"
        row = ApiKey(
            name=name, prefix=plaintext[:PREFIX_LEN], hash=hash_secret(plaintext), plans=plans
        )
        async with self._tx() as s:
            s.add(row)
        return key_info(row), plaintext

    async def revoke_api_key(self, key_id_or_prefix: str) -> bool:
        """Revoke a key by its id or its 8-character prefix.

        Args:
            key_id_or_prefix: The key's id or display prefix.

        Returns:
            ``True`` if a key was revoked now; ``False`` if none matched or it already was.

        Raises:
            ValueError: If the prefix matches several keys (use the id).
        """
        ident = key_id_or_prefix.strip()
        async with self._tx() as s:
            match = or_(ApiKey.id == ident, ApiKey.prefix == ident)
            ids = list(await s.scalars(select(ApiKey.id).where(match)))
            if len(ids) > 1:
                raise ValueError(f"{ident!r} matches {len(ids)} keys; revoke by id")
            if not ids:
                return False
            result = await s.execute(
                update(ApiKey)
                .where(ApiKey.id == ids[0], ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return cast(CursorResult[Any], result).rowcount == 1

    async def authenticate(self, plaintext: str) -> ApiKeyInfo | None:
        """Return the active key whose plaintext this is, else ``None`` (unknown or revoked).

        Args:
            plaintext: The key as presented by the client.
        """
        if len(plaintext) < PREFIX_LEN:
            return None
        async with self._tx() as s:
            rows = await s.scalars(select(ApiKey).where(ApiKey.prefix == plaintext[:PREFIX_LEN]))
            for row in rows:
                if secret_matches(plaintext, row.hash) and row.revoked_at is None:
                    return key_info(row)
        return None

    async def live_sessions_of_revoked_keys(self) -> list[str]:
        """Ids of the live sessions (``starting``, ``ready``, ``active``) of revoked keys."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(TutorSession.id)
                .join(ApiKey, ApiKey.id == TutorSession.owner_key_id)
                .where(ApiKey.revoked_at.is_not(None), TutorSession.status.in_(LIVE_STATUSES))
            )
            return list(rows)

    async def list_api_keys(self, *, include_revoked: bool = True) -> list[ApiKeyInfo]:
        """Return the API keys, oldest first.

        Args:
            include_revoked: Also list revoked keys.
        """
        stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        async with self._tx() as s:
            return [key_info(r) for r in await s.scalars(stmt)]

    # -- learners -------------------------------------------------------------------------

    async def create_learner(
        self,
        owner_key_id: str,
        name: str,
        target_language: str,
        cefr_level: str = "A2",
        interests: Iterable[str] = (),
        phone: str | None = None,
        plan: str = "free",
        max_per_key: int | None = None,
    ) -> LearnerInfo:
        """Create a learner owned by an API key.

        Args:
            owner_key_id: The owning key's id.
            name: Display name.
            target_language: ``en``, ``de`` or ``cs``.
            cefr_level: ``A1`` … ``C2`` (case-insensitive).
            interests: Topics for conversation.
            phone: A number the caller id itself proves (the guest of an unknown caller);
                stored as verified. A learner's own number is proved with a code
                (:mod:`store.phone_identity`). Unique per key; blank → ``None``.
            plan: The learner's plan (``config/plans.yaml``; the caller checks the key may
                grant it).
            max_per_key: Refuse when the key already has this many learners.

        Raises:
            LimitError: the key has ``max_per_key`` learners already.
            ValueError: If a field is invalid.
            NotFoundError: If the owner key does not exist.
            ConflictError: If the phone number belongs to another learner of the key.
        """
        name = non_empty(name, "learner name")
        if target_language not in TARGET_LANGUAGES:
            raise ValueError(f"target_language must be one of {TARGET_LANGUAGES}")
        level = cefr_level.strip().upper()
        if level not in CEFR_LEVELS:
            raise ValueError(f"cefr_level must be one of {CEFR_LEVELS}, got {cefr_level!r}")
        topics = [t.strip() for t in interests if t.strip()]
        phone = (phone or "").strip() or None
        row = Learner(
            owner_key_id=owner_key_id,
            name=name,
            target_language=target_language,
            cefr_level=level,
            interests=topics,
            phone=phone,
            phone_verified_at=utcnow() if phone else None,
            plan=plan,
        )
        try:
            async with self._tx() as s:
                key = await s.get(ApiKey, owner_key_id)
                if key is None:
                    raise NotFoundError(f"no API key {owner_key_id!r}")
                if max_per_key is not None:
                    # The key's row lock (the UPDATE) makes concurrent creations take turns.
                    await s.execute(
                        update(ApiKey).where(ApiKey.id == owner_key_id).values(plans=ApiKey.plans)
                    )
                    have = await s.scalar(
                        select(func.count())
                        .select_from(Learner)
                        .where(Learner.owner_key_id == owner_key_id, Learner.erased.is_(False))
                    )
                    if int(have or 0) >= max_per_key:
                        raise LimitError(f"this key has {have} learners, its limit")
                s.add(row)
                await s.flush()
                s.add(LearnerLevel(learner_id=row.id, cefr_level=level, source="created"))
        except IntegrityError as e:
            raise ConflictError(f"phone number {phone!r} is already in use") from e
        return learner_info(row)

    async def get_learner(
        self, learner_id: str, owner_key_id: str | None = None
    ) -> LearnerInfo | None:
        """Return a learner, or ``None`` if unknown or not owned by ``owner_key_id``.

        Args:
            learner_id: The learner.
            owner_key_id: If given, the key that must own the learner.
        """
        async with self._tx() as s:
            row = await s.get(Learner, learner_id)
            if (
                row is None
                or row.erased
                or (owner_key_id is not None and row.owner_key_id != owner_key_id)
            ):
                return None
            return learner_info(row)

    async def find_learner_by_phone(self, phone: str) -> LearnerInfo | None:
        """Return the learner whose verified number this is (inbound calls), or ``None``.

        Numbers are unique per key, so learners of several keys may have proved the same
        number (one person using several apps): the latest proof wins.

        Args:
            phone: The number, as stored.
        """
        async with self._tx() as s:
            row = await s.scalar(
                select(Learner)
                .where(
                    Learner.phone == phone.strip(),
                    Learner.phone_verified_at.is_not(None),
                    Learner.erased.is_(False),
                )
                .order_by(Learner.phone_verified_at.desc(), Learner.id)
                .limit(1)
            )
            return learner_info(row) if row is not None else None

    async def list_learners(self, owner_key_id: str) -> list[LearnerInfo]:
        """Return a key's learners, oldest first.

        Args:
            owner_key_id: The owning key.
        """
        async with self._tx() as s:
            rows = await s.scalars(
                select(Learner)
                .where(Learner.owner_key_id == owner_key_id, Learner.erased.is_(False))
                .order_by(Learner.created_at, Learner.id)
            )
            return [learner_info(r) for r in rows]
