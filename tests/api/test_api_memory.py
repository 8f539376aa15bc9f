"""The learner memory over HTTP: PATCH a learner, progress, review sessions, session reports."""

from __future__ import annotations

from contracts.assessment import Assessment, Correction
from pipelines.memory import LearnerMemory
from runtime.report_jobs import ReportWorker
from testkit.api_support import V1, Api, assert_error
from testkit.fake_chat import ScriptedChat

BUS = Assessment(
    kind="gec",
    text="Ich fahre mit der Bus.",
    corrected="Ich fahre mit dem Bus.",
    errors=(Correction("der Bus", "dem Bus", "mit takes the dative", "case"),),
)


async def test_patch_sets_name_level_and_interests_and_keeps_the_rest(lite: Api) -> None:
    lid = await lite.learner(interests=["Fußball"])
    r = await lite.client.patch(
        f"{V1}/learners/{lid}", json={"cefr_level": "B1", "interests": ["Kochen"]}, headers=lite.a
    )
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["cefr_level"], r.json()["interests"]) == (
        "Eva",
        "B1",
        ["Kochen"],
    )
    progress = (await lite.client.get(f"{V1}/learners/{lid}/progress", headers=lite.a)).json()
    assert [h["source"] for h in progress["level"]["history"]] == ["created", "set"]
    # Another key's learner, bad levels and unknown fields are refused with a message.
    assert_error(
        await lite.client.patch(f"{V1}/learners/{lid}", json={"name": "X"}, headers=lite.b),
        404,
        "learner_not_found",
    )
    for bad in ({"cefr_level": "D9"}, {"name": ""}, {"phone": "+420601123456"}):
        r = await lite.client.patch(f"{V1}/learners/{lid}", json=bad, headers=lite.a)
        assert r.status_code == 422, (bad, r.text)


async def test_progress_has_the_model_and_its_series(lite: Api) -> None:
    lid = await lite.learner()
    sid = (await lite.session(lid))["session_id"]
    await lite.store.add_assessment(sid, BUS.to_dict(), 1)
    r = await lite.client.get(f"{V1}/learners/{lid}/progress", headers=lite.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["weaknesses"][0]["category"] == "case" and body["mistakes"] == 1
    assert body["review"] == {"total": 1, "due": 1, "learned": 0}
    assert body["due_items"][0]["answer"] == "Ich fahre mit dem Bus."
    assert body["series"]["sessions"][0]["mistakes"] == {"case": 1}
    assert_error(await lite.client.get(f"{V1}/learners/{lid}/progress", headers=lite.b), 404)


async def test_the_next_session_is_told_the_memory_and_a_review_session_its_due_items(
    lite: Api,
) -> None:
    lid = await lite.learner(interests=["Fußball"])
    # Nothing due yet: a review session has nothing to drill.
    r = await lite.client.post(
        f"{V1}/sessions",
        json={
            "persona": "german-tutor",
            "tier": "local",
            "transport": "webrtc",
            "learner_id": lid,
            "mode": "review",
        },
        headers=lite.a,
    )
    assert_error(r, 409, "nothing_due")
    first = (await lite.session(lid))["session_id"]
    await lite.store.add_assessment(first, BUS.to_dict(), 1)
    await lite.client.delete(f"{V1}/sessions/{first}", headers=lite.a)
    await lite.session(lid)
    spec = lite.sup.calls[-1][1]
    memory = LearnerMemory.from_json(spec.memory)
    assert spec.mode == "conversation" and memory is not None
    assert memory.returning and memory.name == "Eva" and memory.interests == ("Fußball",)
    assert memory.weaknesses[0]["category"] == "case"
    assert memory.review[0]["answer"] == "Ich fahre mit dem Bus."
    review = await lite.session(lid, mode="review")
    spec = lite.sup.calls[-1][1]
    assert spec.mode == "review" and LearnerMemory.from_json(spec.memory).review  # type: ignore[union-attr]
    detail = (await lite.client.get(f"{V1}/sessions/{review['session_id']}", headers=lite.a)).json()
    assert detail["id"] == review["session_id"] and detail["mode"] == "review"


async def test_the_report_is_written_after_the_session_ends(lite: Api) -> None:
    lid = await lite.learner()
    sid = (await lite.session(lid))["session_id"]
    assert_error(
        await lite.client.get(f"{V1}/sessions/{sid}/report", headers=lite.a),
        409,
        "session_not_ended",
    )
    await lite.store.add_turn(sid, {"index": 0, "role": "bot", "text": "Hallo!"})
    await lite.store.add_turn(sid, {"index": 1, "role": "learner", "text": BUS.text})
    await lite.store.add_assessment(sid, BUS.to_dict(), 1)
    await lite.client.delete(f"{V1}/sessions/{sid}", headers=lite.a)
    r = await lite.client.get(f"{V1}/sessions/{sid}/report", headers=lite.a)
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["report"] is None
    chat = ScriptedChat(objects=[{"summary": "Eva talked about the bus.", "strengths": ["fluent"]}])
    worker = ReportWorker(
        lite.store, lite.app.state.ctx.settings, None, llms_for=lambda _tier: [("local", chat)]
    )
    assert await worker.run_one() == sid
    body = (await lite.client.get(f"{V1}/sessions/{sid}/report", headers=lite.a)).json()
    report = body["report"]
    assert body["status"] == "done" and body["attempts"] == 1
    assert report["summary"] == "Eva talked about the bus." and report["written_by"] == "local"
    assert report["corrections"][0]["corrected"] == "dem Bus"
    assert report["practise"][0]["category"] == "case"
    assert report["level"]["before"] == "A2" and report["level"]["evidence"]["learner_turns"] == 1
    # The transcript reached the model as data, in the user message, not the instructions.
    system, user = chat.asked[0]
    assert "Ich fahre mit der Bus" in user["content"] and "der Bus" not in system["content"]
    assert_error(await lite.client.get(f"{V1}/sessions/{sid}/report", headers=lite.b), 404)
