"""Usage meter: one ``usage_events`` row per metered quantity, written as it is reported.

:class:`UsageMeterObserver` is Pipecat's ``ServiceMetricsObserver`` with a writer attached: each
``ServiceUsageRecord`` (LLM tokens, TTS characters, STT audio seconds) becomes rows
``(service, provider, model, metric, quantity)`` handed to an async writer at once, in order,
never batched at session end (:func:`usage_observer` writes them to the store).

Where the numbers come from (Pipecat 1.14):

- **STT audio seconds**: every ``STTService`` counts the PCM it is given
  (``bytes / (2 × sample rate)``) and reports it as ``STTUsageMetricsData`` at its billing
  points: Deepgram on each final transcript, segmented services (OpenAI, Whisper) per VAD
  segment including the padding they send, and the base class once more on stop/cancel for
  any trailing audio. So every STT service reports; none is metered here.
- **TTS characters**: ``TTSUsageMetricsData`` carries ``len(text)`` of each request, but the
  websocket ``DeepgramTTSService`` never reports it (only ``DeepgramHttpTTSService`` does;
  ``tests/services/test_fakes_deepgram_cartesia.py`` shows it). For the classes in
  :data:`SELF_METERED_TTS` the meter counts the text of each ``on_tts_request`` event instead:
  the exact text sent to the provider (transforms applied, trailing space included), which is
  what the reporting services count too.
- **LLM tokens** are split into disjoint billing buckets (:func:`usage_rows`), so a price per
  bucket never counts a token twice: OpenAI-compatible services report ``prompt_tokens`` gross
  (cache reads, cache writes and audio inside it), Anthropic and Bedrock net (Pipecat's
  ``LLMTokenUsage`` documents both).

The provider is the name the tier chain gave the service (:func:`provider_map`), else it is
read from the service class's module: ``pipecat.services.deepgram…`` → ``deepgram``;
``pipecat.services.{whisper,piper,kokoro}`` and the project's ``services/`` → ``local``;
``services.text_only_tts`` → ``text``; anything else → ``unknown``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import PurePath
from typing import Any

from loguru import logger
from pipecat.observers.base_observer import FramePushed, ProcessorSetUp
from pipecat.observers.service_metrics_observer import (
    ServiceMetricsObserver,
    ServiceUsageKind,
    ServiceUsageRecord,
)
from pipecat.processors.frame_processor import FrameProcessor

from contracts.writer import SessionWriter
from processors.failover.deferred import DeferredService

SELF_METERED_TTS = frozenset({"pipecat.services.deepgram.tts.DeepgramTTSService"})
"""TTS classes that report no character usage in Pipecat 1.14; counted from ``on_tts_request``."""

LOCAL_PIPECAT_SERVICES = frozenset({"whisper", "piper", "kokoro"})
"""``pipecat.services.<name>`` packages that run on this machine (provider ``local``)."""

NET_PROMPT_PROVIDERS = frozenset({"anthropic", "aws"})
"""Providers whose ``prompt_tokens`` exclude cached tokens (Pipecat ``LLMTokenUsage`` docs)."""


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One metered quantity, as stored in ``usage_events``.

    Attributes:
        service: ``stt``, ``llm`` or ``tts``.
        provider: Provider name (``deepgram``, ``local``, …).
        model: Model name (``unknown`` when the service names none).
        metric: A key of ``config.prices.METRICS``.
        quantity: Tokens or characters (whole numbers) or audio seconds.
    """

    service: str
    provider: str
    model: str
    metric: str
    quantity: float


Writer = Callable[[UsageRow], Awaitable[Any]]


def _qualified_names(obj: object) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__}


def provider_of(processor: object, known: Mapping[int, str] | None = None) -> str:
    """The provider of a service: its chain name in ``known`` (by ``id``), else by module."""
    if known and id(processor) in known:
        return known[id(processor)]
    module = type(processor).__module__
    if module.startswith("services.text_only_tts"):
        return "text"
    if module == "services" or module.startswith("services."):
        return "local"
    parts = module.split(".")
    if parts[:2] == ["pipecat", "services"] and len(parts) > 2:
        return "local" if parts[2] in LOCAL_PIPECAT_SERVICES else parts[2]
    return "unknown"


def _leaves(services: Any, role: str) -> list[FrameProcessor]:
    """The services of a role of a ``TierServices``, failover groups opened up, in order."""
    leaves: list[FrameProcessor] = []
    for processor in getattr(services, role, []):
        inner = getattr(processor, "services", None)
        leaves.extend(inner if isinstance(inner, list | tuple) else [processor])
    return leaves


def provider_map(services: Any) -> dict[int, str]:
    """Map ``id(service) → provider`` from a ``pipelines.tiers.TierServices``.

    Failover groups (``ServiceSwitcher`` and its subclasses) are opened up; their services
    are in chain order, as are ``services.providers[role]``. A role whose counts disagree is
    left to :func:`provider_of`'s module rule.
    """
    out: dict[int, str] = {}
    for role in ("stt", "llm", "tts"):
        names = list(getattr(services, "providers", {}).get(role, []))
        leaves = _leaves(services, role)
        if len(leaves) == len(names):
            out.update({id(s): name for s, name in zip(leaves, names, strict=True)})
    return out


def _model(record_model: str | None, provider: str) -> str:
    model = record_model or "unknown"
    if provider == "local" and ("/" in model or "\\" in model):
        model = PurePath(model).name  # local services name a model by its file path
    return model


def _llm_buckets(r: ServiceUsageRecord, provider: str) -> dict[str, int]:
    read = r.cache_read_input_tokens or 0
    write = r.cache_creation_input_tokens or 0
    audio_in = r.input_audio_tokens or 0
    audio_read = r.cache_read_input_audio_tokens or 0
    audio_out = r.output_audio_tokens or 0
    text_read = read - audio_read
    uncached_audio = audio_in - audio_read
    prompt = r.prompt_tokens or 0
    if provider not in NET_PROMPT_PROVIDERS:  # gross: cache and audio are inside prompt_tokens
        prompt -= text_read + write + audio_read
    prompt -= uncached_audio
    return {
        "prompt_tokens": prompt,
        "completion_tokens": (r.completion_tokens or 0) - audio_out,
        "cache_read_input_tokens": text_read,
        "cache_creation_input_tokens": write,
        "input_audio_tokens": uncached_audio,
        "cache_read_input_audio_tokens": audio_read,
        "output_audio_tokens": audio_out,
    }


def usage_rows(record: ServiceUsageRecord, provider: str) -> list[UsageRow]:
    """The rows one usage record becomes; zero quantities are left out.

    LLM tokens are split into disjoint buckets: ``prompt_tokens`` (uncached text input),
    ``cache_read_input_tokens``, ``cache_creation_input_tokens``, ``input_audio_tokens``
    (uncached), ``cache_read_input_audio_tokens``, ``completion_tokens`` (text output,
    reasoning included) and ``output_audio_tokens``. With no caching or audio reported,
    ``prompt_tokens`` and ``completion_tokens`` are the record's own. An inconsistent record
    (a bucket below zero) is clamped to zero and logged.

    Args:
        record: What the service reported.
        provider: Its provider (decides whether ``prompt_tokens`` is gross or net).
    """
    model = _model(record.model, provider)
    if record.kind == ServiceUsageKind.TTS:
        quantities: dict[str, float] = {"characters": float(record.characters or 0)}
    elif record.kind == ServiceUsageKind.STT:
        quantities = {"audio_seconds": float(record.audio_seconds or 0.0)}
    else:
        buckets = _llm_buckets(record, provider)
        if any(v < 0 for v in buckets.values()):
            logger.warning(f"inconsistent token usage from {record.processor}: {buckets}")
        quantities = {k: float(max(v, 0)) for k, v in buckets.items()}
    service = str(record.kind)
    return [UsageRow(service, provider, model, m, q) for m, q in quantities.items() if q > 0]


class UsageMeterObserver(ServiceMetricsObserver):
    """Writes every usage a service reports (see the module docstring) through ``write``.

    Writes run in tasks of their own, one after another in the order reported, so a slow
    database never holds up the pipeline; a failed write is logged and the next one goes on.
    :meth:`flush` (and ``cleanup``, which the worker calls at the end) waits for them.

    Args:
        write: Awaited with each :class:`UsageRow`.
        providers: ``id(service) → provider`` (:func:`provider_map`); others by module.
        **kwargs: Passed to ``ServiceMetricsObserver``.
    """

    def __init__(
        self, write: Writer, providers: Mapping[int, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._write = write
        self._providers = dict(providers or {})
        self._by_name: dict[str, FrameProcessor] = {}
        self._self_metered: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: asyncio.Task[None] | None = None
        self.rows_written = 0
        self.add_event_handler("on_service_usage", self._on_service_usage)

    def watch(self, processors: Iterable[FrameProcessor]) -> None:
        """Know these processors by name and meter self-metered TTS among them.

        Called for every processor as the pipeline sets it up; call it yourself for services
        used outside a pipeline.
        """
        for p in processors:
            if p.name in self._by_name:
                continue
            self._by_name[p.name] = p
            if isinstance(p, DeferredService):
                # A backup built on first use meters under its link's provider.
                p.on_built(partial(self._learn_provider, p.provider))
            if _qualified_names(p) & SELF_METERED_TTS:
                self._self_metered.add(p.name)
                p.add_event_handler("on_tts_request", self._on_tts_request)

    def _learn_provider(self, provider: str, service: FrameProcessor) -> None:
        self._providers[id(service)] = provider

    async def on_processor_setup(self, data: ProcessorSetUp) -> None:
        """Learn each processor of the pipeline (nested ones included) as it is set up."""
        await super().on_processor_setup(data)
        self.watch([data.processor])

    async def on_push_frame(self, data: FramePushed) -> None:
        """Know the source of metrics by name, then report records as Pipecat does."""
        if data.source.name not in self._by_name:
            self.watch([data.source])
        await super().on_push_frame(data)

    async def _on_service_usage(self, _observer: Any, record: ServiceUsageRecord) -> None:
        if record.kind == ServiceUsageKind.TTS and record.processor in self._self_metered:
            return  # counted from on_tts_request; a report too would count it twice
        processor = self._by_name.get(record.processor)
        provider = provider_of(processor, self._providers) if processor else "unknown"
        self._schedule(usage_rows(record, provider))

    async def _on_tts_request(self, service: Any, _context_id: str, text: str) -> None:
        if not getattr(service, "is_usable", True):
            return  # Pipecat skips synthesis for an unusable service: nothing is sent
        settings = getattr(service, "_settings", None)
        # Deepgram's voice is its model (aura-2-thalia-en); Pipecat leaves ``model`` unset
        # unless the voice is changed later.
        model = getattr(settings, "model", None) or getattr(settings, "voice", None)
        record = ServiceUsageRecord(
            kind=ServiceUsageKind.TTS,
            processor=service.name,
            model=model if isinstance(model, str) else None,
            timestamp=self._now(),
            characters=len(text),
        )
        self._schedule(usage_rows(record, provider_of(service, self._providers)))

    def _schedule(self, rows: list[UsageRow]) -> None:
        if not rows:
            return
        previous = self._last

        async def write() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            for row in rows:
                try:
                    await self._write(row)
                    self.rows_written += 1
                except Exception as e:  # a lost row must not end the session
                    logger.error(f"usage row not stored ({row}): {e!r}")

        task = asyncio.get_running_loop().create_task(write())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._last = task

    async def flush(self) -> None:
        """Wait until every row reported so far has been written (or failed)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def cleanup(self) -> None:
        """Wait for event handlers, then for the writes they started."""
        await super().cleanup()
        await self.flush()


def usage_observer(
    store: SessionWriter, session_id: str, services: Any = None
) -> UsageMeterObserver:
    """The usage meter of one session, writing each row to ``store`` as it is reported.

    Args:
        store: The open store, or a session process's relay to the server's.
        session_id: The session the rows belong to.
        services: The session's ``pipelines.tiers.TierServices`` (names the providers), or
            ``None`` to name them by module.
    """

    async def write(row: UsageRow) -> None:
        await store.add_usage_event(
            session_id, row.service, row.provider, row.model, row.metric, row.quantity
        )

    if services is None:
        return UsageMeterObserver(write)
    meter = UsageMeterObserver(write, provider_map(services))
    # Hook self-metered TTS now, not when the pipeline sets it up: no request goes unmetered.
    meter.watch(s for role in ("stt", "llm", "tts") for s in _leaves(services, role))
    return meter
