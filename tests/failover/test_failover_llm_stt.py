"""LLM and STT failover in the real session pipeline, each fault kind mid-response.

LLM chain: anthropic → openai → local; STT chain: deepgram → openai → local (fakes).
"""

from __future__ import annotations

import re

import pytest
from pipecat.frames.frames import VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame

from processors.failover.groups import failover_llm, failover_stt
from processors.failover.llm import CONTINUE_PROMPT, fragment
from testkit.failover_fakes import (
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    ServiceFault,
    numbered_audio,
)
from testkit.failover_rig import POLICY, REPLY, SENTENCES, run_session, user_says

FAULT_REASONS = {
    ServiceFault.SERVER: "server_error",
    ServiceFault.RATE_LIMIT: "rate_limit",
    ServiceFault.HANG: "timeout",
    ServiceFault.DISCONNECT: "disconnect",
    ServiceFault.GARBAGE: "malformed",
}
MID_SECOND_SENTENCE = 8  # tokens: "Check the METAR before you go. Then tune" | "the VOR ..."


def llm_chain():
    llms = [ScriptedLLM(REPLY) for _ in range(3)]
    group = failover_llm(list(zip(["anthropic", "openai", "local"], llms, strict=True)), POLICY)
    return llms, group


def assert_one_switch(run, role: str, old: str, new: str, reason: str) -> None:
    assert run.watch.notices == [
        {"type": "provider-switch", "role": role, "from": old, "to": new, "reason": reason}
    ]
    assert run.switches == [(role, old, new, reason)]
    [event] = run.events
    assert (event.kind, event.data) == (
        "provider_switch",
        {"role": role, "from": old, "to": new, "reason": reason},
    )


@pytest.mark.parametrize("fault", list(FAULT_REASONS))
async def test_llm_fault_mid_reply_is_continued_by_the_backup(tmp_path, fault):
    (primary, backup, local), group = llm_chain()
    # A 429 answers before any token (the provider refuses the request) and lasts.
    rate_limited = fault is ServiceFault.RATE_LIMIT
    primary.inject(fault, after=0 if rate_limited else MID_SECOND_SENTENCE, times=20)
    tts = ScriptedTTS(1)
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=group, tts=tts, groups=group
    )
    # The learner heard every sentence once, and the context holds the reply once.
    assert run.watch.sentences == SENTENCES
    assert tts.requests == SENTENCES
    assert run.assistant() == [REPLY]
    # The backup got the request once; after a cut it continued the partial reply.
    [messages] = backup.requests
    if rate_limited:
        assert messages[-1]["role"] == "user" and messages[-1]["content"] != CONTINUE_PROMPT
        assert len(primary.requests) == 1 + len(POLICY.rate_limit_backoff_s)
    else:
        partial = "".join(re.findall(r"\s*\S+", REPLY)[:MID_SECOND_SENTENCE]).strip()
        assert messages[-2:] == [
            {"role": "assistant", "content": partial},
            {"role": "user", "content": CONTINUE_PROMPT},
        ]
        assert fragment(partial) == "Then tune"  # the sentence the backup finished
    assert local.requests == []
    assert_one_switch(run, "llm", "anthropic", "openai", FAULT_REASONS[fault])


async def test_a_backup_that_restarts_its_reply_is_not_heard_twice(tmp_path):
    (primary, backup, _), group = llm_chain()
    primary.inject(ServiceFault.DISCONNECT, after=MID_SECOND_SENTENCE)
    backup.answer = lambda messages: REPLY  # ignores the instruction and starts over
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=group, tts=ScriptedTTS(1), groups=group
    )
    assert run.watch.sentences == SENTENCES
    assert run.assistant() == [REPLY]


PRE, SPEECH = 30, 50  # 20 ms frames before the VAD's start of speech, and during it


def utterance() -> list:
    audio = numbered_audio(1, PRE + SPEECH)
    return [
        audio[:PRE],
        [VADUserStartedSpeakingFrame(start_secs=0.2), *audio[PRE:]],
        [VADUserStoppedSpeakingFrame(stop_secs=0.2)],
    ]


@pytest.mark.parametrize("fault", list(FAULT_REASONS))
async def test_stt_fault_mid_utterance_and_the_backup_hears_all_of_it(tmp_path, fault):
    stts = [ScriptedSTT(n) for n in ("deepgram", "openai", "local")]
    group = failover_stt(list(zip([s.name for s in stts], stts, strict=True)), POLICY)
    primary, backup, local = stts
    primary.inject(fault, after=20, times=20)  # a disconnect strikes 20 frames into speech
    llm = ScriptedLLM(REPLY)
    run = await run_session(
        tmp_path, [*utterance(), 2.0], stt=group, llm=llm, tts=ScriptedTTS(1), groups=group
    )
    # The backup heard the utterance whole, from before the VAD's start to its end, once.
    [heard] = backup.transcripts
    count, first, last = map(int, re.findall(r"\d+", heard))
    assert first <= PRE + 1 and last == PRE + SPEECH and count == last - first + 1
    assert primary.transcripts == [] and local.transcripts == []
    # The learner's words reached the LLM once and the session went on.
    [request] = llm.requests
    assert request[-1] == {"role": "user", "content": heard}
    assert run.watch.sentences == SENTENCES and run.assistant() == [REPLY]
    assert_one_switch(run, "stt", "deepgram", "openai", FAULT_REASONS[fault])
