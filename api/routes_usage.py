"""``GET /api/v1/usage``: metered usage and its cost, per learner, tier, session, day or month.

Only the calling key's sessions count. Quantities are the sums of ``usage_events`` rows
(``observers.usage_meter``); prices come from ``config/prices.yaml`` (each with its source and
date). Money is a decimal string with 6 decimals (USD, rounded half up from the exact sum), so
no float rounding creeps into a bill; items no price covers have ``cost_usd: null`` and are
counted in ``unpriced`` instead of costing 0.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import ApiKey, Ctx, is_uuid
from api.errors import ApiError, error_responses
from config.prices import METRICS, load_prices, usd
from config.tiers import TierError, load_tiers
from store.usage import GroupBy, UsageGroup, UsageItem, UsageReport, usage_window

router = APIRouter(tags=["usage"], responses=error_responses(429, 500))


class UsageItemOut(BaseModel):
    """One metered quantity of a group and what it costs.

    Attributes:
        service: ``stt``, ``llm`` or ``tts``.
        provider: Provider name.
        model: Model name.
        metric: What is counted (``characters``, ``prompt_tokens``, ``audio_seconds``, …).
        quantity: The sum: tokens, characters or seconds of audio.
        unit: ``tokens``, ``characters`` or ``seconds``.
        price_usd: The price applied, per ``price_per``; ``null`` if unpriced.
        price_per: The unit the price is quoted per (``1M tokens``, ``1K characters``, ``minute``).
        price_source: Where the price comes from; ``price_as_of``: the date of that source.
        price_estimate: The price is derived rather than published (see ``config/prices.yaml``).
        cost_usd: ``quantity`` × price, 6 decimals; ``null`` if unpriced.
    """

    service: str
    provider: str
    model: str
    metric: str
    quantity: float
    unit: str
    price_usd: str | None = None
    price_per: str | None = None
    price_source: str | None = None
    price_as_of: date | None = None
    price_estimate: bool = False
    cost_usd: str | None = None

    @classmethod
    def of(cls, i: UsageItem) -> UsageItemOut:
        """Build from a priced :class:`store.usage.UsageItem`."""
        p = i.price
        return cls(
            service=i.service,
            provider=i.provider,
            model=i.model,
            metric=i.metric,
            quantity=i.quantity,
            unit=METRICS[i.metric][1] if i.metric in METRICS else "unknown",
            price_usd=None if p is None else str(p.usd),
            price_per=None if p is None else p.per,
            price_source=None if p is None else p.source,
            price_as_of=None if p is None else p.as_of,
            price_estimate=False if p is None else p.estimate,
            cost_usd=None if i.cost is None else usd(i.cost),
        )


class UsageRowOut(BaseModel):
    """One group: a learner, tier, session, UTC day or month.

    Attributes:
        key: Learner or session id, tier name, ``YYYY-MM-DD`` or ``YYYY-MM``.
        label: The learner's name (learner and session groups), else the key.
        sessions: Sessions with metered usage in the group.
        cost_usd: Cost of the priced items, 6 decimals.
        unpriced: Items no price covers (left out of ``cost_usd``).
        items: Quantities per service, provider, model and metric.
    """

    key: str
    label: str
    sessions: int
    cost_usd: str
    unpriced: int
    items: list[UsageItemOut]

    @classmethod
    def of(cls, g: UsageGroup) -> UsageRowOut:
        """Build from a priced :class:`store.usage.UsageGroup`."""
        items = [UsageItemOut.of(i) for i in g.items]
        return cls(
            key=g.key,
            label=g.label,
            sessions=g.sessions,
            cost_usd=usd(g.cost),
            unpriced=g.unpriced,
            items=items,
        )


class UsageOut(BaseModel):
    """Usage and cost of the calling key's sessions.

    Attributes:
        group_by: How rows are grouped.
        since: Start of the window (inclusive, UTC), or ``null``.
        until: End of the window (exclusive, UTC), or ``null``.
        currency: Always ``USD``.
        total_cost_usd: Cost over every row, 6 decimals.
        rows: One per group, in key order (learners by name).
    """

    group_by: str
    since: datetime | None
    until: datetime | None
    currency: str = "USD"
    total_cost_usd: str
    rows: list[UsageRowOut] = Field(default_factory=list)

    @classmethod
    def of(cls, report: UsageReport) -> UsageOut:
        """Build from a :class:`store.usage.UsageReport`."""
        return cls(
            group_by=report.group_by,
            since=report.since,
            until=report.until,
            total_cost_usd=usd(report.cost),
            rows=[UsageRowOut.of(g) for g in report.groups],
        )


@router.get(
    "/usage",
    response_model=UsageOut,
    responses=error_responses(401, 422),
    summary="Usage and cost",
)
async def get_usage(
    key: ApiKey,
    ctx: Ctx,
    group_by: Annotated[
        GroupBy, Query(description="learner, tier, session, day or month (UTC).")
    ] = "learner",
    learner_id: Annotated[str | None, Query(max_length=100)] = None,
    tier: Annotated[str | None, Query(max_length=50)] = None,
    month: Annotated[str | None, Query(description="YYYY-MM (UTC); excludes from/to.")] = None,
    first: Annotated[date | None, Query(alias="from", description="First UTC day.")] = None,
    last: Annotated[date | None, Query(alias="to", description="Last UTC day.")] = None,
) -> UsageOut:
    """The calling key's usage per group, with quantities per metric and cost in USD.

    422 for an unknown ``group_by`` or ``tier``, a malformed ``month``, ``month`` together with
    ``from``/``to``, or ``from`` after ``to``. ``from`` and ``to`` are inclusive UTC days.
    """
    try:
        since, until = usage_window(month, first, last)
        if tier is not None and tier not in load_tiers():
            raise TierError(f"unknown tier {tier!r}; known: {', '.join(load_tiers())}")
    except ValueError as e:  # TierError is a ValueError
        raise ApiError(422, "invalid_request", str(e)) from None
    if learner_id is not None and not is_uuid(learner_id):
        return UsageOut(group_by=group_by, since=since, until=until, total_cost_usd=usd(Decimal(0)))
    report = await ctx.store.usage_report(
        group_by,
        load_prices(),
        owner_key_id=key.id,
        learner_id=learner_id,
        tier=tier,
        since=since,
        until=until,
    )
    return UsageOut.of(report)
