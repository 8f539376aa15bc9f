"""Assessments are stored as structured rows per learner turn, and refused when malformed."""

from __future__ import annotations

import pytest

from contracts.assessment import AcsGrade, Assessment, Correction
from runtime.store_relay import RELAYED_CALLS
from store import Store
from testkit.api_support import V1, Api


async def new_session(store: Store) -> str:
    key, _ = await store.create_api_key("k")
    learner = await store.create_learner(key.id, "Eva", "de")
    session, _ = await store.create_session(learner.id, key.id, "german-tutor", "local", "webrtc")
    return session.id


GEC = Assessment(
    kind="gec",
    text="Der Mädchen spielt mit der Ball.",
    corrected="Das Mädchen spielt mit dem Ball.",
    errors=(
        Correction("Der", "Das", "Mädchen is neuter: das", "gender"),
        Correction("der Ball", "dem Ball", "mit takes the dative", "case"),
    ),
)
ACS = Assessment(
    kind="acs",
    text="Vx is the best rate of climb.",
    grade=AcsGrade(
        "PA.IV.A.1", "PA.IV.A", "What are Vx and Vy?", "unsatisfactory", ("Vx: best angle",), "", ""
    ),
)


async def test_each_error_is_a_row_and_only_the_first_was_spoken(store: Store) -> None:
    sid = await new_session(store)
    assert await store.add_assessment(sid, GEC.to_dict(), 1) == 2
    rows = await store.list_mistakes(sid)
    assert [(m.original, m.corrected, m.category, m.spoken) for m in rows] == [
        ("Der", "Das", "gender", True),
        ("der Ball", "dem Ball", "case", False),
    ]
    assert {m.turn_index for m in rows} == {1}
    assert rows[0].corrected_sentence == "Das Mädchen spielt mit dem Ball."


async def test_an_acs_grade_is_one_row_with_task_and_missing_points(store: Store) -> None:
    sid = await new_session(store)
    assert await store.add_assessment(sid, ACS.to_dict(), 3) == 1
    (row,) = await store.list_acs_results(sid)
    assert (row.question_id, row.task, row.grade, row.missing, row.turn_index) == (
        "PA.IV.A.1",
        "PA.IV.A",
        "unsatisfactory",
        ["Vx: best angle"],
        3,
    )


async def test_a_turn_without_errors_writes_nothing(store: Store) -> None:
    sid = await new_session(store)
    clean = Assessment(kind="gec", text="Ich wohne in Berlin.", corrected="Ich wohne in Berlin.")
    assert await store.add_assessment(sid, clean.to_dict(), 0) == 0
    assert await store.list_mistakes(sid) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "essay", "text": "x"},
        {"kind": "acs", "text": "x", "grade": {"grade": "excellent"}},
        {"kind": "gec", "text": 5, "errors": []},
        {"kind": "gec", "text": "x", "errors": "none"},
    ],
)
async def test_a_malformed_assessment_is_refused(store: Store, bad: dict) -> None:
    sid = await new_session(store)
    with pytest.raises(ValueError):
        await store.add_assessment(sid, bad, 0)
    with pytest.raises(ValueError):
        await store.add_assessment(sid, GEC.to_dict(), -1)


def test_a_session_process_may_relay_its_assessments() -> None:
    assert "add_assessment" in RELAYED_CALLS


async def test_the_session_api_lists_each_turns_assessment(lite: Api) -> None:
    created = await lite.session()
    sid = created["session_id"]
    await lite.store.add_turn(sid, {"index": 0, "role": "bot", "text": "Hallo!"})
    await lite.store.add_turn(sid, {"index": 1, "role": "learner", "text": GEC.text})
    await lite.store.add_assessment(sid, GEC.to_dict(), 1)
    r = await lite.client.get(f"{V1}/sessions/{sid}", headers=lite.a)
    assert r.status_code == 200, r.text
    bot, learner = r.json()["turns"]
    assert bot["assessment"] is None
    assessment = learner["assessment"]
    assert assessment["corrected"] == "Das Mädchen spielt mit dem Ball."
    assert [m["category"] for m in assessment["mistakes"]] == ["gender", "case"]
    assert [m["spoken"] for m in assessment["mistakes"]] == [True, False]
