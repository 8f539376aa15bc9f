"""Provider prices: ``config/prices.yaml`` validated, and the cost of metered usage in USD.

Every usage row (``usage_events``: service, provider, model, metric, quantity) is priced by
the first price entry whose provider and service equal the row's, one of whose model globs
matches the row's model (case-insensitive, :func:`fnmatch.fnmatchcase`) and that prices the
row's metric. Money is :class:`~decimal.Decimal` throughout: token and character counts are
integers, audio seconds are taken to the microsecond, and a cost is exact until it is shown
(:func:`usd`, 6 decimals). A row no entry prices is *unpriced*: its cost is ``None``, never 0.

Each price keeps its ``source`` (the provider's pricing page or another public URL) and the
``as_of`` date of that source; ``estimate`` marks figures derived rather than published (e.g.
OpenAI's per-minute estimate for token-billed transcription).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRICES_FILE = Path(__file__).with_name("prices.yaml")

Service = Literal["stt", "llm", "tts"]
Dimension = Literal["tokens", "characters", "seconds"]

METRICS: dict[str, tuple[Service, Dimension]] = {
    "prompt_tokens": ("llm", "tokens"),
    "completion_tokens": ("llm", "tokens"),
    "cache_read_input_tokens": ("llm", "tokens"),
    "cache_creation_input_tokens": ("llm", "tokens"),
    "input_audio_tokens": ("llm", "tokens"),
    "cache_read_input_audio_tokens": ("llm", "tokens"),
    "output_audio_tokens": ("llm", "tokens"),
    "characters": ("tts", "characters"),
    "audio_seconds": ("stt", "seconds"),
}
"""Every metric a usage row may carry: its service and what it counts. The LLM token metrics
are disjoint buckets (see ``observers.usage_meter``), so summing their costs never counts a
token twice."""

UNITS: dict[str, tuple[int, Dimension]] = {
    "token": (1, "tokens"),
    "1K tokens": (1_000, "tokens"),
    "1M tokens": (1_000_000, "tokens"),
    "character": (1, "characters"),
    "1K characters": (1_000, "characters"),
    "1M characters": (1_000_000, "characters"),
    "second": (1, "seconds"),
    "minute": (60, "seconds"),
    "hour": (3_600, "seconds"),
}
"""Units a price may be quoted per: how many of the metric's own units (a token, a character,
a second of audio) one holds."""

MICRO = Decimal("0.000001")


class PriceError(ValueError):
    """``prices.yaml`` is unreadable or invalid; the message names the entry and field."""


class PriceEntry(BaseModel):
    """One entry of ``prices.yaml``: a provider's prices for some models of one service.

    Attributes:
        provider: Provider name as usage rows carry it (``anthropic``, ``deepgram``, ``local``).
        service: ``stt``, ``llm`` or ``tts``.
        models: Model globs (``aura-2*``), matched case-insensitively.
        per: The unit every price of the entry is quoted per (a key of :data:`UNITS`).
        usd: Price in USD per ``per``, by metric (keys of :data:`METRICS` of this service).
        source: Where the figures come from (a public URL, e.g. the provider's pricing page).
        as_of: Date of that source.
        estimate: The figure is derived, not a published price of this unit.
        note: Caveats (plan-dependent rates, tiers not modelled).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(min_length=1)
    service: Service
    models: tuple[str, ...] = Field(min_length=1)
    per: str
    usd: dict[str, Decimal]
    source: str = Field(min_length=1)
    as_of: date
    estimate: bool = False
    note: str = ""

    @field_validator("usd", mode="before")
    @classmethod
    def _exact(cls, value: object) -> object:
        # YAML floats would arrive binary-rounded; quote prices in the file, or go via str().
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, float) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> PriceEntry:
        if self.per not in UNITS:
            raise ValueError(f"per must be one of {list(UNITS)}, got {self.per!r}")
        if not self.usd:
            raise ValueError("usd must price at least one metric")
        dimension = UNITS[self.per][1]
        for metric, price in self.usd.items():
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; known: {list(METRICS)}")
            service, counts = METRICS[metric]
            if service != self.service:
                raise ValueError(f"{metric!r} is a {service} metric, not {self.service}")
            if counts != dimension:
                raise ValueError(f"{metric!r} counts {counts}; cannot price it per {self.per!r}")
            if not price.is_finite() or price < 0:
                raise ValueError(f"price of {metric!r} must be a non-negative number")
        return self


@dataclass(frozen=True, slots=True)
class Price:
    """One metric's price under one model glob (a flattened :class:`PriceEntry`).

    Attributes:
        provider: Provider name.
        service: ``stt``, ``llm`` or ``tts``.
        model: The model glob it applies to.
        metric: The metric priced.
        usd: USD per ``per``.
        per: The unit quoted (``1M tokens``, ``1K characters``, ``minute``).
        source: Where the figure comes from.
        as_of: Date of the source.
        estimate: Derived rather than published.
    """

    provider: str
    service: str
    model: str
    metric: str
    usd: Decimal
    per: str
    source: str
    as_of: date
    estimate: bool

    def cost(self, quantity: Decimal) -> Decimal:
        """Exact cost in USD of ``quantity`` of the metric (tokens, characters or seconds)."""
        return quantity * self.usd / UNITS[self.per][0]


def exact_quantity(metric: str, quantity: float) -> Decimal:
    """A stored quantity as the Decimal that is priced.

    Token and character counts are whole numbers (the store keeps them as floats); audio
    seconds are rounded to the microsecond, which absorbs float summation noise
    (0.4 + 0.6 = 0.9999999999999999).

    Raises:
        ValueError: If ``metric`` is unknown.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    if METRICS[metric][1] == "seconds":
        return Decimal(repr(float(quantity))).quantize(MICRO, rounding=ROUND_HALF_UP)
    return Decimal(round(quantity))


def usd(amount: Decimal) -> str:
    """Format a USD amount with 6 decimals (a millionth of a dollar), rounding half up."""
    return str(amount.quantize(MICRO, rounding=ROUND_HALF_UP))


class PriceTable:
    """The price entries in file order, with first-match lookup.

    Args:
        entries: Validated entries; earlier ones win.
    """

    def __init__(self, entries: list[PriceEntry]):
        self.entries = list(entries)
        self.prices = [
            Price(e.provider, e.service, glob, metric, price, e.per, e.source, e.as_of, e.estimate)
            for e in self.entries
            for glob in e.models
            for metric, price in e.usd.items()
        ]

    def lookup(self, provider: str, service: str, model: str, metric: str) -> Price | None:
        """The price of ``metric`` for this provider, service and model, or ``None``."""
        name = model.lower()
        for p in self.prices:
            if (
                p.provider == provider
                and p.service == service
                and p.metric == metric
                and fnmatch.fnmatchcase(name, p.model.lower())
            ):
                return p
        return None

    def cost(
        self, provider: str, service: str, model: str, metric: str, quantity: float
    ) -> Decimal | None:
        """Exact USD cost of a usage quantity, or ``None`` when no entry prices it.

        Raises:
            ValueError: If ``metric`` is unknown.
        """
        price = self.lookup(provider, service, model, metric)
        if price is None:
            return None
        return price.cost(exact_quantity(metric, quantity))


def _load(path: Path) -> PriceTable:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PriceError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("prices"), list):
        raise PriceError(f"{path}: expected a mapping with a 'prices' list")
    entries = []
    for i, body in enumerate(raw["prices"]):
        try:
            entries.append(PriceEntry.model_validate(body))
        except ValidationError as e:
            who = body.get("provider", "?") if isinstance(body, dict) else "?"
            raise PriceError(f"{path}: entry {i} ({who}): {e}") from e
    return PriceTable(entries)


@lru_cache(maxsize=4)
def load_prices(path: Path = PRICES_FILE) -> PriceTable:
    """Return the price table in ``path`` (default: the packaged ``config/prices.yaml``).

    Raises:
        PriceError: The file is unreadable or an entry invalid (the message names it).
    """
    return _load(path)
