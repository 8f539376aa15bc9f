"""A learner's data: export everything, erase it, keep only anonymous usage for billing."""

from __future__ import annotations

from contracts.assessment import Assessment, Correction
from store import Store
from testkit.api_support import V1, Api, assert_error

SAID = "Ich fahre mit der Bus nach Hause."
BUS = Assessment(
    kind="gec",
    text=SAID,
    corrected="Ich fahre mit dem Bus nach Hause.",
    errors=(Correction("der Bus", "dem Bus", "mit takes the dative", "case"),),
)


async def dump_text(store: Store) -> str:
    """Every value of every table, as one string (to look for a learner's words)."""
    from sqlalchemy import text

    from store.models import Base

    out = []
    async with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = (await conn.execute(text(f"SELECT * FROM {table.name}"))).all()
            out.extend(repr(r) for r in rows)
    return "\n".join(out)


async def test_export_then_erase_leaves_nothing_but_anonymous_usage(api: Api) -> None:
    lid = await api.phone_learner("+420601999888", name="Zdeňka Nováková", interests=["jazz"])
    sid = (await api.session(lid))["session_id"]
    await api.store.add_turn(sid, {"index": 0, "role": "bot", "text": "Hallo Zdeňka!"})
    await api.store.add_turn(sid, {"index": 1, "role": "learner", "text": SAID})
    await api.store.add_assessment(sid, BUS.to_dict(), 1)
    await api.store.add_usage_event(sid, "tts", "local", "pico", "characters", 120)
    await api.store.add_session_event(sid, "provider_switch", {"role": "tts", "to": "local"})
    assert_error(await api.client.delete(f"{V1}/learners/{lid}", headers=api.a), 409)
    await api.client.delete(f"{V1}/sessions/{sid}", headers=api.a)  # live: end it first

    r = await api.client.get(f"{V1}/learners/{lid}/export", headers=api.a)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["learner"]["name"] == "Zdeňka Nováková" and data["learner"]["phone"]
    (session,) = data["sessions"]
    assert [t["text"] for t in session["turns"]] == ["Hallo Zdeňka!", SAID]
    assert session["mistakes"][0]["corrected"] == "dem Bus"
    assert session["usage"][0]["quantity"] == 120 and session["events"]
    assert data["review_items"][0]["answer"] == BUS.corrected
    assert [lv["source"] for lv in data["levels"]] == ["created"]
    assert_error(await api.client.get(f"{V1}/learners/{lid}/export", headers=api.b), 404)
    before = await api.store.usage_by("tier", owner_key_id=api.key_a_id)

    r = await api.client.delete(f"{V1}/learners/{lid}", headers=api.a)
    assert r.status_code == 204, r.text
    assert_error(await api.client.get(f"{V1}/learners/{lid}", headers=api.a), 404)
    assert_error(await api.client.get(f"{V1}/learners/{lid}/export", headers=api.a), 404)
    assert await api.store.list_learners(api.key_a_id) == []  # the placeholder is not listed
    everything = await dump_text(api.store)
    for word in ("Zdeňka", "Nováková", "+420601999888", "jazz", "der Bus", "mit takes"):
        assert word not in everything, word
    # Billing still sees the usage, per key and tier, without who or what.
    after = await api.store.usage_by("tier", owner_key_id=api.key_a_id)
    assert (
        [(g.key, g.quantity("tts", "characters")) for g in after]
        == [(g.key, g.quantity("tts", "characters")) for g in before]
        == [("local", 120.0)]
    )
    # The phone number is free again; a second erasure finds nothing.
    assert (await api.phone_learner("+420601999888", name="New")) != lid
    assert_error(await api.client.delete(f"{V1}/learners/{lid}", headers=api.a), 404)


async def test_retention_purges_old_transcripts_and_keeps_the_learner_model(api: Api) -> None:
    from datetime import timedelta

    from runtime.housekeeping import purge_old_transcripts
    from store.models import utcnow

    lid = await api.learner()
    first, second = (await api.session(lid))["session_id"], (await api.session(lid))["session_id"]
    for sid in (first, second):
        await api.store.add_turn(sid, {"index": 1, "role": "learner", "text": SAID})
        await api.store.add_assessment(sid, BUS.to_dict(), 1)
        await api.store.set_session_status(sid, "ended")
    assert await purge_old_transcripts(api.store, None) == 0  # unset: keep everything
    assert await purge_old_transcripts(api.store, 30) == 0  # both ended just now
    cut = await api.store.purge_transcripts(utcnow() + timedelta(seconds=1))  # a day later
    assert cut == 2
    assert await api.store.list_turns(first) == [] and await api.store.list_turns(second) == []
    assert len(await api.store.list_mistakes(first)) == 1  # the learner model stays
