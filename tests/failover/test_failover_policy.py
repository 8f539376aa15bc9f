"""Failover policy, fault names, and how a continuation is joined to the partial reply."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import ErrorFrame, LLMTextFrame
from pipecat.utils.errors import ErrorCategory

from processors.failover.groups import FailoverPolicy, classify_fault, failover_tts
from processors.failover.llm import LLMTracker, fragment
from processors.failover.policy import REASONS
from processors.failover.tracker import Item
from services.text_only_tts import TextOnlyTTSService


def test_the_default_policy_holds_the_issue_numbers_and_scales_for_tests():
    policy = FailoverPolicy()
    assert (policy.ttfb_timeout_s, policy.request_cap_s) == (5.0, 20.0)
    assert policy.rate_limit_backoff_s == (1.0, 2.0, 4.0)
    fast = policy.scaled(0.1)
    assert fast.ttfb_timeout_s == pytest.approx(0.5)
    assert fast.rate_limit_backoff_s == pytest.approx((0.1, 0.2, 0.4))
    assert fast.stt_preroll_s == policy.stt_preroll_s
    with pytest.raises(ValueError):
        policy.scaled(0)


@pytest.mark.parametrize(
    "error, category, reason",
    [
        ("whatever", ErrorCategory.RATE_LIMIT, "rate_limit"),
        ("whatever", ErrorCategory.SERVER, "server_error"),
        ("whatever", ErrorCategory.AUTHENTICATION, "rejected"),
        ("connection closed, but with an error: received 1011", None, "disconnect"),
        ("Expecting property name enclosed in double quotes: line 1", None, "malformed"),
        ("TTS context abc completed with no audio", None, "no_audio"),
        ("LLM completion timeout", None, "timeout"),
        ("something odd", None, "error"),
    ],
)
def test_faults_are_named_from_their_category_or_message(error, category, reason):
    assert classify_fault(ErrorFrame(error, category=category)) == reason
    assert reason in REASONS


def test_a_group_needs_two_distinct_providers_and_one_link_is_left_alone():
    text = TextOnlyTTSService()
    assert failover_tts([("text", text)]) == [text]
    with pytest.raises(ValueError):
        failover_tts([("text", text), ("text", TextOnlyTTSService())])
    with pytest.raises(ValueError):
        failover_tts([])


@pytest.mark.parametrize(
    "partial, tokens, joined",
    [
        ("Check the METAR. Then tune", [" the", " VOR."], "Check the METAR. Then tune the VOR."),
        ("Check the METAR. Then tune ", [" the", " VOR."], "Check the METAR. Then tune the VOR."),
        ("Check the METAR. Then tune", ["the", " VOR."], "Check the METAR. Then tune the VOR."),
        # A backup that starts over: the repeat is cut, nothing is said twice.
        (
            "Check the METAR. Then tune",
            ["Check", " the", " METAR.", " Then", " tune", " the"],
            "Check the METAR. Then tune the",
        ),
        (
            "Check the METAR. Then tune",
            ["Then", " tune", " the", " VOR."],
            "Check the METAR. Then tune the VOR.",
        ),
        ("Check the METAR.", [" Then", " go."], "Check the METAR. Then go."),
    ],
)
def test_a_continuation_joins_the_partial_reply_without_repeats(partial, tokens, joined):
    tracker = LLMTracker(FailoverPolicy())
    item = Item(LLMTextFrame(""), work=True, text=partial, sent_at=0.0)
    item.repeats = tuple(r for r in (partial.strip(), fragment(partial)) if r)
    item.joining = ""
    tracker.items.append(item)
    for token in tokens:
        tracker.outlet(LLMTextFrame(token), 1.0)
    assert item.text == joined
