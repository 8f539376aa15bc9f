"""A review session drills due items: graded against the reference and the assessment step."""

from __future__ import annotations

from typing import Any, cast

import pytest

from config.acs import load_acs_bank
from config.personas import load_persona
from pipelines.assessment import ExaminerStep
from pipelines.review import ReviewStep, how_many, reference_right
from services.assessment.grading import AnswerGrader
from services.assessment.json_chat import JsonChat
from testkit.fake_chat import ScriptedChat

BANK = load_acs_bank()
BUS = {
    "id": 7,
    "kind": "gec",
    "prompt": "Ich fahre mit der Bus.",
    "answer": "Ich fahre mit dem Bus.",
    "original": "der Bus",
    "corrected": "dem Bus",
    "category": "case",
}


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("Ich fahre mit dem Bus.", True),
        ("ich fahre MIT DEM BUS", True),
        ("Ich fahre mit der Bus.", False),
        ("Ich fahre mit dem Bus, nicht mit der Bus.", False),  # both forms: not learned
        ("Ich fahre mit dem Auto.", False),
    ],
)
def test_the_answer_is_graded_against_the_written_reference(answer: str, right: bool) -> None:
    assert reference_right(BUS, answer) is right


async def test_each_item_is_asked_graded_stored_and_the_next_asked() -> None:
    stored: list[tuple[int, bool, str]] = []

    async def on_review(item_id: int, right: bool, answer: str) -> None:
        stored.append((item_id, right, answer))

    second = {
        **BUS,
        "id": 8,
        "prompt": "Ich gebe der Mann das Buch.",
        "answer": "Ich gebe dem Mann das Buch.",
        "original": "der Mann",
        "corrected": "dem Mann",
    }
    drill = ReviewStep(load_persona("german-tutor"), [BUS, second], None, on_review)
    opening = drill.opening("Eva")
    assert opening.startswith("Hallo Eva! Heute wiederholen wir 2 Sätze")
    assert [how_many("cs", n) for n in (1, 3, 5)] == ["1 větu", "3 věty", "5 vět"]
    assert opening.endswith("Sag den Satz richtig: Ich fahre mit der Bus.")
    first = await drill("Ich fahre mit dem Bus.")
    assert first.lead == "Richtig! Sag den Satz richtig: Ich gebe der Mann das Buch."
    assert not first.reply_needed and first.assessment is None
    last = await drill("Ich gebe der Mann das Buch.")
    assert last.lead.startswith("Nicht ganz. Richtig ist: Ich gebe dem Mann das Buch.")
    assert last.lead.endswith("Das war alles für heute. Gut gemacht!")
    assert stored == [
        (7, True, "Ich fahre mit dem Bus."),
        (8, False, "Ich gebe der Mann das Buch."),
    ]
    # After the drill the session is an ordinary conversation (here: no inner step).
    after = await drill("Und jetzt?")
    assert after.lead == "" and after.assessment is None and len(stored) == 2


async def test_an_acs_item_is_graded_by_the_examiner_against_the_bank() -> None:
    q = next(q for q in BANK.questions if len(q.key_points) == 2)
    item = {"id": 3, "kind": "acs", "prompt": q.question, "answer": q.reference}
    chat = ScriptedChat(
        objects=[{"statuses": ["covered", "covered"]}, {"statuses": ["wrong", "missing"]}]
    )
    examiner = load_persona("aviation-examiner")
    inner = ExaminerStep(examiner, AnswerGrader(cast(JsonChat, chat), BANK))
    stored: list[Any] = []

    async def on_review(item_id: int, right: bool, answer: str) -> None:
        stored.append((item_id, right))

    drill = ReviewStep(examiner, [item, {**item, "id": 4}], inner, on_review)
    assert drill.opening().endswith(q.question)
    right = await drill("the right answer")
    wrong = await drill("a wrong answer")
    assert stored == [(3, True), (4, False)]
    assert right.lead.startswith("Correct!") and wrong.lead.startswith("Not quite.")
    assert q.reference in wrong.lead
    # The drill is done: the exam goes on with its open question, asked aloud.
    assert inner.current is not None and wrong.lead.endswith(inner.current.question)


async def test_a_failing_store_does_not_stop_the_drill() -> None:
    async def broken(_i: int, _r: bool, _a: str) -> None:
        raise OSError("store gone")

    drill = ReviewStep(load_persona("czech-tutor"), [BUS], None, broken)
    result = await drill("Ich fahre mit dem Bus.")
    assert result.lead.startswith("Správně!")
