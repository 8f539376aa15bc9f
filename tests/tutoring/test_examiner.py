"""The examiner: grades follow a fixed rule from the key points; the bank drives the questions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from config.acs import load_acs_bank
from config.personas import load_persona
from config.settings import Settings
from pipelines.assessment import ExaminerStep, lead, local_scorer, next_question
from services.assessment.grading import (
    AnswerGrader,
    QuestionIndex,
    grade_from,
    grade_from_probabilities,
    messages,
)
from services.assessment.json_chat import JsonChat, JsonChatError
from testkit.fake_chat import ScriptedChat

BANK = load_acs_bank()
EXAMINER = load_persona("aviation-examiner")


def statuses(*values: str) -> dict[str, object]:
    return {"statuses": list(values)}


def question_with(n_points: int):
    return next(q for q in BANK.questions if len(q.key_points) == n_points)


def test_grade_follows_the_key_points() -> None:
    q = question_with(3)
    assert grade_from(q, statuses("covered", "covered", "covered")["statuses"]) == (
        "satisfactory",
        (),
    )
    grade, missing = grade_from(q, statuses("covered", "missing", "covered")["statuses"])
    assert grade == "probe" and missing == (q.key_points[1],)
    grade, missing = grade_from(q, statuses("covered", "missing", "wrong")["statuses"])
    assert grade == "unsatisfactory" and missing == (q.key_points[2], q.key_points[1])
    # A point the model did not report counts as missed, never as covered.
    assert grade_from(q, statuses("covered")["statuses"])[0] == "probe"


def test_questions_are_found_by_id_wording_or_keywords() -> None:
    index = QuestionIndex(BANK)
    first = BANK.questions[0]
    assert index.find(first.id) == first and index.find(first.question) == first
    found = index.find("What documents must be on board the airplane?")
    assert found is not None and found.task.startswith("PA.I.")
    assert index.find("...") is None


async def test_an_unsatisfactory_answer_gets_the_reference_with_its_source() -> None:
    q = question_with(3)
    chat = ScriptedChat(objects=[statuses("wrong", "covered", "covered")])
    a = await AnswerGrader(cast(JsonChat, chat), BANK).grade(q, "a confident wrong fact")
    assert a.grade is not None and a.grade.grade == "unsatisfactory"
    said = lead(EXAMINER, a, "Next question?")
    assert said.startswith("That's not correct.")
    assert q.reference in said and q.source in said and said.endswith("Next question?")
    # The learner's answer is a JSON string inside the user message.
    assert '"a confident wrong fact"' in chat.asked[0][-1]["content"]
    assert messages(q, "x")[0]["role"] == "system"


async def test_a_model_fault_is_a_probe_never_a_pass_or_a_fail() -> None:
    q = question_with(2)
    chat = ScriptedChat(objects=[JsonChatError("down")])
    a = await AnswerGrader(cast(JsonChat, chat), BANK).grade(q, "something")
    assert a.grade is not None and a.grade.grade == "probe" and "failed" in a.extra


def test_next_question_covers_every_area_before_repeating_weak_tasks() -> None:
    asked: list[str] = []
    areas = []
    for _ in BANK.areas:
        q = next_question(BANK, asked)
        assert q is not None
        asked.append(q.id)
        areas.append(q.area)
    assert sorted(areas) == sorted(BANK.areas)
    weak = BANK.questions[-1].task
    nxt = next_question(BANK, asked, weak_tasks=[weak])
    assert nxt is not None and nxt.task == weak


async def test_two_probes_then_a_partial_answer_is_unsatisfactory_and_the_exam_moves_on() -> None:
    q = BANK.questions[0]
    partial = statuses(*(["covered"] + ["missing"] * (len(q.key_points) - 1)))
    chat = ScriptedChat(objects=[partial, partial, partial])
    step = ExaminerStep(EXAMINER, AnswerGrader(cast(JsonChat, chat), BANK), first=q.id)
    assert step.current == q
    for _ in range(2):
        result = await step("half an answer")
        assert result.assessment is not None and result.assessment.grade is not None
        assert result.assessment.grade.grade == "probe"
        assert "part of it" in result.lead and q.question in (result.note or "")
        assert step.current == q
    result = await step("half an answer")
    assert result.assessment is not None and result.assessment.grade is not None
    assert result.assessment.grade.grade == "unsatisfactory"
    assert q.reference in result.lead and step.current != q
    assert step.current is not None and step.current.question in (result.note or "")
    assert result.reply_needed  # the reply model asks the next bank question


async def test_the_verdict_decides_and_the_key_points_name_what_was_missing() -> None:
    q = question_with(3)
    chat = ScriptedChat(
        objects=[
            {"verdict": "correct", "statuses": ["covered", "missing", "covered"]},
            {"verdict": "incomplete", "statuses": ["covered", "missing", "covered"]},
            {"verdict": "wrong", "statuses": ["covered", "covered", "covered"]},
        ]
    )
    grader = AnswerGrader(cast(JsonChat, chat), BANK)
    graded = [await grader.grade(q, "an answer") for _ in range(3)]
    grades = [(a.grade.grade, a.grade.missing) for a in graded if a.grade is not None]
    assert grades == [
        ("satisfactory", ()),
        ("probe", (q.key_points[1],)),
        ("unsatisfactory", tuple(q.key_points)),
    ]


class FakeScorer:
    """Verdict probabilities by answer; records what it was asked to read."""

    def __init__(self, by_answer: dict[str, dict[str, float]]):
        self.by_answer, self.warmed, self.scored = by_answer, [], []

    def prompt(self, msgs: list[dict[str, str]], answer_prefix: str = "") -> str:
        return "|".join(m["content"] for m in msgs) + "|" + answer_prefix

    def warm(self, text: str) -> None:
        self.warmed.append(text)

    def probabilities(self, text: str, options: list[str]) -> dict[str, float]:
        self.scored.append(text)
        for answer, p in self.by_answer.items():
            if json.dumps(answer)[1:-1] in text:
                return p
        raise ValueError("prompt too long")


async def test_verdict_probabilities_grade_by_threshold_not_by_the_favourite() -> None:
    q = question_with(3)
    scorer = FakeScorer(
        {
            "Xq right": {"wrong": 0.2, "incomplete": 0.5, "correct": 0.3},
            "Xq wrong": {"wrong": 0.4, "incomplete": 0.55, "correct": 0.05},
            "Xq partial": {"wrong": 0.2, "incomplete": 0.65, "correct": 0.15},
        }
    )
    chat = ScriptedChat()  # never asked
    grader = AnswerGrader(cast(JsonChat, chat), BANK, scorer=cast(Any, scorer))
    assert await grader.warm(q)
    got = {a: (await grader.grade(q, a)).grade for a in ("Xq right", "Xq wrong", "Xq partial")}
    assert {a: g.grade for a, g in got.items() if g} == {
        "Xq right": "satisfactory",
        "Xq wrong": "unsatisfactory",
        "Xq partial": "probe",
    }
    assert got["Xq right"] is not None and got["Xq right"].missing == ()
    assert got["Xq wrong"] is not None and got["Xq wrong"].missing == q.key_points
    # What was read ahead is the start of every graded prompt: only the answer is new.
    [warmed] = scorer.warmed
    common = warmed[: warmed.index('"student answer": "') + len('"student answer": "')]
    assert all(text.startswith(common) for text in scorer.scored)
    assert chat.asked == [] and chat.warmed == []


async def test_a_prompt_the_scorer_cannot_read_is_graded_by_the_server() -> None:
    q = question_with(3)
    chat = ScriptedChat(objects=[{"verdict": "correct"}])
    grader = AnswerGrader(cast(JsonChat, chat), BANK, scorer=cast(Any, FakeScorer({})))
    a = await grader.grade(q, "something else entirely")
    assert a.grade is not None and a.grade.grade == "satisfactory"
    assert "scorer_failed" in a.extra and len(chat.asked) == 1


def test_grade_from_probabilities_thresholds() -> None:
    assert grade_from_probabilities({"wrong": 0.3, "incomplete": 0.5, "correct": 0.2}) == (
        "satisfactory"
    )
    assert grade_from_probabilities({"wrong": 0.1, "incomplete": 0.82, "correct": 0.08}) == (
        "unsatisfactory"
    )
    assert grade_from_probabilities({"wrong": 0.4, "incomplete": 0.45, "correct": 0.15}) == (
        "probe"
    )


def test_no_local_scorer_when_switched_off_or_not_installed(tmp_path: Path) -> None:
    assert local_scorer(Settings(home=tmp_path, assessment_scorer=True)) is None  # no model
    assert local_scorer(Settings(assessment_scorer=False)) is None


async def test_the_examiner_reads_the_open_question_ahead_when_the_bot_stops() -> None:
    chat = ScriptedChat()
    step = ExaminerStep(EXAMINER, AnswerGrader(cast(JsonChat, chat), BANK))
    assert step.current is not None
    await step.prepare()
    [warmed] = chat.warmed
    assert warmed == messages(step.current, "")
