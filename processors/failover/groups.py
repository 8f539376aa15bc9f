"""Provider failover that loses nothing: chains of STT, LLM and TTS services.

Chains (``config/tiers.yaml``): TTS Cartesia → Deepgram → OpenAI → local →
text-only; STT Deepgram → OpenAI → local Whisper; LLM Claude → OpenAI → local. Pipecat's
``ServiceSwitcherStrategyFailover`` only moves on when a service declares itself unusable
(bad key, reconnects exhausted); a 5xx, a 429, a hang, a dropped stream or a garbage payload
leave it in place, and the sentence that failed is not spoken again. Here a chain is a
:class:`processors.failover.switcher.FailoverSwitcher` (a ``ServiceSwitcher`` subclass) that:

- **switches on any fault**: any ``ErrorFrame`` of the active service, no first output within
  5 s, no output for 5 s, a request over 20 s, a sentence whose audio is cut short, a TTS
  websocket dropping mid-sentence, no transcript 5 s after the learner stopped speaking;
- **retries a 429 first**: 1 s, 2 s, 4 s, then switches. Only the SDKs' own retries sit
  below (OpenAI and Anthropic retry twice before Pipecat sees an error); build their clients
  with ``max_retries=0`` to keep this policy the only one;
- **replays what was lost, once and in order** (before anything newer): the sentences the
  failed TTS had not finished (per-sentence audio contexts, :mod:`processors.failover.tts`),
  the LLM request, continued from the text already emitted (:mod:`processors.failover.llm`),
  the learner's current utterance from 1 s before the VAD's start (:mod:`processors.
  failover_stt`);
- **tells the learner once per switch**: an RTVI server message ``{"type":
  "provider-switch", "role", "from", "to", "reason"}`` and one ``on_switch(role, from, to,
  reason)`` call, which the session process stores as a ``session_events`` row;
- **returns to the primary** after a cool-down (60 s), at a moment no work is in flight
  (circuit breaker; reason ``recovered``).

A tier's backups are built only when a failover first reaches them (:mod:`processors.
failover_deferred`); a group treats such a stand-in like any other service.

The numbers live in :class:`FailoverPolicy`. Use the builders below in place of a single
service in the pipeline; the TTS group expects sentences (put the ``LLMTextProcessor`` before
it, as ``pipelines.session`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

from pipecat.pipeline.llm_switcher import LLMSwitcher
from pipecat.processors.frame_processor import FrameProcessor

from processors.failover.llm import LLMTracker
from processors.failover.policy import REASONS, FailoverPolicy, OnSwitch, classify_fault
from processors.failover.stt import STTTracker
from processors.failover.switcher import FailoverSwitcher
from processors.failover.tracker import Tracker
from processors.failover.tts import TTSTracker

__all__ = [
    "REASONS",
    "FailoverLLMSwitcher",
    "FailoverPolicy",
    "FailoverSwitcher",
    "OnSwitch",
    "classify_fault",
    "failover_llm",
    "failover_stt",
    "failover_tts",
]


class FailoverLLMSwitcher(FailoverSwitcher, LLMSwitcher):
    """An LLM failover group that is also Pipecat's ``LLMSwitcher``.

    Functions registered on it are registered on every LLM of the chain, tools advertised in
    the context are synced to all of them, and ``run_inference`` uses the active one.
    """


def _group(
    role: str,
    services: Sequence[tuple[str, FrameProcessor]],
    tracker: Tracker,
    policy: FailoverPolicy | None,
    on_switch: OnSwitch | None,
    cls: type[FailoverSwitcher] = FailoverSwitcher,
) -> list[FrameProcessor]:
    if not services:
        raise ValueError(f"a {role} chain needs at least one service")
    if len(services) == 1:
        return [services[0][1]]
    return [cls(role, list(services), tracker, policy or FailoverPolicy(), on_switch)]


def failover_tts(
    services: Sequence[tuple[str, FrameProcessor]],
    policy: FailoverPolicy | None = None,
    on_switch: OnSwitch | None = None,
) -> list[FrameProcessor]:
    """Processors standing in the pipeline where the TTS goes: a failover group over ``services``.

    Args:
        services: ``(provider, service)`` pairs in chain order, e.g. ``[("cartesia", ...),
            ("deepgram", ...), ("openai", ...), ("local", ...), ("text", TextOnlyTTSService())]``.
            All must output at the pipeline's audio rate (Pipecat resamples to
            ``audio_out_sample_rate``).
        policy: Timeouts, backoff, cool-down (default: ``FailoverPolicy()``).
        on_switch: Awaited with ``(role, from, to, reason)`` after each switch.

    Returns:
        ``[service]`` for a one-link chain, else ``[FailoverSwitcher]``.

    Raises:
        ValueError: no services, or a provider name twice.
    """
    return _group("tts", services, TTSTracker(policy or FailoverPolicy()), policy, on_switch)


def failover_llm(
    services: Sequence[tuple[str, FrameProcessor]],
    policy: FailoverPolicy | None = None,
    on_switch: OnSwitch | None = None,
) -> list[FrameProcessor]:
    """Processors standing where the LLM goes: a failover group over ``services``.

    Args:
        services: ``(provider, service)`` pairs in chain order, e.g. ``[("anthropic", ...),
            ("openai", ...), ("local", ...)]``; each carries its own system instruction.
        policy: Timeouts, backoff, cool-down (default: ``FailoverPolicy()``).
        on_switch: Awaited with ``(role, from, to, reason)`` after each switch.

    Returns:
        ``[service]`` for a one-link chain, else ``[FailoverLLMSwitcher]``.

    Raises:
        ValueError: no services, or a provider name twice.
    """
    tracker = LLMTracker(policy or FailoverPolicy())
    return _group("llm", services, tracker, policy, on_switch, FailoverLLMSwitcher)


def failover_stt(
    services: Sequence[tuple[str, FrameProcessor]],
    policy: FailoverPolicy | None = None,
    on_switch: OnSwitch | None = None,
) -> list[FrameProcessor]:
    """Processors standing where the STT goes: a failover group over ``services``.

    Args:
        services: ``(provider, service)`` pairs in chain order, e.g. ``[("deepgram", ...),
            ("openai", ...), ("local", ...)]``.
        policy: Timeouts, backoff, cool-down (default: ``FailoverPolicy()``).
        on_switch: Awaited with ``(role, from, to, reason)`` after each switch.

    Returns:
        ``[service]`` for a one-link chain, else ``[FailoverSwitcher]``.

    Raises:
        ValueError: no services, or a provider name twice.
    """
    return _group("stt", services, STTTracker(policy or FailoverPolicy()), policy, on_switch)
