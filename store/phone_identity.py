"""Phone identity: a number becomes a learner's only after a code called to it is entered.

Anyone could type a victim's number into an app; if that alone made the number the learner's,
the victim's calls (and their transcripts) would land with whoever typed it. So a number is
proved the way banks prove one: the server calls it and a voice reads a one-time code
(:mod:`api.phone_code_call`), and the learner enters the code in the app. Only the person who
answers that phone hears the code, so a spoofed caller id cannot prove it (a keypad PIN on an
inbound call could be entered from a spoofed number).

Rules: codes are 6 digits, stored only as a SHA-256 hash with the learner id, valid
:data:`CODE_TTL_S` seconds and for :data:`MAX_ATTEMPTS` wrong entries; a new code for a
learner replaces the old one and is refused within :data:`RESEND_AFTER_S` of it (each is a
paid call). A number is unique per API key: when a learner proves a number another learner
of the same key holds, the number moves to the one who proved it. Every failure is the same
:class:`InvalidCodeError`, so nobody learns whether a number is known.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, select, update

from store.base import StoreBase, learner_info, owned_learner
from store.models import Learner, PhoneVerification, utcnow
from store.records import LearnerInfo, NotFoundError, StoreError

CODE_DIGITS = 6
CODE_TTL_S = 600
"""How long a code stays valid, seconds (10 minutes)."""
MAX_ATTEMPTS = 5
"""Wrong entries after which a code is spent (10^6 codes: a guess succeeds 5 in a million)."""
RESEND_AFTER_S = 60
"""The least time between two codes for one learner, seconds (each code is a paid call)."""


class InvalidCodeError(StoreError):
    """The code is wrong, expired, spent, or there is none; deliberately one error for all."""


class TooSoonError(StoreError):
    """A code was called to this learner less than :data:`RESEND_AFTER_S` seconds ago.

    Attributes:
        retry_after_s: Seconds until a new one may be asked for.
    """

    def __init__(self, retry_after_s: int):
        super().__init__(f"a code was sent less than {RESEND_AFTER_S} s ago")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PendingCode:
    """A code to call to a number.

    Attributes:
        id: The verification's id (to record the call's id on it).
        phone: The number to call (E.164).
        code: The code, digits only; only the call hears it, only its hash is stored.
        expires_at: When it stops being accepted (UTC).
    """

    id: str
    phone: str
    code: str
    expires_at: datetime


def _owned(learner_id: str, owner_key_id: str) -> ColumnElement[bool]:
    """The learner, if ``owner_key_id`` owns it and it is not erased."""
    return and_(
        Learner.id == learner_id,
        Learner.owner_key_id == owner_key_id,
        Learner.erased.is_(False),
    )


def _hash(learner_id: str, code: str) -> str:
    return hashlib.sha256(f"{learner_id}:{code}".encode()).hexdigest()


class PhoneIdentityStore(StoreBase):
    """Phone verification (mixed into :class:`store.Store`)."""

    async def start_phone_verification(
        self, learner_id: str, owner_key_id: str, phone: str, carrier: str
    ) -> PendingCode:
        """Make a new code for ``phone``, replacing the learner's earlier one.

        Args:
            learner_id: The learner proving the number.
            owner_key_id: The key that must own the learner.
            phone: The number (E.164), as the caller gave it.
            carrier: ``twilio`` or ``telnyx``: who will place the call.

        Raises:
            NotFoundError: No such learner for this key.
            TooSoonError: The previous code is less than :data:`RESEND_AFTER_S` old.
        """
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        now = utcnow()
        async with self._tx() as s:
            # The learner's row lock makes two requests for one learner take turns.
            found = await s.execute(
                update(Learner)
                .where(_owned(learner_id, owner_key_id))
                .values(quota_version=Learner.quota_version)
            )
            if not getattr(found, "rowcount", 0):
                raise NotFoundError(f"no learner {learner_id!r}")
            last = await s.scalar(
                select(PhoneVerification.created_at)
                .where(PhoneVerification.learner_id == learner_id)
                .order_by(PhoneVerification.created_at.desc())
                .limit(1)
            )
            if last is not None and (age := (now - last).total_seconds()) < RESEND_AFTER_S:
                raise TooSoonError(int(RESEND_AFTER_S - age) + 1)
            await s.execute(
                delete(PhoneVerification).where(PhoneVerification.learner_id == learner_id)
            )
            row = PhoneVerification(
                learner_id=learner_id,
                phone=phone.strip(),
                code_hash=_hash(learner_id, code),
                carrier=carrier,
                created_at=now,
                expires_at=now + timedelta(seconds=CODE_TTL_S),
            )
            s.add(row)
            await s.flush()
            return PendingCode(row.id, row.phone, code, row.expires_at)

    async def record_code_call(self, verification_id: str, call_id: str | None) -> None:
        """Note the carrier's id of the call reading the code; ``None``: the call failed.

        A failed call's code is removed (it reached nobody) and does not hold back a retry.
        """
        async with self._tx() as s:
            if call_id is None:
                await s.execute(
                    delete(PhoneVerification).where(PhoneVerification.id == verification_id)
                )
            else:
                await s.execute(
                    update(PhoneVerification)
                    .where(PhoneVerification.id == verification_id)
                    .values(call_id=call_id[:100])
                )

    async def verify_phone(self, learner_id: str, owner_key_id: str, code: str) -> LearnerInfo:
        """Check ``code``; if right, the number becomes the learner's.

        The learner of the same key who held the number loses it (the proof wins).

        Raises:
            InvalidCodeError: Wrong, expired or spent code, or none.
            NotFoundError: No such learner for this key.
        """
        now = utcnow()
        async with self._tx() as s:
            row = await owned_learner(s, learner_id, owner_key_id, lock=True)
            # Every entry spends an attempt first, in one UPDATE: concurrent guesses each
            # count (and take the write lock, on SQLite too), so 5 is 5 however they arrive.
            took = await s.execute(
                update(PhoneVerification)
                .where(
                    PhoneVerification.learner_id == learner_id,
                    PhoneVerification.attempts < MAX_ATTEMPTS,
                    PhoneVerification.expires_at > now,
                )
                .values(attempts=PhoneVerification.attempts + 1)
            )
            pending = (
                await s.scalar(
                    select(PhoneVerification).where(PhoneVerification.learner_id == learner_id)
                )
                if getattr(took, "rowcount", 0)
                else None
            )
            proved = None
            if pending is not None and hmac.compare_digest(
                pending.code_hash, _hash(learner_id, code.strip())
            ):
                proved = pending.phone
                await s.delete(pending)
                await s.execute(
                    update(Learner)
                    .where(
                        Learner.owner_key_id == owner_key_id,
                        Learner.phone == proved,
                        Learner.id != learner_id,
                    )
                    .values(phone=None, phone_verified_at=None)
                )
                await s.flush()
                row.phone, row.phone_verified_at = proved, now
                await s.flush()
            info = learner_info(row)
        if proved is None:
            raise InvalidCodeError("the code is wrong or expired")
        return info

    async def remove_phone(self, learner_id: str, owner_key_id: str) -> None:
        """Unlink the learner's number and drop any pending code.

        Raises:
            NotFoundError: No such learner for this key.
        """
        async with self._tx() as s:
            done = await s.execute(
                update(Learner)
                .where(_owned(learner_id, owner_key_id))
                .values(phone=None, phone_verified_at=None)
            )
            if not getattr(done, "rowcount", 0):
                raise NotFoundError(f"no learner {learner_id!r}")
            await s.execute(
                delete(PhoneVerification).where(PhoneVerification.learner_id == learner_id)
            )

    async def pending_phone(self, learner_id: str) -> str | None:
        """The number a code was called to and not yet entered (unexpired), or ``None``."""
        async with self._tx() as s:
            row = await s.scalar(
                select(PhoneVerification).where(PhoneVerification.learner_id == learner_id)
            )
            if row is None or row.expires_at <= utcnow() or row.attempts >= MAX_ATTEMPTS:
                return None
            return row.phone
