"""The assessment of one learner turn: a checked grammar correction or an ACS grade.

A tutor's turn gets a :class:`Correction` list (grammatical error correction, GEC); an
examiner's answer gets an :class:`AcsGrade`. Both are plain data: the assessment step makes
them, the reply is generated with them in its context, and the store keeps them per turn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

ErrorCategory = Literal[
    "word_order",
    "case",
    "gender",
    "verb_form",
    "preposition",
    "agreement",
    "spelling",
    "vocabulary",
    "other",
]
"""The kinds of learner error a correction names."""

ERROR_CATEGORIES: tuple[str, ...] = ErrorCategory.__args__  # type: ignore[attr-defined]

Grade = Literal["satisfactory", "probe", "unsatisfactory"]
"""An examiner's grade of one answer: ``probe`` = partly right, ask a follow-up."""

GRADES: tuple[str, ...] = Grade.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Correction:
    """One error in a learner's sentence and its fix.

    Attributes:
        original: The wrong words as the learner said them (a span of the sentence).
        corrected: What they should be.
        rule: The rule in a few words, in English (e.g. "Mädchen is neuter: das").
        category: One of :data:`ERROR_CATEGORIES`.
    """

    original: str
    corrected: str
    rule: str
    category: str


@dataclass(frozen=True)
class AcsGrade:
    """An examiner's grade of one answer against the question bank's reference.

    Attributes:
        question_id: The bank question that was answered (e.g. ``PA.I.A.1``).
        task: Its ACS task code (e.g. ``PA.I.A``).
        question: The question's text.
        grade: One of :data:`GRADES`.
        missing: The key points the answer missed or got wrong (empty when satisfactory).
        reference: The right answer, to state after an unsatisfactory one.
        source: Where the reference comes from (14 CFR section, AIM paragraph, handbook).
    """

    question_id: str
    task: str
    question: str
    grade: str
    missing: tuple[str, ...]
    reference: str
    source: str


@dataclass(frozen=True)
class Assessment:
    """What the assessment step found in one learner turn.

    Attributes:
        kind: ``gec`` (a tutor's grammar check) or ``acs`` (an examiner's grade).
        text: The learner's turn as assessed.
        corrected: ``gec``: the checked corrected sentence (``text`` when nothing was wrong).
        errors: ``gec``: the checked corrections, most important first; every one is stored,
            the first is the one spoken.
        dropped: ``gec``: corrections the checks refused (unknown words, a rewrite of a
            correct sentence), kept for evaluation, never spoken.
        grade: ``acs``: the grade, or ``None``.
        latency_ms: Time the assessment took, ms.
    """

    kind: Literal["gec", "acs"]
    text: str
    corrected: str | None = None
    errors: tuple[Correction, ...] = ()
    dropped: tuple[Correction, ...] = ()
    grade: AcsGrade | None = None
    latency_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored per turn and written to ``transcript.json``."""
        return asdict(self)


class Assessor(Protocol):
    """Assesses one learner turn (the processor and ``voxtutor assess`` call it)."""

    async def assess(self, text: str, question: str | None = None) -> Assessment | None:
        """Assess ``text`` (the learner's words; data, never instructions).

        Args:
            text: The learner's final transcript or typed text.
            question: The question the learner answered (the examiner's), if known.

        Returns:
            The assessment, or ``None`` when there is nothing to assess (e.g. small talk).
        """
        ...
