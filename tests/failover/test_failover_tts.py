"""TTS failover in the real session pipeline: each fault kind mid-reply, 429 backoff, breaker.

Chain under test: primary → backup → text-only, as in every tier (fakes for the providers).
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from pipecat.frames.frames import TTSSpeakFrame

from processors.failover.groups import failover_tts
from services.text_only_tts import TextOnlyTTSService
from testkit.failover_fakes import ScriptedLLM, ScriptedTTS, ServiceFault
from testkit.failover_rig import POLICY, REPLY, SENTENCES, run_session, user_says

S1, S2, S3 = SENTENCES

# fault on the primary, 2 chunks into the second sentence -> reasons the notice may give
FAULTS = {
    ServiceFault.SERVER: {"server_error"},
    ServiceFault.HANG: {
        "timeout",
        "truncated",
    },  # the HTTP context times out empty, or the watchdog
    ServiceFault.DISCONNECT: {"disconnect"},
    ServiceFault.GARBAGE: {"malformed"},
    ServiceFault.CUT: {"truncated"},
    ServiceFault.RATE_LIMIT: {"rate_limit"},  # persistent: the backoff runs out first
}


def chain(policy=POLICY, **primary_kw):
    primary, backup, text = ScriptedTTS(1, **primary_kw), ScriptedTTS(2), TextOnlyTTSService()
    group = failover_tts([("cartesia", primary), ("deepgram", backup), ("text", text)], policy)
    return primary, backup, text, group


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_mid_reply_moves_to_the_backup_and_no_sentence_is_lost(tmp_path, fault):
    primary, backup, text, group = chain()
    # A rate limit that lasts: every request to the primary from the second sentence on.
    primary.inject(fault, after=2, skip=1, times=20 if fault is ServiceFault.RATE_LIMIT else 1)
    run = await run_session(
        tmp_path,
        [user_says("Co mám udělat?"), 2.5],
        llm=ScriptedLLM(REPLY),
        tts=group,
        groups=group,
    )
    # The session went on: the whole reply reached the speaker and the context, once each.
    assert run.watch.sentences == SENTENCES
    assert run.assistant() == [REPLY]
    # The sentence that failed was spoken, whole, by the backup, exactly once.
    assert backup.requests.count(S2) == 1 and backup.requests[-1] == S3
    assert run.watch.audio_before()[S2][2] == backup.chunks_for(S2)
    assert text.sentences == []
    # One notice, one on_switch call, one stored event.
    [notice] = run.watch.notices
    assert notice["reason"] in FAULTS[fault]
    assert (notice["role"], notice["from"], notice["to"]) == ("tts", "cartesia", "deepgram")
    assert run.switches == [("tts", "cartesia", "deepgram", notice["reason"])]
    [event] = run.events
    assert event.kind == "provider_switch" and event.data == {
        "role": "tts",
        "from": "cartesia",
        "to": "deepgram",
        "reason": notice["reason"],
    }


async def test_a_429_that_clears_within_the_backoff_costs_no_switch(tmp_path):
    primary, backup, _, group = chain()
    primary.inject(ServiceFault.RATE_LIMIT, skip=1, times=2)  # two 429s, then it answers
    started = time.monotonic()
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=ScriptedLLM(REPLY), tts=group
    )
    assert run.watch.sentences == SENTENCES
    # Retried on the same provider, which answered in the end; S3 may have been asked for
    # (and refused) while S2 was failing.
    assert primary.requests[0] == S1 and primary.requests.count(S2) >= 2
    assert primary.requests[-2:] == [S2, S3]
    assert backup.requests == [] and run.watch.notices == [] and run.events == []
    assert time.monotonic() - started >= POLICY.rate_limit_backoff_s[0]


async def test_when_every_voice_fails_the_reply_still_reaches_the_learner_as_text(tmp_path):
    primary, backup, text, group = chain()
    primary.inject(ServiceFault.SERVER, skip=1)
    backup.inject(ServiceFault.SERVER, after=1)
    run = await run_session(
        tmp_path,
        [user_says("Co mám udělat?"), 2.5],
        llm=ScriptedLLM(REPLY),
        tts=group,
        groups=group,
    )
    assert run.watch.sentences == SENTENCES
    assert run.assistant() == [REPLY]
    assert run.watch.bot_output() == SENTENCES  # what the browser room shows
    assert text.sentences == [S2, S3]
    assert [(n["from"], n["to"]) for n in run.watch.notices] == [
        ("cartesia", "deepgram"),
        ("deepgram", "text"),
    ]
    assert [e.data["to"] for e in run.events] == ["deepgram", "text"]
    # Nothing was heard for the last sentence: its only audio is the text link's silence.
    assert set(run.watch.audio_before()[S3]) == {0}


async def test_the_primary_is_tried_again_after_its_cool_down(tmp_path):
    policy = replace(POLICY, cooldown_s=0.8)
    primary, backup, _, group = chain(policy)
    primary.inject(ServiceFault.SERVER, skip=1)
    run = await run_session(
        tmp_path,
        [user_says("Co mám udělat?"), 2.5, user_says("A pak?"), 2.5],
        llm=ScriptedLLM(REPLY),
        tts=group,
        groups=group,
    )
    assert run.watch.sentences == SENTENCES * 2
    assert [n["reason"] for n in run.watch.notices] == ["server_error", "recovered"]
    assert [(e.data["from"], e.data["to"]) for e in run.events] == [
        ("cartesia", "deepgram"),
        ("deepgram", "cartesia"),
    ]
    # The second reply is spoken by the primary again.
    assert primary.requests[-3:] == SENTENCES
    assert backup.requests.count(S1) <= 1 and backup.requests[-1] == S3


async def test_a_barge_in_during_a_stalled_sentence_drops_it_instead_of_replaying_it(tmp_path):
    # The second sentence stalls; the watchdog (or Pipecat's context timeout) would act after
    # 2 s, the learner speaks first.
    policy = replace(POLICY, ttfb_timeout_s=2.0)
    primary, backup, _, group = chain(policy, stop_frame_timeout_s=2.0)
    primary.inject(ServiceFault.HANG, after=2, skip=1)
    run = await run_session(
        tmp_path,
        [user_says("Co mám udělat?"), 0.9, user_says("Počkej, mám otázku k tomu"), 2.0],
        llm=ScriptedLLM(REPLY),
        tts=group,
        groups=group,
    )
    # The learner cut the bot off before the watchdog fired: the stalled sentence is dropped
    # with the rest of that reply, and the next reply is spoken whole by the same provider.
    assert run.watch.sentences == [S1, *SENTENCES]
    assert backup.requests == [] and run.watch.notices == [] and run.events == []
    assert run.assistant()[-1] == REPLY


GREETING = "Ahoj, jsem tvoje lektorka. O čem si dnes povíme?"


@pytest.mark.parametrize("fault", [None, ServiceFault.SERVER])
async def test_a_greeting_outside_an_llm_turn_is_recorded_once_as_a_bot_turn(tmp_path, fault):
    # A TTSSpeakFrame outside an LLM turn is committed by the TTS's push-aggregation frame,
    # which must not overtake the sentence's text held by the group.
    primary, backup, _, group = chain()
    if fault is not None:
        primary.inject(fault, after=2)
    run = await run_session(
        tmp_path, [[TTSSpeakFrame(GREETING)], 1.5], llm=ScriptedLLM(REPLY), tts=group
    )
    assert run.watch.sentences == [GREETING]
    messages = run.session.context.get_messages()
    assert messages[-1] == {"role": "assistant", "content": GREETING}
    assert [m.get("content") for m in messages if isinstance(m, dict)].count(GREETING) == 1
    assert [(t.role, t.text) for t in run.session.recorder.turns] == [("bot", GREETING)]
    assert backup.requests == ([GREETING] if fault else [])


async def test_a_group_remembers_only_recent_frame_ids(tmp_path):
    """Pipecat's ParallelPipeline keeps every passed frame's id forever; a group keeps 4096."""
    *_, group = chain()
    [switcher] = group
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=ScriptedLLM(REPLY), tts=group
    )
    assert run.watch.sentences == SENTENCES
    passed = len(switcher._seen_ids)
    assert passed > 50  # the reply's audio chunks and text went through it
    for frame_id in range(-10_000, 0):  # an hour's frames, in short
        switcher._seen_ids.add(frame_id)
    assert len(switcher._seen_ids) == 4096
    assert -1 in switcher._seen_ids and -10_000 not in switcher._seen_ids
