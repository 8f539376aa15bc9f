"""Spaced repetition of what a learner got wrong: review items scheduled with FSRS.

Every stored mistake becomes a review item of its learner (:func:`review_specs`), in the
transaction that stores the mistake: a grammar mistake (``gec``), a vocabulary one (``word``,
the word the tutor taught) or an ACS question answered unsatisfactorily (``acs``). The same
mistake made again lapses its item (FSRS ``Again``) instead of adding one, and an ACS question
answered satisfactorily later counts as a good recall. A review session answers items
(:meth:`ReviewStore.review_item`). Scheduling is the ``fsrs`` package (FSRS-6, the measured
successor of SM-2: https://github.com/open-spaced-repetition/fsrs4anki/wiki/The-Algorithm);
each rating is kept in ``review_logs`` with its time, so SM-2 or a re-optimised FSRS can be
computed from the history.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fsrs import Card, Rating, Scheduler, State
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import StoreBase
from store.models import ReviewItem, ReviewLog, TutorSession, utcnow
from store.records import NotFoundError

SCHEDULER = Scheduler(enable_fuzzing=False)
"""FSRS-6 with its default parameters and 90 % desired retention; no fuzz, so a rating's
next due date is reproducible (one learner has too few items for fuzz to matter)."""

MAX_DUE = 50
"""Most due items one call returns."""


@dataclass(frozen=True, slots=True)
class ReviewItemInfo:
    """A review item (see :class:`store.models.ReviewItem`).

    ``state`` is FSRS's: ``learning``, ``review`` (learned: it left the learning steps) or
    ``relearning``.
    """

    id: int
    learner_id: str
    kind: str
    prompt: str
    answer: str
    original: str
    corrected: str
    rule: str
    category: str
    due: datetime
    reps: int
    lapses: int
    state: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the progress endpoint, a review session's spec)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "prompt": self.prompt,
            "answer": self.answer,
            "original": self.original,
            "corrected": self.corrected,
            "rule": self.rule,
            "category": self.category,
            "due": self.due.isoformat(),
            "reps": self.reps,
            "lapses": self.lapses,
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class ReviewLogInfo:
    """One rating of an item: FSRS rating 1-4, where it came from, due before and after."""

    item_id: int
    session_id: str | None
    rating: int
    source: str
    answer: str
    due_before: datetime
    due_after: datetime
    reviewed_at: datetime


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFC", text).casefold()
    return " ".join("".join(c if c.isalnum() else " " for c in text).split())


def review_specs(assessment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The review items one assessment (``Assessment.to_dict()``) touches.

    Returns:
        One dict per item: ``key``, ``kind``, ``prompt``, ``answer``, ``original``,
        ``corrected``, ``rule``, ``category`` and ``rating`` (an FSRS rating for an item that
        already exists: ``Again`` for a mistake made again, ``Good`` for an ACS question now
        answered satisfactorily; ``None``: nothing to do unless the item exists).
    """
    kind = assessment.get("kind")
    if kind == "gec":
        sentence = str(assessment.get("text") or "")
        fixed = str(assessment.get("corrected") or sentence)
        out = []
        for e in assessment.get("errors") or []:
            original, corrected = str(e.get("original", "")), str(e.get("corrected", ""))
            if not _norm(corrected) or _norm(original) == _norm(corrected):
                continue
            category = str(e.get("category") or "other")[:20]
            word = category == "vocabulary"
            out.append(
                {
                    "key": f"{'word' if word else 'gec'}:{_norm(original)}>{_norm(corrected)}"[
                        :600
                    ],
                    "kind": "word" if word else "gec",
                    "prompt": sentence,
                    "answer": fixed,
                    "original": original[:500],
                    "corrected": corrected[:500],
                    "rule": str(e.get("rule") or "")[:500],
                    "category": category,
                    "rating": Rating.Again,
                    "create": True,
                }
            )
        return out
    grade = assessment.get("grade")
    if kind == "acs" and isinstance(grade, Mapping) and grade.get("question_id"):
        verdict = grade.get("grade")
        if verdict == "probe":
            return []
        return [
            {
                "key": f"acs:{grade['question_id']}"[:600],
                "kind": "acs",
                "prompt": str(grade.get("question") or ""),
                "answer": str(grade.get("reference") or ""),
                "original": "",
                "corrected": "",
                "rule": str(grade.get("source") or "")[:500],
                "category": str(grade.get("task") or "")[:20],
                "rating": Rating.Good if verdict == "satisfactory" else Rating.Again,
                "create": verdict == "unsatisfactory",
            }
        ]
    return []


def _info(row: ReviewItem) -> ReviewItemInfo:
    state = State(int(row.card.get("state", 1))).name.lower() if row.card else "learning"
    return ReviewItemInfo(
        row.id,
        row.learner_id,
        row.kind,
        row.prompt,
        row.answer,
        row.original,
        row.corrected,
        row.rule,
        row.category,
        row.due,
        row.reps,
        row.lapses,
        state,
        row.created_at,
    )


def _log_info(r: ReviewLog) -> ReviewLogInfo:
    return ReviewLogInfo(
        r.item_id,
        r.session_id,
        r.rating,
        r.source,
        r.answer,
        r.due_before,
        r.due_after,
        r.reviewed_at,
    )


def _rate(
    s: AsyncSession,
    row: ReviewItem,
    rating: Rating,
    *,
    source: str,
    session_id: str | None,
    answer: str = "",
    now: datetime | None = None,
) -> None:
    """Reschedule ``row`` with FSRS for ``rating`` and log it (inside the caller's tx)."""
    now = now or utcnow()
    card, _ = SCHEDULER.review_card(Card.from_dict(row.card), rating, review_datetime=now)  # type: ignore[arg-type]
    s.add(
        ReviewLog(
            item_id=row.id,
            session_id=session_id,
            rating=int(rating),
            source=source,
            answer=answer,
            due_before=row.due,
            due_after=card.due,
            reviewed_at=now,
        )
    )
    row.card = dict(card.to_dict())
    row.due = card.due
    row.reps += 1
    row.lapses += rating == Rating.Again


async def apply_review_specs(
    s: AsyncSession, session_id: str, learner_id: str, specs: list[dict[str, Any]]
) -> None:
    """Create or rate the items ``specs`` name (inside the transaction storing the mistakes)."""
    for spec in specs:
        row = await s.scalar(
            select(ReviewItem).where(
                ReviewItem.learner_id == learner_id, ReviewItem.key == spec["key"]
            )
        )
        if row is not None:
            source = "recall" if spec["rating"] == Rating.Good else "repeat"
            _rate(s, row, spec["rating"], source=source, session_id=session_id)
        elif spec["create"]:
            card = Card()
            s.add(
                ReviewItem(
                    learner_id=learner_id,
                    source_session_id=session_id,
                    card=dict(card.to_dict()),
                    due=card.due,
                    reps=0,
                    lapses=0,
                    key=spec["key"],
                    kind=spec["kind"],
                    prompt=spec["prompt"],
                    answer=spec["answer"],
                    original=spec["original"],
                    corrected=spec["corrected"],
                    rule=spec["rule"],
                    category=spec["category"],
                )
            )
            await s.flush()


class ReviewStore(StoreBase):
    """Review items and their FSRS schedule (mixed into :class:`store.Store`)."""

    async def due_review_items(
        self, learner_id: str, *, limit: int = 10, now: datetime | None = None
    ) -> list[ReviewItemInfo]:
        """The learner's items due at ``now`` (default: now), most overdue first.

        Args:
            learner_id: The learner.
            limit: At most this many (1 to :data:`MAX_DUE`).
            now: The time to compare due dates with (aware UTC).
        """
        limit = max(1, min(limit, MAX_DUE))
        async with self._tx() as s:
            rows = await s.scalars(
                select(ReviewItem)
                .where(ReviewItem.learner_id == learner_id, ReviewItem.due <= (now or utcnow()))
                .order_by(ReviewItem.due, ReviewItem.id)
                .limit(limit)
            )
            return [_info(r) for r in rows]

    async def list_review_items(self, learner_id: str) -> list[ReviewItemInfo]:
        """Every item of the learner, oldest first."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(ReviewItem)
                .where(ReviewItem.learner_id == learner_id)
                .order_by(ReviewItem.id)
            )
            return [_info(r) for r in rows]

    async def review_counts(self, learner_id: str, now: datetime | None = None) -> dict[str, int]:
        """``{"total", "due", "learned"}``: items, due now, and out of FSRS's learning steps."""
        items = await self.list_review_items(learner_id)
        now = now or utcnow()
        return {
            "total": len(items),
            "due": sum(i.due <= now for i in items),
            "learned": sum(i.state == "review" for i in items),
        }

    async def review_logs(self, item_id: int) -> list[ReviewLogInfo]:
        """Every rating of the item, oldest first (the history SM-2 or FSRS can be run on)."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(ReviewLog).where(ReviewLog.item_id == item_id).order_by(ReviewLog.id)
            )
            return [_log_info(r) for r in rows]

    async def session_review_logs(self, session_id: str) -> list[ReviewLogInfo]:
        """The ratings a session made (a review session's answers), oldest first."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(ReviewLog).where(ReviewLog.session_id == session_id).order_by(ReviewLog.id)
            )
            return [_log_info(r) for r in rows]

    async def review_item(
        self, session_id: str, item_id: int, correct: bool, answer: str = ""
    ) -> ReviewItemInfo:
        """Record an answer to a review item in a session and reschedule it with FSRS.

        A right answer rates it ``Good`` (its next due date moves later), a wrong one
        ``Again`` (it comes back within FSRS's relearning step, 10 minutes).

        Args:
            session_id: The review session (its learner must own the item).
            item_id: The item.
            correct: Whether the assessment step graded the answer right.
            answer: What the learner said (kept in the log).

        Raises:
            NotFoundError: no such session, or the item is not its learner's.
        """
        async with self._tx() as s:
            session = await s.get(TutorSession, session_id)
            row = await s.get(ReviewItem, int(item_id))
            if session is None or row is None or row.learner_id != session.learner_id:
                raise NotFoundError(f"no review item {item_id!r} for session {session_id!r}")
            rating = Rating.Good if correct else Rating.Again
            _rate(s, row, rating, source="review", session_id=session_id, answer=answer[:2000])
            await s.flush()
            return _info(row)

    async def count_review_items(self, learner_id: str) -> int:
        """How many items the learner has."""
        async with self._tx() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(ReviewItem)
                .where(ReviewItem.learner_id == learner_id)
            )
            return int(n or 0)
