"""The learner memory in the store: review items with FSRS, report jobs, the learner model."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from fsrs import Rating

from contracts.assessment import AcsGrade, Assessment, Correction
from store import NotFoundError, Store
from store.learner_model import estimate_level
from store.models import utcnow
from store.reports import MAX_ATTEMPTS
from store.reviews import SCHEDULER, review_specs

BUS = Assessment(
    kind="gec",
    text="Ich fahre mit der Bus.",
    corrected="Ich fahre mit dem Bus.",
    errors=(Correction("der Bus", "dem Bus", "mit takes the dative", "case"),),
)
WORD = Assessment(
    kind="gec",
    text="Ich bekomme ein Handy für mein Geburtstag.",
    corrected="Ich bekomme ein Handy zum Geburtstag.",
    errors=(Correction("für mein", "zum", "zum Geburtstag", "vocabulary"),),
)


def acs(grade: str) -> Assessment:
    return Assessment(
        kind="acs",
        text="Vx is the best rate of climb.",
        grade=AcsGrade(
            "PA.IV.A.1", "PA.IV.A", "What are Vx and Vy?", grade, ("Vx: best angle",), "Vx…", "AFH"
        ),
    )


async def learner_and_session(store: Store, persona: str = "german-tutor") -> tuple[str, str]:
    key, _ = await store.create_api_key("k")
    learner = await store.create_learner(key.id, "Eva", "de")
    session, _ = await store.create_session(learner.id, key.id, persona, "local", "webrtc")
    return learner.id, session.id


async def test_a_mistake_becomes_a_due_review_item_and_the_same_mistake_lapses_it(
    store: Store,
) -> None:
    lid, sid = await learner_and_session(store)
    await store.add_assessment(sid, BUS.to_dict(), 1)
    await store.add_assessment(sid, WORD.to_dict(), 3)
    (bus, word) = await store.due_review_items(lid)
    assert (bus.kind, bus.prompt, bus.answer, bus.original, bus.corrected) == (
        "gec",
        "Ich fahre mit der Bus.",
        "Ich fahre mit dem Bus.",
        "der Bus",
        "dem Bus",
    )
    assert word.kind == "word" and word.corrected == "zum"
    # The same mistake again: the item lapses (FSRS "again"), no second item.
    await store.add_assessment(sid, replace(BUS, text="Wir fahren mit der Bus.").to_dict(), 5)
    items = await store.list_review_items(lid)
    assert len(items) == 2 and items[0].lapses == 1 and items[0].reps == 1
    (log,) = await store.review_logs(items[0].id)
    assert (log.rating, log.source, log.session_id) == (int(Rating.Again), "repeat", sid)


async def test_an_unsatisfactory_acs_answer_is_an_item_and_a_later_pass_recalls_it(
    store: Store,
) -> None:
    lid, sid = await learner_and_session(store, "aviation-examiner")
    await store.add_assessment(sid, acs("probe").to_dict(), 1)
    assert await store.list_review_items(lid) == []  # a probe is not a verdict
    await store.add_assessment(sid, acs("unsatisfactory").to_dict(), 3)
    (item,) = await store.list_review_items(lid)
    assert (item.kind, item.prompt, item.answer, item.category) == (
        "acs",
        "What are Vx and Vy?",
        "Vx…",
        "PA.IV.A",
    )
    await store.add_assessment(sid, acs("satisfactory").to_dict(), 5)
    (log,) = await store.review_logs(item.id)
    assert (log.rating, log.source) == (int(Rating.Good), "recall")


async def test_a_right_answer_moves_the_due_date_later_and_a_wrong_one_sooner(
    store: Store,
) -> None:
    lid, sid = await learner_and_session(store)
    await store.add_assessment(sid, BUS.to_dict(), 1)
    await store.add_assessment(sid, WORD.to_dict(), 3)
    bus, word = await store.list_review_items(lid)
    right = await store.review_item(sid, bus.id, True, "Ich fahre mit dem Bus.")
    wrong = await store.review_item(sid, word.id, False, "für mein Geburtstag")
    assert right.due > bus.due and right.due > wrong.due
    assert (right.due - utcnow()) > timedelta(minutes=9)  # FSRS's second learning step
    assert (wrong.due - utcnow()) < timedelta(minutes=2)  # back to the first
    # A learned item (due in days) answered wrong comes back within minutes: sooner.
    for _ in range(3):
        learned = await store.review_item(sid, bus.id, True)
    assert learned.state == "review" and learned.due - utcnow() > timedelta(days=1)
    lapsed = await store.review_item(sid, bus.id, False, "mit der Bus")
    assert lapsed.due < learned.due and lapsed.due - utcnow() <= timedelta(minutes=11)
    assert lapsed.state == "relearning"
    # The history has every rating, enough to compute SM-2 or FSRS again.
    assert [x.rating for x in await store.review_logs(bus.id)] == [3, 3, 3, 3, 1]
    assert await store.review_counts(lid) == {"total": 2, "due": 0, "learned": 0}  # in 1 and 10 min
    later = utcnow() + timedelta(minutes=12)
    assert [i.id for i in await store.due_review_items(lid, now=later)] == [
        word.id,
        bus.id,
    ]  # most overdue first


async def test_an_item_is_answered_only_in_its_learners_session(store: Store) -> None:
    lid, sid = await learner_and_session(store)
    await store.add_assessment(sid, BUS.to_dict(), 1)
    (item,) = await store.list_review_items(lid)
    _, other = await learner_and_session(store)
    with pytest.raises(NotFoundError):
        await store.review_item(other, item.id, True)


def test_review_specs_skip_a_correction_that_changes_nothing() -> None:
    same = Assessment(
        kind="gec",
        text="Hallo.",
        corrected="Hallo.",
        errors=(Correction("Hallo", "hallo", "", "spelling"),),
    )
    assert review_specs(same.to_dict()) == []
    assert SCHEDULER.enable_fuzzing is False


async def test_ending_a_session_queues_its_report_job_once(store: Store) -> None:
    _, sid = await learner_and_session(store)
    assert await store.get_report_job(sid) is None
    await store.set_session_status(sid, "active")
    assert await store.get_report_job(sid) is None
    await store.set_session_status(sid, "ended", "bye")
    await store.set_session_status(sid, "failed", "late")  # ignored: already terminal
    job = await store.get_report_job(sid)
    assert job is not None and (job.status, job.attempts) == ("pending", 0)


async def test_only_the_current_claim_finishes_a_report_and_a_dead_claim_is_taken_again(
    store: Store,
) -> None:
    _, sid = await learner_and_session(store)
    await store.set_session_status(sid, "ended")
    assert await store.claim_report("a:1", lease_s=0.05) == sid
    assert await store.claim_report("b:2", lease_s=60) is None  # held
    import asyncio

    await asyncio.sleep(0.1)  # a:1's lease runs out: it is taken for dead
    assert await store.claim_report("b:2", lease_s=60) == sid
    assert not await store.finish_report(sid, "a:1", {"summary": "late"})
    assert await store.finish_report(sid, "b:2", {"summary": "ok"})
    job = await store.get_report_job(sid)
    assert job is not None and (job.status, job.attempts, job.report) == (
        "done",
        2,
        {"summary": "ok"},
    )
    assert await store.claim_report("c:3", lease_s=60) is None  # done is done


async def test_a_job_that_keeps_failing_is_marked_failed(store: Store) -> None:
    _, sid = await learner_and_session(store)
    await store.set_session_status(sid, "ended")
    for i in range(MAX_ATTEMPTS):
        assert await store.claim_report(f"w:{i}", lease_s=60) == sid
        assert await store.release_report(sid, f"w:{i}", "no LLM", retry_in_s=0)
    assert await store.claim_report("w:last", lease_s=60) is None
    job = await store.get_report_job(sid)
    assert job is not None and (job.status, job.error) == ("failed", "no LLM")


async def test_the_learner_model_counts_weaknesses_levels_and_acs_mastery(store: Store) -> None:
    lid, sid = await learner_and_session(store)
    for i in range(3):
        await store.add_assessment(sid, replace(BUS, text=f"Mit der Bus {i}.").to_dict(), i)
    await store.add_assessment(sid, WORD.to_dict(), 9)
    await store.update_learner(lid, cefr_level="B1", interests=["Fußball", "Kochen"])
    await store.set_session_status(sid, "ended")
    model = await store.learner_model(lid)
    assert [w["category"] for w in model["weaknesses"]] == ["case", "vocabulary"]
    assert model["weaknesses"][0]["count"] == 3
    assert model["weaknesses"][0]["rules"] == [{"rule": "mit takes the dative", "count": 3}]
    assert model["learner"]["interests"] == ["Fußball", "Kochen"]
    assert [(h["cefr"], h["source"]) for h in model["level"]["history"]] == [
        ("A2", "created"),
        ("B1", "set"),
    ]
    assert model["sessions"] == 1 and model["last_session"]["id"] == sid
    assert model["series"]["sessions"][0]["mistakes"] == {"case": 3, "vocabulary": 1}
    assert model["acs"] is None
    # An examiner session: mastery per task from the last three grades.
    _, exam = await learner_and_session(store, "aviation-examiner")
    exam_learner = (await store.get_session(exam)).learner_id  # type: ignore[union-attr]
    await store.add_assessment(exam, acs("unsatisfactory").to_dict(), 1)
    await store.add_assessment(exam, acs("satisfactory").to_dict(), 3)
    pilot = (await store.learner_model(exam_learner))["acs"]
    assert pilot["tasks"]["PA.IV.A"]["mastery"] == 2  # round(5 * (0 + 1) / 2)
    assert pilot["tasks"]["PA.I.A"] == {
        "title": pilot["tasks"]["PA.I.A"]["title"],
        "mastery": 0,
        "results": 0,
        "covered": False,
        "last_grade": None,
    }
    assert "IV" not in {a["area"] for a in pilot["uncovered_areas"]}
    assert "I" in {a["area"] for a in pilot["uncovered_areas"]}
    assert pilot["weak_tasks"] == ["PA.IV.A"] and pilot["asked"] == ["PA.IV.A.1"]


async def test_updating_an_unknown_or_foreign_learner_is_refused(store: Store) -> None:
    lid, _ = await learner_and_session(store)
    with pytest.raises(NotFoundError):
        await store.update_learner(lid, "another-key", name="X")
    with pytest.raises(ValueError):
        await store.update_learner(lid, cefr_level="D9")


@pytest.mark.parametrize(
    ("turns", "errors", "words", "level"),
    [
        (5, 0, 50, "A2"),  # too little evidence
        (12, 1, 96, "B1"),  # few errors in full sentences
        (12, 1, 40, "A2"),  # few errors but short answers
        (12, 9, 96, "A1"),  # many errors
        (12, 4, 96, "A2"),
    ],
)
def test_the_level_estimate_moves_one_step_on_enough_evidence(
    turns: int, errors: int, words: int, level: str
) -> None:
    estimate, evidence = estimate_level("A2", turns, errors, words)
    assert estimate == level and evidence["learner_turns"] == turns and evidence["rule"]
