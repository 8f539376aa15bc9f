"""A learner's data: everything stored about them as JSON, and erasing it.

Erasure deletes the learner and everything they said or that was said about them: turns,
mistakes, ACS grades, session events, reports, review items and their logs, level history,
the phone number. What billing needs stays as anonymous totals: the sessions' usage rows
remain, on content-free session rows (persona, tier, times; no end reason, no token) moved
to the key's one placeholder learner (``Learner.erased``, never listed or served), so usage
and cost per key, tier, day and month are unchanged (GDPR Art. 17 erasure with the billing
record kept as Art. 17(3)(b)/(e) allows: https://gdpr-info.eu/art-17-gdpr/). The Stripe
events applied to the learner stay as ids, types and times without them (``store.billing``);
a learner whose plan a Stripe subscription still pays for is not erased until it is cancelled.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update

from store.base import StoreBase, learner_info, owned_learner, session_info, turn_info, usage_info
from store.billing import billing_export, erase_billing
from store.models import (
    LIVE_STATUSES,
    AcsResult,
    Learner,
    LearnerAccessToken,
    LearnerLevel,
    Mistake,
    PhoneVerification,
    ReviewItem,
    ReviewLog,
    SessionEvent,
    SessionReport,
    Turn,
    TutorSession,
    UsageEvent,
)
from store.records import ConflictError

ERASED_NAME = "(erased learners)"
"""Name of a key's placeholder learner that holds erased learners' content-free sessions."""


def _row(obj: Any) -> dict[str, Any]:
    """A row's columns as JSON-ready values (datetimes as ISO 8601)."""
    out = {}
    for column in obj.__table__.columns:
        value = getattr(obj, column.key)
        out[column.key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


class ErasureStore(StoreBase):
    """Export and erasure of a learner's data (mixed into :class:`store.Store`)."""

    async def purge_transcripts(self, ended_before: datetime) -> int:
        """Delete the turns of sessions that ended before ``ended_before``; return how many.

        The retention rule (``VOXTUTOR_TRANSCRIPT_RETENTION_DAYS``): what was said goes, the
        learner model (mistakes, grades, review items), reports and usage stay.
        """
        async with self._tx() as s:
            old = select(TutorSession.id).where(TutorSession.ended_at < ended_before)
            result = await s.execute(delete(Turn).where(Turn.session_id.in_(old)))
            return int(cast(CursorResult[Any], result).rowcount or 0)

    async def export_learner(self, learner_id: str, owner_key_id: str) -> dict[str, Any]:
        """Everything stored about the learner, as JSON-ready data.

        Returns:
            ``learner``, ``levels``, ``sessions`` (each with ``turns``, ``mistakes``,
            ``acs_results``, ``events``, ``usage`` and ``report``) and ``review_items``
            (each with its ``logs``), and ``billing`` (``store.billing.billing_export``: the
            Stripe customer and subscription, and the Stripe events applied to them).

        Raises:
            NotFoundError: no such learner for this key.
        """
        async with self._tx() as s:
            row = await owned_learner(s, learner_id, owner_key_id)
            learner = learner_info(row)
            billing = await billing_export(s, row)
            levels = (
                await s.scalars(select(LearnerLevel).where(LearnerLevel.learner_id == learner_id))
            ).all()
            sessions = (
                await s.scalars(
                    select(TutorSession)
                    .where(TutorSession.learner_id == learner_id)
                    .order_by(TutorSession.created_at)
                )
            ).all()
            out_sessions = []
            for x in sessions:
                by = {"session_id": x.id}
                turns = (await s.scalars(select(Turn).filter_by(**by).order_by(Turn.index))).all()
                report = await s.get(SessionReport, x.id)
                out_sessions.append(
                    {
                        **_json(session_info(x)),
                        "turns": [_json(turn_info(t)) for t in turns],
                        "mistakes": [
                            _row(m) for m in (await s.scalars(select(Mistake).filter_by(**by)))
                        ],
                        "acs_results": [
                            _row(a) for a in (await s.scalars(select(AcsResult).filter_by(**by)))
                        ],
                        "events": [
                            _row(e) for e in (await s.scalars(select(SessionEvent).filter_by(**by)))
                        ],
                        "usage": [
                            _json(usage_info(u))
                            for u in (await s.scalars(select(UsageEvent).filter_by(**by)))
                        ],
                        "report": report.report if report is not None else None,
                    }
                )
            items = (
                await s.scalars(select(ReviewItem).where(ReviewItem.learner_id == learner_id))
            ).all()
            out_items = []
            for item in items:
                logs = (await s.scalars(select(ReviewLog).filter_by(item_id=item.id))).all()
                out_items.append({**_row(item), "logs": [_row(lg) for lg in logs]})
        return {
            "learner": _json(learner),
            "levels": [_row(lv) for lv in levels],
            "sessions": out_sessions,
            "review_items": out_items,
            "billing": billing,
        }

    async def erase_learner(self, learner_id: str, owner_key_id: str) -> int:
        """Erase the learner and their content; keep their sessions' usage anonymously.

        Returns:
            How many sessions were kept as content-free usage records.

        Raises:
            NotFoundError: no such learner for this key.
            ConflictError: a session of theirs is still live (end it first);
                ``store.billing.SubscriptionActiveError`` while a Stripe subscription holds
                their plan (cancel it first).
        """
        async with self._tx() as s:
            # The learner's row lock first: a session start (which takes the same lock,
            # store.quotas) cannot commit a session between the live check and the delete.
            await s.execute(
                update(Learner)
                .where(Learner.id == learner_id)
                .values(quota_version=Learner.quota_version + 1)
            )
            row = await owned_learner(s, learner_id, owner_key_id)
            live = await s.scalar(
                select(func.count())
                .select_from(TutorSession)
                .where(
                    TutorSession.learner_id == learner_id, TutorSession.status.in_(LIVE_STATUSES)
                )
            )
            if live:
                raise ConflictError(f"{live} session(s) of this learner are live; end them first")
            await erase_billing(s, row)  # refuses while a Stripe subscription holds the plan
            ids = list(
                await s.scalars(
                    select(TutorSession.id).where(TutorSession.learner_id == learner_id)
                )
            )
            if ids:
                holder = await s.scalar(
                    select(Learner).where(
                        Learner.owner_key_id == owner_key_id, Learner.erased.is_(True)
                    )
                )
                if holder is None:
                    holder = Learner(
                        owner_key_id=owner_key_id,
                        name=ERASED_NAME,
                        target_language=row.target_language,
                        cefr_level="A1",
                        interests=[],
                        erased=True,
                    )
                    s.add(holder)
                    await s.flush()
                for table in (Turn, Mistake, AcsResult, SessionEvent, SessionReport):
                    await s.execute(delete(table).where(table.session_id.in_(ids)))
                await s.execute(
                    update(TutorSession)
                    .where(TutorSession.id.in_(ids))
                    .values(learner_id=holder.id, end_reason=None, token_hash="")
                )
            item_ids = select(ReviewItem.id).where(ReviewItem.learner_id == learner_id)
            await s.execute(delete(ReviewLog).where(ReviewLog.item_id.in_(item_ids)))
            await s.execute(delete(ReviewItem).where(ReviewItem.learner_id == learner_id))
            await s.execute(delete(LearnerLevel).where(LearnerLevel.learner_id == learner_id))
            await s.execute(
                delete(PhoneVerification).where(PhoneVerification.learner_id == learner_id)
            )
            await s.execute(
                delete(LearnerAccessToken).where(LearnerAccessToken.learner_id == learner_id)
            )
            await s.delete(row)
            return len(ids)


def _json(record: Any) -> dict[str, Any]:
    """A frozen record (slots dataclass) as JSON-ready data."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(record).items()}
