"""Assessments of learner turns: the tutors' mistakes and the examiner's ACS grades.

Written the moment a turn is assessed, each in its own transaction (crash-safe like turns),
together with the review items they make or lapse (:mod:`store.reviews`):
a session process calls :meth:`AssessmentStore.add_assessment` through its relay with the
assessment as :meth:`contracts.assessment.Assessment.to_dict` makes it. The rows are the
source of truth for what a learner got wrong and which ACS tasks they know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from store.base import StoreBase
from store.models import ACS_GRADES, AcsResult, Mistake, TutorSession
from store.records import NotFoundError
from store.reviews import apply_review_specs, review_specs

MAX_SPAN = 500
"""Longest stored error span or rule, in characters (the columns' width)."""


@dataclass(frozen=True, slots=True)
class MistakeInfo:
    """A stored mistake (see :class:`store.models.Mistake`)."""

    turn_index: int | None
    sentence: str
    corrected_sentence: str
    original: str
    corrected: str
    rule: str
    category: str
    spoken: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AcsResultInfo:
    """A stored ACS grade (see :class:`store.models.AcsResult`)."""

    turn_index: int | None
    answer: str
    question_id: str
    task: str
    grade: str
    missing: list[str]
    created_at: datetime


def _text(value: Any, name: str, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {value!r}")
    return value[:limit] if limit else value


def assessment_rows(
    session_id: str, assessment: Mapping[str, Any], turn_index: int | None
) -> list[Mistake | AcsResult]:
    """The rows one assessment becomes: a mistake per error, or one ACS result.

    Raises:
        ValueError: the assessment is malformed (unknown kind or grade, missing fields).
    """
    if turn_index is not None and (isinstance(turn_index, bool) or turn_index < 0):
        raise ValueError(f"turn_index must be a non-negative integer, got {turn_index!r}")
    kind = assessment.get("kind")
    if kind == "gec":
        sentence = _text(assessment.get("text"), "text")
        fixed = _text(assessment.get("corrected") or sentence, "corrected")
        errors = assessment.get("errors") or []
        if not isinstance(errors, list | tuple):
            raise ValueError("errors must be a list")
        return [
            Mistake(
                session_id=session_id,
                turn_index=turn_index,
                sentence=sentence,
                corrected_sentence=fixed,
                original=_text(e.get("original"), "original", MAX_SPAN),
                corrected=_text(e.get("corrected"), "corrected", MAX_SPAN),
                rule=_text(e.get("rule", ""), "rule", MAX_SPAN),
                category=_text(e.get("category", "other"), "category", 20),
                spoken=i == 0,
            )
            for i, e in enumerate(errors)
        ]
    if kind == "acs":
        grade = assessment.get("grade")
        if not isinstance(grade, Mapping) or grade.get("grade") not in ACS_GRADES:
            raise ValueError(f"an acs assessment needs a grade of {ACS_GRADES}")
        return [
            AcsResult(
                session_id=session_id,
                turn_index=turn_index,
                answer=_text(assessment.get("text"), "text"),
                question_id=_text(grade.get("question_id"), "question_id", 30),
                task=_text(grade.get("task"), "task", 20),
                grade=grade["grade"],
                missing=[str(m) for m in grade.get("missing") or []],
            )
        ]
    raise ValueError(f"unknown assessment kind {kind!r}")


class AssessmentStore(StoreBase):
    """Assessment persistence (mixed into :class:`store.Store`)."""

    async def add_assessment(
        self, session_id: str, assessment: Mapping[str, Any], turn_index: int | None = None
    ) -> int:
        """Store one learner turn's assessment; return the mistake or grade rows written.

        In the same transaction each mistake becomes (or lapses) a review item of the
        session's learner (:func:`store.reviews.review_specs`).

        Args:
            session_id: The session.
            assessment: ``Assessment.to_dict()`` (``kind`` ``gec`` or ``acs``).
            turn_index: The learner turn's index, or ``None`` if unknown.

        Raises:
            ValueError: malformed assessment.
            NotFoundError: no such session.
        """
        rows = assessment_rows(session_id, assessment, turn_index)
        if not rows:
            return 0
        try:
            async with self._tx() as s:
                session = await s.get(TutorSession, session_id)
                if session is None:
                    raise NotFoundError(f"no session {session_id!r}")
                s.add_all(rows)
                await apply_review_specs(
                    s, session_id, session.learner_id, review_specs(assessment)
                )
        except IntegrityError as e:
            raise NotFoundError(f"no session {session_id!r}") from e
        return len(rows)

    async def list_mistakes(self, session_id: str) -> list[MistakeInfo]:
        """The session's mistakes, in the order they were stored."""
        async with self._tx() as s:
            rows = (
                await s.scalars(
                    select(Mistake).where(Mistake.session_id == session_id).order_by(Mistake.id)
                )
            ).all()
        return [
            MistakeInfo(
                r.turn_index,
                r.sentence,
                r.corrected_sentence,
                r.original,
                r.corrected,
                r.rule,
                r.category,
                r.spoken,
                r.created_at,
            )
            for r in rows
        ]

    async def list_acs_results(self, session_id: str) -> list[AcsResultInfo]:
        """The session's ACS grades, in the order they were stored."""
        async with self._tx() as s:
            rows = (
                await s.scalars(
                    select(AcsResult)
                    .where(AcsResult.session_id == session_id)
                    .order_by(AcsResult.id)
                )
            ).all()
        return [
            AcsResultInfo(
                r.turn_index,
                r.answer,
                r.question_id,
                r.task,
                r.grade,
                list(r.missing),
                r.created_at,
            )
            for r in rows
        ]
