"""The turn recorder on a scripted conversation through the real session pipeline (fakes).

One session is played once for the module: the greeting, a learner turn and its reply, a
one-word backchannel while the bot speaks, a second learner turn, a barge-in during its
reply, and the reply to the barge-in. The tests read the turns it recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
import pytest_asyncio
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    LLMContextFrame,
    LLMTextFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameDirection
from pipecat.workers.runner import WorkerRunner

from config.personas import load_persona
from config.settings import Settings
from contracts.turns import TurnRecord
from observers.turn_recorder import TurnRecorderObserver, service_kind
from pipelines.session import SessionPipeline, build_session
from testkit.fakes import FakeLLM, FakeTTS, ScriptedTransport

SENTENCES = [
    "Včera jsem byl v kině.",
    "Jaký film jsi viděl?",
    "A líbil se ti?",
]
REPLY = " ".join(SENTENCES)
FIRST = "Jaké přístroje potřebuji?"
SECOND = "Dobře, děkuji moc"
BARGE_IN = "Počkej, mám otázku k tomu"
SPEECH_S = {FIRST: 0.5, "mhm": 0.3, SECOND: 0.5, BARGE_IN: 0.3}
"""How long the learner speaks each utterance (VAD start → VAD stop), seconds."""
VAD_PAD_S = 0.2
"""``start_secs``/``stop_secs`` of the injected VAD frames."""
TOKEN_DELAY_S = 0.01
SENTENCE_CHUNKS = 25
"""20 ms chunks per TTS sentence: each sentence plays for 0.5 s."""
TIMELINE_TOLERANCE_MS = 150

module_loop = pytest.mark.asyncio(loop_scope="module")
pytestmark = module_loop


class MeteredLLM(FakeLLM):
    """``FakeLLM`` that reports TTFB like an LLM service: request in → first token out."""

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, LLMContextFrame):
            await self.start_ttfb_metrics()
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if isinstance(frame, LLMTextFrame):
            await self.stop_ttfb_metrics()
        await super().push_frame(frame, direction)


def learner_says(session: SessionPipeline, text: str):
    """A script step: VAD start, ``SPEECH_S[text]`` of speech, the transcript, VAD stop.

    Frames are created when they are queued: the latency observer times from a frame's
    creation, as it would for frames the VAD makes in real time.
    """

    async def step():
        await session.worker.queue_frame(VADUserStartedSpeakingFrame(start_secs=VAD_PAD_S))
        await asyncio.sleep(SPEECH_S[text])
        await session.worker.queue_frames(
            [
                TranscriptionFrame(text=text, user_id="learner", timestamp="", finalized=True),
                VADUserStoppedSpeakingFrame(stop_secs=VAD_PAD_S),
            ]
        )

    return step


@dataclass
class Conversation:
    session: SessionPipeline
    recorder: TurnRecorderObserver
    """A second recorder, built by hand with an ``on_turn`` callback."""
    emitted: list[TurnRecord]
    """What ``on_turn`` was awaited with, in order."""
    llm: MeteredLLM

    @property
    def turns(self) -> list[TurnRecord]:
        return self.session.recorder.turns

    def by_role(self, role: str) -> list[TurnRecord]:
        return [t for t in self.turns if t.role == role]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def conversation(tmp_path_factory) -> Conversation:
    # Czech persona: its turns end after a speech timeout, which works on injected VAD
    # frames (smart-turn needs real audio).
    settings = Settings(
        home=tmp_path_factory.mktemp("home"), speech_timeout_ms=100, min_words_to_interrupt=3
    )
    emitted: list[TurnRecord] = []

    async def on_turn(record: TurnRecord) -> None:
        await asyncio.sleep(0)  # only an awaited callback gets past this point
        emitted.append(record)

    recorder = TurnRecorderObserver(on_turn=on_turn)
    latency = UserBotLatencyObserver()
    recorder.attach_latency(latency)
    llm = MeteredLLM(REPLY, token_delay=TOKEN_DELAY_S)
    session = build_session(
        load_persona("czech-tutor"),
        stt=IdentityFilter(),  # transcripts are injected
        llm=llm,
        tts=FakeTTS(chunks=SENTENCE_CHUNKS),
        transport=ScriptedTransport(),
        settings=settings,
        observers=[recorder, latency],
        audio_out_sample_rate=16000,
    )
    recorder.attach(session.user_aggregator, session.assistant_aggregator)
    script = [
        1.0,  # the greeting plays (0.5 s)
        learner_says(session, FIRST),
        0.8,  # the reply (3 sentences, 1.5 s) starts ~0.45 s after the learner's last word
        learner_says(session, "mhm"),  # a backchannel: no turn, no interruption
        1.6,  # the reply ends
        learner_says(session, SECOND),
        0.6,  # the barge-in is transcribed ~1.1 s after the last word: mid second sentence
        learner_says(session, BARGE_IN),
        2.3,  # the full reply to the barge-in
    ]
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)
    await session.greet()

    async def drive():
        for step in script:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                await step()
        await session.worker.queue_frame(EndFrame())

    driver = asyncio.create_task(drive())
    await asyncio.wait_for(runner.run(), 30)
    await driver
    await session.recorder.flush()
    await recorder.flush()
    return Conversation(session=session, recorder=recorder, emitted=emitted, llm=llm)


def reply_to(conv: Conversation, learner: TurnRecord) -> TurnRecord:
    return next(t for t in conv.turns[learner.index + 1 :] if t.role == "bot")


def learner_turn(conv: Conversation, text: str) -> TurnRecord:
    return next(t for t in conv.by_role("learner") if t.text == text)


# -- the turns --------------------------------------------------------------------------------


async def test_conversation_has_greeting_three_learner_turns_and_their_replies(conversation):
    assert [t.role for t in conversation.turns] == ["bot"] + ["learner", "bot"] * 3


async def test_greeting_is_turn_zero_spoken_by_the_bot_without_latency(conversation):
    greeting = conversation.turns[0]

    assert greeting.index == 0
    assert greeting.role == "bot"
    assert greeting.text == conversation.session.persona.greeting
    assert greeting.latency_ms is None
    assert greeting.ttfb_ms == {}
    assert not greeting.interrupted
    assert 0 <= greeting.start_ms < greeting.end_ms


async def test_learner_turns_hold_the_injected_transcriptions_not_the_backchannel(conversation):
    assert [t.text for t in conversation.by_role("learner")] == [FIRST, SECOND, BARGE_IN]
    for turn in conversation.by_role("learner"):
        assert turn.latency_ms is None
        assert turn.ttfb_ms == {}
        assert not turn.interrupted


async def test_learner_turn_spans_the_speech_without_the_vad_padding(conversation):
    for turn in conversation.by_role("learner"):
        spoken_ms = (turn.end_ms - turn.start_ms) / 1000
        assert spoken_ms == pytest.approx(SPEECH_S[turn.text], abs=0.1), turn


async def test_backchannel_does_not_stretch_the_next_learner_turn_back_to_it(conversation):
    # "mhm" was said during the first reply; the second turn starts after that reply ended.
    second = learner_turn(conversation, SECOND)
    first_reply = reply_to(conversation, learner_turn(conversation, FIRST))

    assert second.start_ms > first_reply.end_ms


async def test_bot_replies_hold_the_llm_text(conversation):
    replies = [t for t in conversation.by_role("bot")[1:] if not t.interrupted]

    assert [t.text for t in replies] == [REPLY, REPLY]
    assert len(conversation.llm.requests) == 3


async def test_bot_latency_is_a_positive_int_matching_the_timeline(conversation):
    for learner in conversation.by_role("learner"):
        bot = reply_to(conversation, learner)
        assert isinstance(bot.latency_ms, int) and bot.latency_ms > 0, bot
        gap_ms = bot.start_ms - learner.end_ms
        assert abs(gap_ms - bot.latency_ms) <= TIMELINE_TOLERANCE_MS, (learner, bot)
        # The reply cannot start before the turn-end timeout (100 ms) after the last word.
        assert bot.latency_ms >= 100


async def test_bot_turns_carry_llm_and_tts_ttfb(conversation):
    for bot in conversation.by_role("bot")[1:]:
        assert {"llm", "tts"} <= bot.ttfb_ms.keys(), bot
        assert all(isinstance(v, int) and v >= 0 for v in bot.ttfb_ms.values())
        # The fake LLM waits one token delay before its first token.
        assert bot.ttfb_ms["llm"] >= TOKEN_DELAY_S * 1000
        assert bot.ttfb_ms["llm"] < bot.latency_ms


async def test_turns_are_indexed_in_order_and_ordered_by_start(conversation):
    turns = conversation.turns

    assert [t.index for t in turns] == list(range(len(turns)))
    starts = [t.start_ms for t in turns]
    assert all(isinstance(s, int) for s in starts)
    assert starts == sorted(starts)
    assert all(t.end_ms >= t.start_ms for t in turns)


async def test_interrupted_bot_turn_keeps_only_the_spoken_sentence(conversation):
    interrupted = [t for t in conversation.by_role("bot") if t.interrupted]

    assert len(interrupted) == 1
    cut = interrupted[0]
    assert cut.text == SENTENCES[0]
    # It is the reply to the second learner turn, and it ends when the barge-in starts.
    assert cut is reply_to(conversation, learner_turn(conversation, SECOND))
    barge_in = learner_turn(conversation, BARGE_IN)
    assert cut.end_ms - barge_in.start_ms == pytest.approx(
        SPEECH_S[BARGE_IN] * 1000 + VAD_PAD_S * 1000, abs=TIMELINE_TOLERANCE_MS
    )


async def test_on_turn_is_awaited_once_per_turn_in_order(conversation):
    emitted = conversation.emitted

    assert emitted == conversation.recorder.turns
    assert [id(t) for t in emitted] == [id(t) for t in conversation.recorder.turns]
    # The hand-built recorder saw the same conversation as the session's own.
    assert [(t.role, t.text, t.interrupted) for t in emitted] == [
        (t.role, t.text, t.interrupted) for t in conversation.turns
    ]


async def test_to_dict_is_the_transcript_turn_schema(conversation):
    bot = conversation.turns[2]

    assert bot.to_dict() == {
        "index": 2,
        "role": "bot",
        "text": REPLY,
        "start_ms": bot.start_ms,
        "end_ms": bot.end_ms,
        "latency_ms": bot.latency_ms,
        "ttfb_ms": bot.ttfb_ms,
        "interrupted": False,
    }


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("LocalWhisperSTTService#0", "stt"),
        ("OpenAILLMService#3", "llm"),
        ("EspeakTTSService#1", "tts"),
        ("MeteredLLM#0", "llm"),
        ("SentenceAggregator#0", "SentenceAggregator#0"),
    ],
)
async def test_service_kind_maps_processor_names(name, kind):
    assert service_kind(name) == kind
