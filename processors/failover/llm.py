"""LLM failover tracking: one request (an ``LLMContextFrame``) is one unit of work.

The request is done when its ``LLMFullResponseEndFrame`` leaves the group. After a fault it is
re-run on the backup. If none of the reply had left yet, the same context is sent again. If
part of it had, that part is already on its way to the learner (the sentence aggregator and
the TTS are downstream), so the backup is asked to *continue* it: it gets a copy of the
context ending with the partial reply as the assistant's message and a short instruction to
go on from there. That keeps the sentence that was cut half-way whole ("Tune 122.8 on" +
"the CTAF.") and nothing is said twice; re-running from scratch would repeat what was heard,
and dropping the backup's first characters cannot work because its wording differs. The
start of the continuation is checked against what was emitted and a repeat is cut, in case
the backup restarts anyway. The copy is used only for that request; the shared context gets
the whole reply from the assistant aggregator as usual.

Downstream sees one response: a second ``LLMFullResponseStartFrame`` (from the backup) is
dropped while one is open.
"""

from __future__ import annotations

import copy

from pipecat.frames.frames import (
    Frame,
    FunctionCallsStartedFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext

from processors.failover.policy import FailoverPolicy
from processors.failover.tracker import Item, Outlet, Tracker

CONTINUE_PROMPT = (
    "(Your reply above was cut off by a technical fault. Continue it from exactly where it "
    "stops, in the same language, without repeating anything already said.)"
)
"""The user-role instruction appended after the partial reply when a backup continues it."""

_SENTENCE_END = ".!?…\n"


def fragment(text: str) -> str:
    """The unfinished last sentence of ``text`` (empty when it ends at a sentence end)."""
    stripped = text.rstrip()
    if not stripped or stripped[-1] in _SENTENCE_END:
        return ""
    cut = max(stripped.rfind(c) for c in _SENTENCE_END)
    return stripped[cut + 1 :].strip()


class LLMTracker(Tracker):
    """Follows LLM requests through the active service (see the module docstring)."""

    role = "llm"

    def __init__(self, policy: FailoverPolicy) -> None:
        super().__init__(policy)
        self.response_open = False

    def interrupted(self) -> None:
        """The reply in flight was cancelled; downstream closed it too."""
        super().interrupted()
        self.response_open = False

    def _work_item(self, frame: Frame) -> Item | None:
        if isinstance(frame, LLMContextFrame):
            return Item(frame, work=True, base=frame.context)
        return None

    def _outlet_work(self, frame: Frame, now: float) -> Outlet:
        item = self.first_work()
        if isinstance(frame, LLMFullResponseStartFrame):
            if self.response_open:
                return Outlet([])
            self.response_open = True
            return Outlet([frame])
        if isinstance(frame, LLMTextFrame):
            if item is None:
                return Outlet([frame])
            item.last_activity = now
            if item.joining is not None:
                text = self._join(item, frame.text)
                if text is None:
                    return Outlet([])
                frame.text = text
            item.text += frame.text
            return Outlet([frame])
        if isinstance(frame, LLMFullResponseEndFrame):
            self.response_open = False
            emit: list[Frame] = [frame]
            if item is not None:
                if item.joining:  # a short continuation that never left the buffer
                    emit.insert(0, LLMTextFrame(item.joining))
                    item.text += item.joining
                self._confirm(item, now)
            return Outlet(emit)
        if isinstance(frame, FunctionCallsStartedFrame) and item is not None:
            item.last_activity = now
        return Outlet([frame])

    def _join(self, item: Item, text: str) -> str | None:
        """Buffer the start of a continuation until it is clear whether it repeats itself.

        Returns:
            The text to emit (repeat cut, a space added between words if needed), or None
            while the buffer could still be the start of a repeat.
        """
        buffered = (item.joining or "") + text
        head = buffered.lstrip()
        rest = buffered
        for repeat in item.repeats:
            if head.startswith(repeat):
                rest = head[len(repeat) :]
                break
            if repeat.startswith(head):
                item.joining = buffered
                return None
        item.joining = None
        if not rest or not item.text:
            return rest
        if item.text[-1].isspace():
            return rest.lstrip()  # the partial ended with its space (tokens carry their own)
        if not rest[0].isspace() and rest[0].isalnum():
            return " " + rest
        return rest

    def _replay_work(self, item: Item) -> None:
        base = item.base
        assert isinstance(base, LLMContext)
        if not item.text.strip():
            item.frame = LLMContextFrame(context=base)
            return
        messages = copy.deepcopy(base.get_messages())
        messages.append({"role": "assistant", "content": item.text.strip()})
        messages.append({"role": "user", "content": CONTINUE_PROMPT})
        context = LLMContext(messages=messages, tools=base.tools, tool_choice=base.tool_choice)
        item.frame = LLMContextFrame(context=context)
        repeats = [item.text.strip(), fragment(item.text)]
        item.repeats = tuple(r for r in repeats if r)
        item.joining = ""

    def watchdog(self, now: float) -> str | None:
        """Time out a request with no first token, a stall between tokens, or a long reply."""
        super().watchdog(now)
        item = self.first_work()
        if item is None or item.sent_at is None:
            return None
        active = max(item.sent_at, item.last_activity or 0.0)
        if (
            now - active > self.policy.ttfb_timeout_s
            or now - item.sent_at > self.policy.request_cap_s
        ):
            return "timeout"
        return None
