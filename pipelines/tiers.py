"""Tier → the STT, LLM and TTS processors of one session, each a failover chain.

For each role the tier's chain (``config/tiers.yaml``) is narrowed to the links that can run
now (key set, voice for the persona's language), each link becomes a real Pipecat service
(:mod:`pipelines.providers`) and a chain of more than one becomes a failover group
(:mod:`processors.failover`) that switches on any provider fault and replays what was lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from config.personas import Persona
from config.settings import Settings
from config.tiers import Link, Tier, TierError, get_tier
from pipelines.providers import Role, build_link

OnSwitch = Callable[[str, str, str, str], Awaitable[None]]
"""``on_switch(role, from_provider, to_provider, reason)``: awaited once per failover."""


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
    built: list[tuple[str, FrameProcessor]] = []
    for link in links:
        built.append(
            (
                link.provider,
                build_link(
                    role, link, persona, settings, local_base_url=local_base_url, level=level
                ),
            )
        )
    return built


def build_tier_services(
    tier_name: str,
    persona: Persona,
    settings: Settings,
    *,
    local_base_url: str = "",
    level: str | None = None,
    on_switch: OnSwitch | None = None,
) -> TierServices:
    """Build the STT, LLM and TTS of a cascaded tier for ``persona``.

    Args:
        tier_name: A tier of ``config/tiers.yaml`` with ``kind: pipeline``.
        persona: The tutor or examiner (language, voice choice, keyterms, prompt).
        settings: Endpoints, model home, failover policy.
        local_base_url: The local LLM server (needed when a chain has a ``local`` LLM).
        level: The learner's CEFR level, or ``None`` for the persona default.
        on_switch: Awaited once per failover (the session stores it as an event).

    Raises:
        TierError: unknown tier, a speech-to-speech tier, a missing primary key, or a role
            with no link for the persona's language.
        models.registry.ModelNotInstalledError: a ``local`` link's model is missing.
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
        groups[role] = _assemble(role, chain, settings, on_switch)
    return TierServices(
        tier=tier, stt=groups["stt"], llm=groups["llm"], tts=groups["tts"], providers=providers
    )


def _assemble(
    role: Role,
    chain: list[tuple[str, FrameProcessor]],
    settings: Settings,
    on_switch: OnSwitch | None,
) -> list[FrameProcessor]:
    """One service as it is; several behind Pipecat's failover ``ServiceSwitcher``."""
    if len(chain) == 1:
        return [chain[0][1]]
    from pipecat.pipeline.service_switcher import (
        ServiceSwitcher,
        ServiceSwitcherStrategyFailover,
    )

    return [ServiceSwitcher([s for _, s in chain], ServiceSwitcherStrategyFailover)]
