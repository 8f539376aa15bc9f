"""The numbers and words of provider failover: timeouts, backoff, cool-down, fault reasons.

The defaults of :class:`FailoverPolicy` are this project's failover policy: a 5 s watchdog
on first and next output, a 20 s cap per request, 429 retries after 1 s, 2 s and 4 s, a 60 s
cool-down. Tests and benchmarks shrink them with :meth:`FailoverPolicy.scaled` instead of
inventing their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from pipecat.frames.frames import ErrorFrame
from pipecat.utils.errors import ErrorCategory

OnSwitch = Callable[[str, str, str, str], Awaitable[None]]
"""``on_switch(role, from_provider, to_provider, reason)``: awaited once per switch."""

REASONS = (
    "timeout",
    "server_error",
    "rate_limit",
    "disconnect",
    "malformed",
    "truncated",
    "no_audio",
    "rejected",
    "quota",
    "error",
    "recovered",
)
"""Every ``reason`` a switch notice or event can carry (``recovered``: back to a primary)."""


@dataclass(frozen=True)
class FailoverPolicy:
    """When a provider counts as faulty, and what happens next.

    Attributes:
        ttfb_timeout_s: Seconds a request may go without its first output (TTS audio, LLM
            token) or between two outputs, and seconds after the learner stops speaking
            within which the STT must give a transcript. Default 5 s (the TTFB watchdog).
        request_cap_s: Longest a single request (one sentence, one LLM reply) may take in
            seconds. Default 20 s.
        rate_limit_backoff_s: Waits in seconds before each retry of the same provider after
            an HTTP 429; one more 429 after the last wait switches. Default 1 s, 2 s, 4 s
            (bounded exponential backoff).
        cooldown_s: Seconds a provider that failed is skipped before it is tried again
            (circuit breaker). Our choice: one minute, long enough for a provider incident to
            show in its status page, short enough that a session returns to its primary.
        stt_preroll_s: Seconds of audio kept before the VAD's start of speech, so a replay
            into the backup STT includes the first word (the VAD confirms speech after its
            ``start_secs``, 0.2 s by default in Pipecat 1.14).
        stt_min_speech_s: Utterances shorter than this (seconds of speech) may legitimately
            yield no transcript (a cough), so the STT watchdog leaves them alone. Our choice.
        max_chars_per_audio_s: Fastest plausible speech, in characters (letters and digits)
            per second of audio; a sentence whose audio is shorter than its characters need
            at this rate was cut off. Natural speech is about 15 characters/s; 40 leaves room
            for fast voices. ``0`` disables the check.
        watchdog_tick_s: How often the watchdog and circuit breaker look, in seconds.
    """

    ttfb_timeout_s: float = 5.0
    request_cap_s: float = 20.0
    rate_limit_backoff_s: tuple[float, ...] = (1.0, 2.0, 4.0)
    cooldown_s: float = 60.0
    stt_preroll_s: float = 1.0
    stt_min_speech_s: float = 0.6
    max_chars_per_audio_s: float = 40.0
    watchdog_tick_s: float = 0.1

    def scaled(self, factor: float) -> FailoverPolicy:
        """Return this policy with every duration multiplied by ``factor`` (tests, benchmarks).

        ``stt_preroll_s`` and ``stt_min_speech_s`` describe speech, not providers, and are
        kept; so is ``max_chars_per_audio_s``.

        Raises:
            ValueError: ``factor`` is not positive.
        """
        if factor <= 0:
            raise ValueError(f"factor must be positive, got {factor!r}")
        return replace(
            self,
            ttfb_timeout_s=self.ttfb_timeout_s * factor,
            request_cap_s=self.request_cap_s * factor,
            rate_limit_backoff_s=tuple(s * factor for s in self.rate_limit_backoff_s),
            cooldown_s=self.cooldown_s * factor,
            watchdog_tick_s=min(self.watchdog_tick_s, max(0.01, self.ttfb_timeout_s * factor / 10)),
        )


_CATEGORY_REASONS = {
    ErrorCategory.RATE_LIMIT: "rate_limit",
    ErrorCategory.SERVER: "server_error",
    ErrorCategory.CONNECTIVITY: "disconnect",
    ErrorCategory.QUOTA: "quota",
    ErrorCategory.AUTHENTICATION: "rejected",
    ErrorCategory.AUTHORIZATION: "rejected",
    ErrorCategory.INVALID_REQUEST: "rejected",
}

# Words Pipecat 1.14 and the provider SDKs put in errors that carry no category (UNKNOWN),
# checked in order: the first match names the fault.
_MESSAGE_REASONS = (
    (("429", "rate limit", "too many requests"), "rate_limit"),
    (("no audio",), "no_audio"),
    (("timed out", "timeout"), "timeout"),
    # json.JSONDecodeError messages start "Expecting ..." (value, property name, delimiter).
    (("expecting", "json", "decode", "malformed", "unknown message", "invalid"), "malformed"),
    (("1011", "connection closed", "closed by", "disconnect", "connection", "peer"), "disconnect"),
    (("500", "502", "503", "504", "529", "overloaded", "server error"), "server_error"),
)


def classify_fault(error: ErrorFrame) -> str:
    """Name the fault behind a provider's ``ErrorFrame`` (one of :data:`REASONS`).

    The category Pipecat attached wins; an uncategorized error is named from its message
    (Pipecat reports a dropped websocket as "... 1011 ..." and a non-JSON payload as
    "Expecting value ..."). The name goes into the learner's notice and the stored event;
    every fault switches the same way except ``rate_limit``, which is retried first.

    Args:
        error: The error frame pushed by the service.
    """
    category = error.category or ErrorCategory.UNKNOWN
    if category in _CATEGORY_REASONS:
        return _CATEGORY_REASONS[category]
    text = f"{error.error} {error.exception or ''}".lower()
    for words, reason in _MESSAGE_REASONS:
        if any(w in text for w in words):
            return reason
    return "error"


def is_provider_fault(error: ErrorFrame) -> bool:
    """Whether an error from a service says something about its provider.

    ``APPLICATION`` errors (a tool handler failed, content the app supplied was refused
    after repair) are the application's, and switching providers cannot help.
    """
    return error.category is not ErrorCategory.APPLICATION
