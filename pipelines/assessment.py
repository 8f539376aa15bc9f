"""The tutoring step of a session: which assessor a persona gets, and what the reply must say.

Tutors (German, Czech) get a checked grammar correction of every learner sentence
(:class:`services.assessment.gec.GrammarCorrector`); the examiner gets each answer graded
against the ACS question bank (:class:`services.assessment.grading.AnswerGrader`) and asks
from the bank. The reply is generated *with* the checked assessment: :func:`lead` is what the
reply starts with (the corrected sentence; the right fact and its source after an
unsatisfactory answer; the follow-up or next question), and :func:`context_note` tells the
reply model what was found, so even a small model says the right correction or fact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from loguru import logger

from config.acs import AcsBank, AcsQuestion, load_acs_bank
from config.personas import Persona
from config.settings import Settings
from contracts.assessment import Assessment, Assessor
from pipelines.local import local_llm
from processors.assessment import StepResult
from services.assessment.confusion import FAMILIES
from services.assessment.dictionary import load_dictionary
from services.assessment.gec import EXAMPLES, GrammarCorrector
from services.assessment.grading import AnswerGrader
from services.assessment.json_chat import JsonChat
from services.assessment.next_token import NextTokenScorer, WindowScorer
from weights.registry import ModelError, model_path

MAX_PROBES = 2
"""Follow-up questions the examiner asks on one question before grading it unsatisfactory."""


def _scorer_model(settings: Settings) -> Path | None:
    """The GGUF a local scorer reads, or ``None`` (scorers off, or the model not installed)."""
    if not settings.assessment_scorer:
        return None
    try:
        return model_path(settings.llm_model, settings.home)
    except ModelError:
        return None


def local_scorer(settings: Settings) -> NextTokenScorer | None:
    """The local model loaded in this process for reading verdict probabilities (blocking).

    ``None`` when ``settings.assessment_scorer`` is off or the model is not installed (the
    LLM server then writes the verdict). Loading maps the GGUF (shared with the server's
    pages) in ~1 s.
    """
    path = _scorer_model(settings)
    return NextTokenScorer(path, threads=settings.llm_threads) if path else None


def local_window_scorer(settings: Settings, language: str) -> WindowScorer | None:
    """The local model loaded in this process for a tutor's confusable forms (blocking).

    ``None`` when ``settings.assessment_scorer`` is off, the model is not installed, or the
    language has no confusable families (:data:`services.assessment.confusion.FAMILIES`).
    """
    path = _scorer_model(settings) if language in FAMILIES else None
    return WindowScorer(path, threads=settings.llm_threads) if path else None


def build_assessor(
    persona: Persona,
    chat: JsonChat,
    level: str | None = None,
    scorer: NextTokenScorer | None = None,
) -> Assessor | None:
    """The assessor of ``persona``'s learner turns, or ``None`` for a persona without one.

    ``scorer`` (the examiner's) reads the verdict from the local model's probabilities.

    Raises:
        config.acs.AcsError: the examiner's question bank is invalid.
    """
    if persona.role == "examiner":
        return AnswerGrader(chat, load_acs_bank(), scorer=scorer)
    if persona.language in EXAMPLES:
        return GrammarCorrector(chat, persona.language, level or persona.cefr_level)
    return None


def next_question(
    bank: AcsBank, asked: Iterable[str] = (), weak_tasks: Iterable[str] = ()
) -> AcsQuestion | None:
    """The next question to ask: an area not covered yet first, then a weak task's.

    Args:
        bank: The question bank.
        asked: Ids of the questions already asked (this session and, from the store, before).
        weak_tasks: Task codes graded unsatisfactory or probed before, most recent first.

    Returns:
        A question not asked yet, or ``None`` when every question has been asked.
    """
    asked = set(asked)
    fresh = [q for q in bank.questions if q.id not in asked]
    if not fresh:
        return None
    covered = {bank.get(i).area for i in asked if any(q.id == i for q in bank.questions)}
    for area in bank.areas:
        if area not in covered:
            for q in fresh:
                if q.area == area:
                    return q
    for task in weak_tasks:
        for q in fresh:
            if q.task == task:
                return q
    return fresh[0]


def lead(persona: Persona, assessment: Assessment | None, following: str | None = None) -> str:
    """What the reply starts with, built from the checked assessment alone.

    Tutors: the corrected sentence when something was corrected (else nothing). Examiner:
    after ``unsatisfactory`` the reference answer with its source; after ``probe`` a request
    for more (the same question stays open, ``following`` is not added); after
    ``satisfactory`` a short acknowledgement; then ``following`` (the next question).
    """
    if assessment is None:
        return following or ""
    if assessment.kind == "gec":
        return assessment.corrected or "" if assessment.errors else ""
    grade = assessment.grade
    if grade is None:
        return following or ""
    if grade.grade == "unsatisfactory":
        said = f"That's not correct. {grade.reference} (Source: {grade.source}.)"
    elif grade.grade == "probe":
        return "That's part of it. What else can you tell me?"
    else:
        said = "That's correct."
    return " ".join(s for s in (said, following) if s)


def examiner_note(said: str, question: str, probe: bool = False) -> str:
    """The examiner's instructions for the rest of the reply: ask ``question`` (from the bank).

    After a partly right answer (``probe``) the question is asked again in other words,
    without giving the answer away.
    """
    ask = (
        f"Ask the student to tell you more, restating this question in other words without "
        f'giving the answer: "{question}"'
        if probe
        else f'Now ask the student exactly this next question: "{question}"'
    )
    return (
        f'You have already said: "{said}". Do not grade or correct again. {ask} Say nothing else.'
    )


def context_note(persona: Persona, assessment: Assessment | None, reply_lead: str) -> str | None:
    """The note the reply model gets before it answers this turn, or ``None`` for none.

    It states what the checked assessment found and that the reply has begun with
    ``reply_lead``; the learner's own words are not repeated in it.
    """
    if assessment is None or not reply_lead:
        return None
    if assessment.kind == "gec":
        rules = "; ".join(
            f"{e.original} → {e.corrected} ({e.rule or e.category})" for e in assessment.errors
        )
        return (
            f"Checked correction of the learner's last sentence: {rules}. Your reply begins "
            f'with the corrected sentence "{reply_lead}" (already said). Continue with one '
            "short, friendly question that keeps the conversation going; do not correct again."
        )
    return (
        f'Your reply so far (already said): "{reply_lead}". Add at most one short sentence; do '
        "not grade again and do not ask another question."
    )


def record(
    persona: Persona, assessment: Assessment | None, text: str, reply: str
) -> dict[str, Any]:
    """One ``voxtutor assess`` line: what the session would make of ``text``.

    Tutors: ``{"text", "corrected", "errors": [{"original", "corrected", "rule", "category"}],
    "reply"}``; the examiner: ``{"text", "question", "task", "grade", "missing", "reply"}``.
    """
    if persona.role == "examiner":
        grade = assessment.grade if assessment is not None else None
        return {
            "text": text,
            "question": grade.question if grade else None,
            "task": grade.task if grade else None,
            "grade": grade.grade if grade else None,
            "missing": list(grade.missing) if grade else [],
            "reply": reply,
        }
    errors = assessment.errors if assessment is not None else ()
    return {
        "text": text,
        "corrected": assessment.corrected if assessment is not None else text,
        "errors": [
            {
                "original": e.original,
                "corrected": e.corrected,
                "rule": e.rule,
                "category": e.category,
            }
            for e in errors
        ],
        "reply": reply,
    }


class TurnAssessor:
    """Assesses learner turns as a session of ``persona`` would (``voxtutor assess``, bench).

    Args:
        persona: The tutor or examiner.
        assessor: Its assessor (:func:`build_assessor`).
    """

    def __init__(self, persona: Persona, assessor: Assessor):
        self.persona = persona
        self.assessor = assessor

    async def __call__(
        self, text: str, question: str | None = None
    ) -> tuple[Assessment | None, dict[str, Any]]:
        """Assess ``text`` (answering ``question``); return it with its :func:`record`.

        Raises:
            ValueError: the examiner without a ``question``.
        """
        if self.persona.role == "examiner" and not question:
            raise ValueError("the examiner grades an answer to a question: pass --question")
        if isinstance(self.assessor, AnswerGrader) and question:
            found = self.assessor.index.find(question)
            if found is not None:  # as in a session: read while the learner answered
                await self.assessor.warm(found)
        assessment = await self.assessor.assess(text, question)
        following = None
        if self.persona.role == "examiner" and assessment is not None and assessment.grade:
            nxt = next_question(load_acs_bank(), [assessment.grade.question_id])
            following = nxt.question if nxt is not None else None
        reply = lead(self.persona, assessment, following)
        return assessment, record(self.persona, assessment, text, reply)


@asynccontextmanager
async def turn_assessor(
    persona: Persona,
    settings: Settings,
    *,
    level: str | None = None,
    llm_base_url: str | None = None,
) -> AsyncIterator[TurnAssessor]:
    """A :class:`TurnAssessor` for ``persona`` on the local LLM or ``llm_base_url``.

    Starts the local llama.cpp server unless ``llm_base_url`` (or ``settings.llm_base_url``)
    names an OpenAI-compatible one, and loads the tutor's dictionary first.

    Raises:
        ValueError: a persona without an assessor.
        weights.registry.ModelNotInstalledError: the local model is missing.
        services.llama_server.LLMServerError: the local server did not start.
    """
    if llm_base_url:
        settings = settings.model_copy(update={"llm_base_url": llm_base_url})
    scorer = window = None
    if persona.role == "tutor":
        await asyncio.to_thread(load_dictionary, persona.language)
        window = await asyncio.to_thread(local_window_scorer, settings, persona.language)
    else:
        scorer = await asyncio.to_thread(local_scorer, settings)
    async with local_llm(settings) as base_url:
        chat = JsonChat(base_url)
        try:
            assessor = build_assessor(persona, chat, level, scorer)
            if isinstance(assessor, GrammarCorrector):
                assessor.window = window
            if assessor is None:
                raise ValueError(f"persona {persona.id!r} has no assessment")
            yield TurnAssessor(persona, assessor)
        finally:
            await chat.aclose()


class TutorStep:
    """A tutor's step per learner turn: the checked correction leads the reply.

    Args:
        persona: The tutor.
        assessor: Its grammar corrector.
        scorer_settings: Load the local window scorer (:func:`local_window_scorer`) with
            these on the first :meth:`prepare`; ``None``: the corrector keeps its own.
    """

    def __init__(
        self, persona: Persona, assessor: Assessor, scorer_settings: Settings | None = None
    ):
        self.persona = persona
        self.assessor = assessor
        self._scorer_settings = scorer_settings

    async def prepare(self) -> None:
        """Have the LLM read the correction prompt before the learner's next sentence.

        The first call also loads the local window scorer, off the loop.
        """
        if not isinstance(self.assessor, GrammarCorrector):
            return
        if self._scorer_settings is not None:
            settings, self._scorer_settings = self._scorer_settings, None
            try:
                self.assessor.window = await asyncio.to_thread(
                    local_window_scorer, settings, self.persona.language
                )
            except ValueError as e:  # a model that cannot be read: rewrite only
                logger.warning(f"no local window scorer: {e}")
        await self.assessor.warm()

    async def __call__(self, text: str) -> StepResult:
        """Correct ``text``; lead with the corrected sentence if something was wrong.

        A grammar corrector's checked correction is spoken as soon as it is made; the rule
        behind it is named afterwards (``StepResult.complete``), off the learner's wait.
        """
        corrector = self.assessor
        if not isinstance(corrector, GrammarCorrector):
            assessment = await corrector.assess(text)
            said = lead(self.persona, assessment)
            return StepResult(assessment, said, context_note(self.persona, assessment, said))
        checked = await corrector.correct(text)
        said = lead(self.persona, checked)

        async def explained() -> Assessment:
            assert checked is not None
            return await corrector.explain(checked)

        return StepResult(
            checked,
            said,
            context_note(self.persona, checked, said),
            complete=explained if checked is not None and checked.errors else None,
        )


class ExaminerStep:
    """The examiner's step: grade each answer, then follow up, teach or ask the next question.

    The examiner asks from the bank (:func:`next_question`): the greeting's question first,
    then areas not covered yet, then weak tasks. A partly right answer gets a follow-up on
    the same question, at most :data:`MAX_PROBES`; a third partial answer counts as
    unsatisfactory. After an unsatisfactory answer the reference and its source are stated.

    Args:
        persona: The examiner.
        grader: Its answer grader.
        first: The question the greeting asks (matched to the bank), or ``None`` to start
            with the bank's first.
        asked: Question ids already asked of this learner (from the store).
        weak_tasks: Task codes the learner was weak in before, most recent first.
        scorer_settings: Load the local verdict scorer (:func:`local_scorer`) with these
            on the first :meth:`prepare`; ``None``: the grader keeps the one it has.
    """

    def __init__(
        self,
        persona: Persona,
        grader: AnswerGrader,
        first: str | None = None,
        asked: Iterable[str] = (),
        weak_tasks: Iterable[str] = (),
        scorer_settings: Settings | None = None,
    ):
        self._scorer_settings = scorer_settings
        self.persona = persona
        self.grader = grader
        self.asked = list(asked)
        self.weak = list(weak_tasks)
        found = grader.index.find(first) if first else None
        self.current = found or next_question(grader.bank, self.asked, self.weak)
        self.probes = 0

    async def prepare(self) -> None:
        """Have the LLM read the open question's grading prompt before the answer comes.

        The first call also loads the local scorer (``scorer_settings``), off the loop.
        """
        if self._scorer_settings is not None:
            settings, self._scorer_settings = self._scorer_settings, None
            try:
                self.grader.scorer = await asyncio.to_thread(local_scorer, settings)
            except ValueError as e:  # a model that cannot be read: the server grades
                logger.warning(f"no local verdict scorer: {e}")
        if self.current is not None:
            await self.grader.warm(self.current)

    async def __call__(self, text: str) -> StepResult:
        """Grade ``text`` as the answer to the current question and lead the reply."""
        question = self.current
        if question is None:
            return StepResult(None)
        assessment = await self.grader.grade(question, text)
        grade = assessment.grade
        assert grade is not None
        if grade.grade == "probe" and self.probes >= MAX_PROBES:
            grade = replace(grade, grade="unsatisfactory")
            assessment = replace(assessment, grade=grade)
        if grade.grade == "probe":
            self.probes += 1
            said = lead(self.persona, assessment)
            return StepResult(assessment, said, examiner_note(said, question.question, True))
        self.asked.append(question.id)
        if grade.grade == "unsatisfactory":
            self.weak.insert(0, question.task)
        self.probes = 0
        self.current = next_question(self.grader.bank, self.asked, self.weak)
        said = lead(self.persona, assessment)
        if self.current is None:
            return StepResult(assessment, said + " That completes the oral exam.", None, False)
        return StepResult(assessment, said, examiner_note(said, self.current.question))


def tutoring_step(
    persona: Persona,
    chat: JsonChat,
    level: str | None = None,
    first_question: str | None = None,
    settings: Settings | None = None,
) -> TutorStep | ExaminerStep | None:
    """The tutoring step of a session of ``persona``, or ``None`` for a persona without one.

    With ``settings``, the examiner loads the local verdict scorer (:func:`local_scorer`)
    and a tutor its window scorer (:func:`local_window_scorer`) once the greeting has been
    spoken.
    """
    assessor = build_assessor(persona, chat, level)
    if isinstance(assessor, AnswerGrader):
        return ExaminerStep(persona, assessor, first_question, scorer_settings=settings)
    return TutorStep(persona, assessor, settings) if assessor is not None else None
