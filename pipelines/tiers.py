"""Tier → the STT, LLM and TTS processors of one session, each a failover chain.

For each role the tier's chain (``config/tiers.yaml``) is narrowed to the links that can run
now (key set, voice for the persona's language), each link becomes a real Pipecat service
(:mod:`pipelines.providers`) and a chain of more than one becomes a failover group
(:mod:`processors.failover.groups`) that switches on any provider fault and replays what was lost.
Every link with a backup behind it is built without its SDK's own retries
(:func:`pipelines.providers.build_link`), so the group's policy is the only retry layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from config.personas import Persona
from config.settings import Settings
from config.tiers import Link, Tier, TierError, get_tier
from pipelines.providers import Role, build_link
from processors.failover.deferred import deferred
from processors.failover.groups import (
    FailoverPolicy,
    OnSwitch,
    failover_llm,
    failover_stt,
    failover_tts,
)

__all__ = ["OnSwitch", "TierServices", "build_tier_services"]

BACKUP_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    "openai": {
        "stt": ("pipecat.services.openai.stt",),
        "llm": ("pipecat.services.openai.llm",),
        "tts": ("pipecat.services.openai.tts",),
    },
    "anthropic": {"llm": ("pipecat.services.anthropic.llm",)},
    "deepgram": {
        "stt": ("services.deepgram_stt",),
        "tts": ("pipecat.services.deepgram.tts",),
    },
    "cartesia": {"tts": ("pipecat.services.cartesia.tts",)},
    "local": dict.fromkeys(("stt", "llm", "tts"), ("pipelines.local",)),
}
"""Providers whose backup links are built on first use, and the modules each one imports.

A backup link of these providers stands in its group as a :class:`processors.
failover_deferred.DeferredService` until a failover reaches it; the text-only voice is
cheap and built at once. ``pipelines.local`` imports Whisper, Piper, espeak-ng and the
OpenAI SDK (the local LLM's client) together.
"""

_GROUPS: dict[str, Callable[..., list[FrameProcessor]]] = {
    "stt": failover_stt,
    "llm": failover_llm,
    "tts": failover_tts,
}
"""The failover group builder per role (:mod:`processors.failover.groups`)."""


@dataclass
class TierServices:
    """The processors a cascaded session needs, plus what they are made of.

    Attributes:
        tier: The tier they were built for.
        stt: Processors standing where the STT goes in the pipeline (one or a failover group).
        llm: Processors standing where the LLM goes.
        tts: Processors standing where the TTS goes.
        providers: Provider names per role, primary first (for logs, usage and tests).
    """

    tier: Tier
    stt: list[FrameProcessor]
    llm: list[FrameProcessor]
    tts: list[FrameProcessor]
    providers: dict[str, list[str]] = field(default_factory=dict)


def _chain(
    role: Role,
    links: list[Link],
    persona: Persona,
    settings: Settings,
    *,
    local_base_url: str,
    level: str | None,
) -> list[tuple[str, FrameProcessor]]:
    """Build each link of a chain as ``(provider, service)``, primary first.

    Every link but the last has a backup, so its SDK client is built without retries;
    every link but the first is a backup, so it is built when a failover first reaches it
    (:data:`BACKUP_MODULES`).

    Raises:
        TierError: as :func:`pipelines.providers.build_link` (for a primary).
        weights.registry.ModelNotInstalledError: a local link's model is missing.
    """
    built: list[tuple[str, FrameProcessor]] = []
    for i, link in enumerate(links):
        build = partial(
            build_link,
            role,
            link,
            persona,
            settings,
            local_base_url=local_base_url,
            level=level,
            has_backup=i < len(links) - 1,
            is_backup=i > 0,
        )
        service: FrameProcessor
        if i > 0 and link.provider in BACKUP_MODULES:
            _check_local_model(role, link, persona, settings)
            service = deferred(
                role, build, modules=BACKUP_MODULES[link.provider][role], provider=link.provider
            )
        else:
            service = build()
        built.append((link.provider, service))
    return built


def _check_local_model(role: Role, link: Link, persona: Persona, settings: Settings) -> None:
    """Fail now, not at failover, if a deferred local backup's model is not installed.

    Raises:
        weights.registry.ModelNotInstalledError: Whisper base or the Piper voice is missing.
    """
    if link.provider != "local":
        return
    from weights.registry import PIPER_MODEL, WHISPER_MODEL, model_path

    if role == "stt":
        model_path(WHISPER_MODEL, settings.home)
    elif role == "tts" and persona.language == "en":
        model_path(PIPER_MODEL, settings.home)


def build_tier_services(
    tier_name: str,
    persona: Persona,
    settings: Settings,
    *,
    local_base_url: str = "",
    level: str | None = None,
    on_switch: OnSwitch | None = None,
    policy: FailoverPolicy | None = None,
) -> TierServices:
    """Build the STT, LLM and TTS of a cascaded tier for ``persona``.

    Args:
        tier_name: A tier of ``config/tiers.yaml`` with ``kind: pipeline``.
        persona: The tutor or examiner (language, voice choice, keyterms, prompt).
        settings: Endpoints and model home.
        local_base_url: The local LLM server (needed when a chain has a ``local`` LLM).
        level: The learner's CEFR level, or ``None`` for the persona default.
        on_switch: Awaited with ``(role, from_provider, to_provider, reason)`` once per
            switch of any group (the session process stores it as a ``provider_switch``
            event); may also be set later on each group (``group.on_switch``).
        policy: When a provider counts as faulty (default :class:`FailoverPolicy`: 5 s TTFB
            watchdog, 20 s cap per request, 429 backoff 1/2/4 s, 60 s cool-down).

    Raises:
        TierError: unknown tier, a speech-to-speech tier, a missing primary key, or a role
            with no link for the persona's language.
        weights.registry.ModelNotInstalledError: a ``local`` link's model is missing.
    """
    tier = get_tier(tier_name)
    if tier.kind != "pipeline":
        raise TierError(f"tier {tier.name!r} is speech-to-speech; use pipelines.realtime")
    missing = tier.missing_env()
    if missing:
        raise TierError(f"tier {tier.name!r} needs {', '.join(missing)} to be set")
    groups: dict[str, list[FrameProcessor]] = {}
    providers: dict[str, list[str]] = {}
    roles: tuple[Role, ...] = ("stt", "llm", "tts")
    for role in roles:
        links = tier.chain(role, persona.language)
        skipped = [x.provider for x in getattr(tier, role) if x not in links]
        if skipped:
            logger.info(f"{tier.name} {role}: left out {skipped} (no key or no voice)")
        chain = _chain(role, links, persona, settings, local_base_url=local_base_url, level=level)
        providers[role] = [name for name, _ in chain]
        groups[role] = _assemble(role, chain, policy or FailoverPolicy(), on_switch)
    return TierServices(
        tier=tier, stt=groups["stt"], llm=groups["llm"], tts=groups["tts"], providers=providers
    )


def _assemble(
    role: Role,
    chain: Sequence[tuple[str, FrameProcessor]],
    policy: FailoverPolicy,
    on_switch: OnSwitch | None,
) -> list[FrameProcessor]:
    """One service as it is; several behind our failover group for ``role``.

    The group (a ``FailoverSwitcher``; for the LLM also Pipecat's ``LLMSwitcher``) switches on
    any fault of the active provider, replays what was lost on the next one, sends the client
    one RTVI ``provider-switch`` message and awaits ``on_switch`` once per switch.
    """
    return _GROUPS[role](chain, policy, on_switch)
