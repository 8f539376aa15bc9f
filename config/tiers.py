"""Tiers: which providers serve a session, in failover order, and each tier's quotas.

Loaded from ``config/tiers.yaml`` and validated here. A tier's ``stt``/``llm``/``tts`` are
*chains*: the first link is the primary, the rest are backups, tried in order when a provider
faults. Provider keys come from the environment only (:data:`PROVIDER_KEY_ENV`, read through
:func:`config.settings.provider_key`); a tier is *available* when every primary's key is
set, and backups whose keys are missing drop out of the chain.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.settings import provider_key

Provider = Literal["local", "text", "openai", "anthropic", "deepgram", "cartesia"]

PROVIDER_KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "deepgram": "DEEPGRAM_API_KEY",
    "cartesia": "CARTESIA_API_KEY",
}
"""Environment variable holding each cloud provider's API key (never stored, never logged)."""

TIERS_FILE = Path(__file__).with_name("tiers.yaml")


class TierError(ValueError):
    """``tiers.yaml`` is invalid, or a tier name is unknown; the message says which."""


class Link(BaseModel):
    """One provider in a chain.

    Attributes:
        provider: ``local`` (the offline stack), ``text`` (TTS only: no audio, the reply still
            reaches the client as RTVI text) or a cloud provider.
        model: The provider's model id (``None`` for ``local``/``text``).
        voices: TTS/speech-to-speech only: voice per persona language (``en``, ``de``, ``cs``).
            Empty means the provider's voice is language-independent (``local``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Provider
    model: str | None = None
    voices: dict[str, str] = Field(default_factory=dict)

    @property
    def key_env(self) -> str | None:
        """The environment variable with this provider's key, or ``None`` (local, text)."""
        return PROVIDER_KEY_ENV.get(self.provider)

    def has_key(self) -> bool:
        """Whether this link can run: local/text always, cloud when its key is set."""
        return self.key_env is None or provider_key(self.key_env) is not None

    def speaks(self, language: str) -> bool:
        """Whether this link has a voice for ``language`` (always for local and text)."""
        return not self.voices or language in self.voices


class Quotas(BaseModel):
    """Per-tier hard limits, enforced by the server; ``None`` means unlimited.

    Attributes:
        sessions_per_month: Sessions a learner may start per calendar month (UTC).
        exchanges_per_session: Learner turns per session; the session ends politely at it.
        tts_chars_per_month: Characters spoken by TTS per learner per calendar month.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sessions_per_month: int | None = Field(default=None, ge=1)
    exchanges_per_session: int | None = Field(default=None, ge=1)
    tts_chars_per_month: int | None = Field(default=None, ge=1)


class Tier(BaseModel):
    """A tier: its provider chains (or one speech-to-speech link) and its quotas.

    Attributes:
        name: Key in ``tiers.yaml`` (``local``, ``ground_school``, ...).
        title: Human-readable name.
        description: One line for listings.
        kind: ``pipeline`` (STT → LLM → TTS) or ``speech_to_speech`` (one realtime model).
        stt: STT chain, primary first.
        llm: LLM chain, primary first.
        tts: TTS chain, primary first.
        realtime: The speech-to-speech link (``kind == "speech_to_speech"`` only).
        quotas: Limits per learner.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    description: str = ""
    kind: Literal["pipeline", "speech_to_speech"] = "pipeline"
    stt: tuple[Link, ...] = ()
    llm: tuple[Link, ...] = ()
    tts: tuple[Link, ...] = ()
    realtime: Link | None = None
    quotas: Quotas = Field(default_factory=Quotas)

    @model_validator(mode="after")
    def _check_shape(self) -> Tier:
        if self.kind == "pipeline":
            if not (self.stt and self.llm and self.tts) or self.realtime is not None:
                raise ValueError("a pipeline tier needs stt, llm and tts chains and no realtime")
            for role, chain in (("stt", self.stt), ("llm", self.llm)):
                if any(link.provider == "text" for link in chain):
                    raise ValueError(f"'text' is a TTS fallback only, not an {role} provider")
        elif self.realtime is None or self.stt or self.llm or self.tts:
            raise ValueError("a speech_to_speech tier has one realtime link and no chains")
        return self

    @property
    def primaries(self) -> tuple[Link, ...]:
        """The links that must be available for the tier to be offered."""
        if self.realtime is not None:
            return (self.realtime,)
        return (self.stt[0], self.llm[0], self.tts[0])

    def missing_env(self) -> list[str]:
        """Names (never values) of unset variables the primaries need, sorted, no repeats."""
        return sorted(
            {link.key_env for link in self.primaries if link.key_env and not link.has_key()}
        )

    def chain(self, role: Literal["stt", "llm", "tts"], language: str) -> list[Link]:
        """The links of ``role`` that can serve a persona speaking ``language`` right now.

        Backups whose key is unset, and TTS links without a voice for ``language``, are left
        out (so a Czech persona skips Aura-2, which has no Czech voice).

        Raises:
            TierError: nothing in the chain can serve (e.g. a primary key is missing).
        """
        links = [link for link in getattr(self, role) if link.has_key() and link.speaks(language)]
        if not links:
            raise TierError(f"tier {self.name!r} has no {role} provider for language {language!r}")
        return links


def _load(path: Path) -> dict[str, Tier]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TierError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict) or not raw:
        raise TierError(f"{path}: expected a mapping of tier name to tier")
    tiers: dict[str, Tier] = {}
    for name, body in raw.items():
        try:
            tiers[name] = Tier.model_validate({"name": name, **(body or {})})
        except ValidationError as e:
            raise TierError(f"{path}: tier {name!r}: {e}") from e
    return tiers


@lru_cache(maxsize=4)
def load_tiers(path: Path = TIERS_FILE) -> dict[str, Tier]:
    """Return every tier in ``path`` by name, in file order.

    Raises:
        TierError: the file is unreadable or a tier is invalid (the message names it).
    """
    return _load(path)


def get_tier(name: str) -> Tier:
    """Return the packaged tier ``name``.

    Raises:
        TierError: no such tier (the message lists the known ones).
    """
    tiers = load_tiers()
    if name not in tiers:
        raise TierError(f"unknown tier {name!r}; known: {', '.join(tiers)}")
    return tiers[name]
