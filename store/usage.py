"""Usage and cost per session, learner, tier, day or month: summed in SQL, priced in Decimal.

:meth:`UsageStore.usage_by` sums ``usage_events`` quantities per group and per
``(service, provider, model, metric)`` in one query (joined with ``sessions`` for the tier,
learner and owning API key), and counts each group's sessions in a second. :func:`price_usage`
prices the sums with a :class:`config.prices.PriceTable`; :meth:`UsageStore.usage_report` does
both. Days and months are calendar periods in UTC, taken from when the usage happened
(``usage_events.created_at``); only sessions with metered usage appear.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, distinct, func, select
from sqlalchemy.orm import QueryableAttribute

from config.prices import Price, PriceTable, exact_quantity
from store.base import StoreBase
from store.models import Learner, TutorSession, UsageEvent

GroupBy = Literal["session", "learner", "tier", "day", "month"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)
KeyColumn = ColumnElement[Any] | QueryableAttribute[Any]


@dataclass(frozen=True, slots=True)
class UsageItem:
    """One metered quantity of a group, with its price once priced.

    Attributes:
        service: ``stt``, ``llm`` or ``tts``.
        provider: Provider name.
        model: Model name.
        metric: What ``quantity`` counts (``characters``, ``prompt_tokens``, ``audio_seconds``).
        quantity: Sum over the group (tokens, characters, or seconds).
        price: The price applied, ``None`` before pricing or when no entry prices it.
        cost: Exact USD cost, ``None`` when unpriced.
    """

    service: str
    provider: str
    model: str
    metric: str
    quantity: float
    price: Price | None = None
    cost: Decimal | None = None


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """Usage of one group (a session, learner, tier, UTC day ``YYYY-MM-DD`` or month ``YYYY-MM``).

    Attributes:
        key: The group's id (session or learner id, tier name, day, month).
        label: Human name (the learner's name for learners and sessions; else the key).
        sessions: Sessions that contributed usage.
        items: Quantities per service, provider, model and metric.
    """

    key: str
    label: str
    sessions: int
    items: tuple[UsageItem, ...]

    @property
    def cost(self) -> Decimal:
        """Exact USD cost of the priced items (unpriced ones are left out; see ``unpriced``)."""
        return sum((i.cost for i in self.items if i.cost is not None), Decimal(0))

    @property
    def unpriced(self) -> int:
        """How many items no price entry covers."""
        return sum(1 for i in self.items if i.price is None)

    def quantity(self, service: str, metric: str) -> float:
        """Total of ``metric`` over every provider and model of ``service``."""
        return sum(i.quantity for i in self.items if (i.service, i.metric) == (service, metric))


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Priced usage, one row per group, in key order.

    Attributes:
        group_by: ``session``, ``learner``, ``tier``, ``day`` or ``month``.
        since: Start of the window (inclusive, UTC), if any.
        until: End of the window (exclusive, UTC), if any.
        groups: The groups.
    """

    group_by: str
    since: datetime | None
    until: datetime | None
    groups: tuple[UsageGroup, ...] = field(default_factory=tuple)

    @property
    def cost(self) -> Decimal:
        """Exact USD cost over every group."""
        return sum((g.cost for g in self.groups), Decimal(0))


MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def usage_window(
    month: str | None = None, first: date | None = None, last: date | None = None
) -> tuple[datetime | None, datetime | None]:
    """The UTC window ``[since, until)`` of a month ``YYYY-MM`` or of days ``first``..``last``.

    Args:
        month: A calendar month, e.g. ``2026-11``; excludes ``first`` and ``last``.
        first: First day included (UTC midnight on), or ``None`` for no lower bound.
        last: Last day included (up to the next UTC midnight), or ``None`` for no upper bound.

    Raises:
        ValueError: Malformed month, a month together with days, or ``first`` after ``last``.
    """
    if month is not None:
        m = MONTH_RE.match(month)
        if m is None:
            raise ValueError(f"month must be YYYY-MM, got {month!r}")
        if first is not None or last is not None:
            raise ValueError("give either month or from/to, not both")
        year, mon = int(m.group(1)), int(m.group(2))
        start = datetime(year, mon, 1, tzinfo=UTC)
        end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
        return start, end
    if first is not None and last is not None and first > last:
        raise ValueError(f"from ({first}) is after to ({last})")
    since = datetime.combine(first, time(), UTC) if first is not None else None
    until = None
    if last is not None and last < date.max:  # no day follows 9999-12-31: no upper bound
        until = datetime.combine(last + timedelta(days=1), time(), UTC)
    return since, until


def price_usage(groups: Sequence[UsageGroup], prices: PriceTable) -> list[UsageGroup]:
    """Attach each item's price and exact cost (``None`` for items no entry prices)."""
    priced = []
    for g in groups:
        items = []
        for i in g.items:
            price = prices.lookup(i.provider, i.service, i.model, i.metric)
            cost = None if price is None else price.cost(exact_quantity(i.metric, i.quantity))
            items.append(
                UsageItem(i.service, i.provider, i.model, i.metric, i.quantity, price, cost)
            )
        priced.append(UsageGroup(g.key, g.label, g.sessions, tuple(items)))
    return priced


class UsageStore(StoreBase):
    """Usage aggregation (mixed into :class:`store.Store`)."""

    def _period(self, group_by: str) -> ColumnElement[str]:
        """``YYYY-MM-DD`` or ``YYYY-MM`` of the usage time, in UTC, on either backend."""
        if self.dialect == "postgresql":
            pattern = "YYYY-MM-DD" if group_by == "day" else "YYYY-MM"
            return func.to_char(func.timezone("UTC", UsageEvent.created_at), pattern)
        pattern = "%Y-%m-%d" if group_by == "day" else "%Y-%m"
        return func.strftime(pattern, UsageEvent.created_at)  # naive UTC text in SQLite

    def _key(self, group_by: str) -> tuple[KeyColumn, KeyColumn]:
        if group_by == "session":
            return UsageEvent.session_id, Learner.name
        if group_by == "learner":
            return TutorSession.learner_id, Learner.name
        if group_by == "tier":
            return TutorSession.tier, TutorSession.tier
        period = self._period(group_by)
        return period, period

    async def usage_by(
        self,
        group_by: str,
        *,
        owner_key_id: str | None = None,
        learner_id: str | None = None,
        tier: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageGroup]:
        """Sum usage per group and per ``(service, provider, model, metric)``, unpriced.

        Args:
            group_by: ``session``, ``learner``, ``tier``, ``day`` or ``month`` (UTC).
            owner_key_id: Only sessions of this API key (``None``: every key; the CLI).
            learner_id: Only this learner's sessions.
            tier: Only sessions of this tier.
            since: Only usage at or after this aware datetime.
            until: Only usage before this aware datetime.

        Returns:
            Groups in key order (learners by name), items by service, provider, model, metric.

        Raises:
            ValueError: If ``group_by`` is unknown or ``since`` is not before ``until``.
        """
        if group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
        if since is not None and until is not None and since >= until:
            raise ValueError("since must be before until")
        key, label = self._key(group_by)
        where: list[ColumnElement[bool]] = []
        if owner_key_id is not None:
            where.append(TutorSession.owner_key_id == owner_key_id)
        if learner_id is not None:
            where.append(TutorSession.learner_id == learner_id)
        if tier is not None:
            where.append(TutorSession.tier == tier)
        if since is not None:
            where.append(UsageEvent.created_at >= since)
        if until is not None:
            where.append(UsageEvent.created_at < until)
        item = (UsageEvent.service, UsageEvent.provider, UsageEvent.model, UsageEvent.metric)
        joined = (
            select()
            .select_from(UsageEvent)
            .join(TutorSession, TutorSession.id == UsageEvent.session_id)
            .join(Learner, Learner.id == TutorSession.learner_id)
            .where(*where)
        )
        sums = joined.add_columns(key, label, *item, func.sum(UsageEvent.quantity)).group_by(
            key, label, *item
        )
        counts = joined.add_columns(key, func.count(distinct(UsageEvent.session_id))).group_by(key)
        async with self._tx() as s:
            rows = (await s.execute(sums)).all()
            sessions = {str(k): int(n) for k, n in (await s.execute(counts)).all()}
        groups: dict[str, tuple[str, list[UsageItem]]] = {}

        def item_order(i: UsageItem) -> tuple[str, str, str, str]:
            return (i.service, i.provider, i.model, i.metric)

        for k, lab, service, provider, model, metric, total in rows:
            entry = groups.setdefault(str(k), (str(lab), []))
            entry[1].append(UsageItem(service, provider, model, metric, float(total)))
        order = sorted(groups, key=lambda k: (groups[k][0], k) if group_by == "learner" else k)
        return [
            UsageGroup(
                k,
                groups[k][0],
                sessions.get(k, 0),
                tuple(
                    sorted(groups[k][1], key=lambda i: (i.service, i.provider, i.model, i.metric))
                ),
            )
            for k in order
        ]

    async def usage_report(
        self,
        group_by: str,
        prices: PriceTable,
        *,
        owner_key_id: str | None = None,
        learner_id: str | None = None,
        tier: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> UsageReport:
        """:meth:`usage_by`, priced with ``prices`` (cost per session, learner, tier, period).

        Raises:
            ValueError: As :meth:`usage_by`.
        """
        groups = await self.usage_by(
            group_by,
            owner_key_id=owner_key_id,
            learner_id=learner_id,
            tier=tier,
            since=since,
            until=until,
        )
        return UsageReport(group_by, since, until, tuple(price_usage(groups, prices)))
