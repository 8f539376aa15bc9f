"""A review session: the tutor drills the learner's due review items by voice.

The session's tutoring step is a :class:`ReviewStep`: it opens with the first item, and each
learner turn answers the item asked. The answer is graded against the item's written
reference and by the persona's assessment step (a tutor's checked grammar correction, the
examiner's grade against the ACS bank); the result goes to the store
(``Store.review_item``: FSRS moves the item later when right, sooner when wrong), and the
reply, written here, says right or gives the right form and asks the next item. Once every
item is done the session goes on as a conversation with the inner step.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from loguru import logger

from config.personas import Persona
from contracts.assessment import Assessment
from pipelines.assessment import ExaminerStep, TutorStep
from processors.assessment import StepResult
from services.assessment.gec import GrammarCorrector

OnReview = Callable[[int, bool, str], Awaitable[None]]
"""Awaited with ``(item id, right, the learner's answer)`` for each answered item."""

PHRASES = {
    "de": {
        "open": "Hallo{name}! Heute wiederholen wir {n} aus unseren Gesprächen.",
        "ask": "Sag den Satz richtig: {prompt}",
        "right": "Richtig!",
        "wrong": "Nicht ganz. Richtig ist: {answer}",
        "done": "Das war alles für heute. Gut gemacht!",
    },
    "cs": {
        "open": "Ahoj{name}! Dnes si zopakujeme {n} z našich rozhovorů.",
        "ask": "Řekni tu větu správně: {prompt}",
        "right": "Správně!",
        "wrong": "Ne tak docela. Správně je: {answer}",
        "done": "To je pro dnešek všechno. Výborně!",
    },
    "en": {
        "open": "Hello{name}! Today we review {n} from your earlier sessions.",
        "ask": "Say it correctly: {prompt}",
        "right": "Correct!",
        "wrong": "Not quite. The right answer is: {answer}",
        "done": "That's all for today. Well done!",
    },
}
"""What the drill says, per language (``ask`` is for grammar items; ACS items ask the
question itself)."""


def how_many(language: str, n: int) -> str:
    """``n`` sentences (items) in ``language``, the noun in its plural form for ``n``."""
    if language == "de":
        return "einen Satz" if n == 1 else f"{n} Sätze"
    if language == "cs":  # 1 větu, 2-4 věty, 5+ vět (accusative)
        return f"{n} větu" if n == 1 else f"{n} věty" if 2 <= n <= 4 else f"{n} vět"
    return "one item" if n == 1 else f"{n} items"


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFC", text).casefold()
    return " " + " ".join("".join(c if c.isalnum() else " " for c in text).split()) + " "


def says(answer: str, span: str) -> bool:
    """Whether ``answer`` contains ``span`` as whole words (case and punctuation ignored)."""
    target = _norm(span)
    return target.strip() != "" and target in _norm(answer)


def reference_right(item: dict[str, Any], answer: str) -> bool:
    """A grammar item's answer against its written reference.

    Right when it says the corrected span and not the original one (unless the original is
    part of the corrected span, e.g. ``gehe`` → ``gehe ich``).
    """
    corrected, original = item.get("corrected") or "", item.get("original") or ""
    if not says(answer, corrected):
        return False
    if original and not says(corrected, original) and says(answer, original):
        return False
    return True


class ReviewStep:
    """Drills due review items, then hands over to the persona's ordinary step.

    Args:
        persona: The tutor or examiner (its language picks the phrases).
        items: Due items (``ReviewItemInfo.to_dict()`` cut down by
            :class:`pipelines.memory.LearnerMemory`), most overdue first.
        inner: The persona's step: grades the answers, and takes over when the drill is done.
        on_review: Awaited with each graded answer (the store reschedules the item).
    """

    def __init__(
        self,
        persona: Persona,
        items: Sequence[dict[str, Any]],
        inner: TutorStep | ExaminerStep | None,
        on_review: OnReview,
    ):
        self.persona = persona
        self.items = list(items)
        self.inner = inner
        self.on_review = on_review
        self.position = 0
        self.results: list[tuple[int, bool]] = []
        self.phrases = PHRASES.get(persona.language, PHRASES["en"])

    def ask(self, item: dict[str, Any]) -> str:
        """How the drill asks ``item``: the ACS question, or the sentence to say correctly."""
        if item.get("kind") == "acs":
            return str(item["prompt"])
        return self.phrases["ask"].format(prompt=item["prompt"])

    def opening(self, name: str | None = None) -> str:
        """The session's greeting: the number of items and the first one."""
        if not self.items:
            return self.phrases["done"]
        n = how_many(self.persona.language, len(self.items))
        hello = self.phrases["open"].format(name=f" {name}" if name else "", n=n)
        return f"{hello} {self.ask(self.items[0])}"

    async def prepare(self) -> None:
        """Let the inner step get ready (loads its scorer; reads its prompt ahead)."""
        if self.inner is not None:
            await self.inner.prepare()

    async def grade(self, item: dict[str, Any], text: str) -> tuple[bool, Assessment | None]:
        """Whether ``text`` answers ``item`` right, and the assessment step's view of it.

        Grammar items: the written reference (:func:`reference_right`), and no checked
        correction of the answer touching the item's corrected span. ACS items: the
        examiner's grade of the answer to the item's question, satisfactory only.
        """
        inner = self.inner
        if item.get("kind") == "acs":
            if not isinstance(inner, ExaminerStep):
                return False, None
            question = inner.grader.index.find(str(item["prompt"]))
            if question is None:
                return False, None
            graded = await inner.grader.grade(question, text)
            grade = graded.grade
            return grade is not None and grade.grade == "satisfactory", graded
        right = reference_right(item, text)
        assessment: Assessment | None = None
        if isinstance(inner, TutorStep) and isinstance(inner.assessor, GrammarCorrector):
            try:
                assessment = await inner.assessor.correct(text)
            except Exception as e:  # the written reference still grades the answer
                logger.warning(f"review: assessment failed, grading by the reference: {e!r}")
            if assessment is not None and any(
                says(item.get("corrected") or "", e.original) for e in assessment.errors
            ):
                right = False
        return right, assessment

    async def __call__(self, text: str) -> StepResult:
        """Grade ``text`` as the answer to the current item; say so and ask the next."""
        if self.position >= len(self.items):
            if self.inner is None:
                return StepResult(None)
            return await self.inner(text)
        item = self.items[self.position]
        right, _assessment = await self.grade(item, text)
        self.position += 1
        self.results.append((int(item["id"]), right))
        try:
            await self.on_review(int(item["id"]), right, text)
        except Exception as e:  # the drill goes on; the answer is in the transcript
            logger.error(f"review: storing the answer to item {item['id']} failed: {e!r}")
        said = (
            self.phrases["right"]
            if right
            else self.phrases["wrong"].format(answer=item.get("answer") or "")
        )
        if self.position < len(self.items):
            following = self.ask(self.items[self.position])
        else:
            following = self.phrases["done"]
            inner = self.inner
            if isinstance(inner, ExaminerStep) and inner.current is not None:
                # The exam goes on: its open question is asked now, so the next answer is
                # graded against a question the student heard.
                following += f" {inner.current.question}"
        # The drill's own answers are not stored as new mistakes: the item's log keeps them.
        return StepResult(None, f"{said} {following}", None, reply_needed=False)
