"""Billing state: a learner's Stripe customer and subscription, and the Stripe events applied.

A learner's plan is set by the API key that owns them, or held by a Stripe subscription
(``Learner.plan_source``: ``key``, ``stripe``, or ``revoked`` once Stripe took the plan back
and the learner fell to the default plan). The webhook (``api.routes_billing``) turns each
Stripe event into a :class:`BillingChange`; :meth:`BillingStore.apply_billing_change` applies
it in one transaction with the ``billing_events`` row of its event id, so a replayed event —
even two deliveries at once — is refused by the primary key and applied zero more times
(Stripe: "handle duplicate events", https://docs.stripe.com/webhooks#handle-duplicate-events).
Stripe does not deliver events in order (https://docs.stripe.com/webhooks#event-ordering): an
event ``created`` before the last one applied to the learner changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import StoreBase, owned_learner
from store.models import BillingEvent, Learner
from store.records import ConflictError, NotFoundError

PLAN_SOURCES = ("key", "stripe", "revoked")
"""Who set a learner's plan: its API key, a Stripe subscription, or Stripe's revocation."""

Outcome = Literal["granted", "revoked", "linked", "stale", "unchanged", "no_learner", "duplicate"]


class SubscriptionActiveError(ConflictError):
    """The learner's plan is held by a Stripe subscription (cancel it first, in the portal)."""


@dataclass(frozen=True, slots=True)
class BillingAccount:
    """A learner's billing state.

    Attributes:
        learner_id: The learner.
        plan: Their plan now.
        plan_source: ``key``, ``stripe`` (a subscription holds the plan) or ``revoked``.
        stripe_customer_id: Their Stripe Customer (``cus_…``), once a checkout made one.
        stripe_subscription_id: The subscription (``sub_…``) their events are about.
        billing_event_at: ``created`` of the last Stripe event applied to them.
    """

    learner_id: str
    plan: str
    plan_source: str
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    billing_event_at: datetime | None


@dataclass(frozen=True, slots=True)
class BillingChange:
    """What one Stripe event asks of a learner (built by ``api.billing_events``).

    Attributes:
        event_id: The event's ``id`` (``evt_…``): applied at most once.
        type: The event's ``type`` (``customer.subscription.updated``, …).
        created: The event's ``created`` (when Stripe made it, UTC).
        action: ``grant`` (put the learner on ``plan``, held by the subscription), ``revoke``
            (back to ``plan``, the default, if this subscription holds their plan) or
            ``link`` (record the customer and subscription; the plan is untouched).
        learner_id: The learner named in the object's metadata, if any.
        customer_id: The Stripe customer the object belongs to (finds the learner otherwise).
        subscription_id: The subscription the event is about.
        plan: The plan to grant, or the default plan a revocation falls back to.
    """

    event_id: str
    type: str
    created: datetime
    action: Literal["grant", "revoke", "link"]
    learner_id: str | None = None
    customer_id: str | None = None
    subscription_id: str | None = None
    plan: str | None = None


def _account(row: Learner) -> BillingAccount:
    return BillingAccount(
        learner_id=row.id,
        plan=row.plan,
        plan_source=row.plan_source,
        stripe_customer_id=row.stripe_customer_id,
        stripe_subscription_id=row.stripe_subscription_id,
        billing_event_at=row.billing_event_at,
    )


class BillingStore(StoreBase):
    """Billing state and Stripe events (mixed into :class:`store.Store`)."""

    async def billing_account(self, learner_id: str, owner_key_id: str) -> BillingAccount:
        """The learner's billing state.

        Raises:
            NotFoundError: no such learner for this key.
        """
        async with self._tx() as s:
            row = await owned_learner(s, learner_id, owner_key_id)
            return _account(row)

    async def set_stripe_customer(self, learner_id: str, customer_id: str) -> str:
        """Give the learner ``customer_id`` unless they have a customer already.

        Returns:
            The learner's customer id now: the first one stored wins, so two checkouts at
            once end up with one customer on the learner.

        Raises:
            NotFoundError: no such learner.
        """
        async with self._tx() as s:
            await s.execute(
                update(Learner)
                .where(Learner.id == learner_id, Learner.stripe_customer_id.is_(None))
                .values(stripe_customer_id=customer_id)
            )
            stored = await s.scalar(
                select(Learner.stripe_customer_id).where(Learner.id == learner_id)
            )
            if stored is None:
                raise NotFoundError(f"no learner {learner_id!r}")
            return stored

    async def apply_billing_change(self, change: BillingChange) -> Outcome:
        """Apply one Stripe event to its learner, once per event id.

        The ``billing_events`` row is written first, in the same transaction as the change:
        a replay (or a concurrent delivery of the same event) fails on the primary key and
        changes nothing. The learner is the one in the metadata, else the one with the
        event's customer; their row is locked while the change is made.

        Returns:
            ``granted`` / ``revoked`` (the plan changed or was confirmed), ``linked``
            (customer and subscription recorded), ``stale`` (an event older than the last
            one applied), ``unchanged`` (a revocation of a subscription that does not hold
            the learner's plan), ``no_learner`` (none found, e.g. erased) or ``duplicate``.
        """
        try:
            async with self._tx() as s:
                event = BillingEvent(
                    event_id=change.event_id,
                    type=change.type,
                    created_at=change.created,
                    outcome="pending",
                )
                s.add(event)
                await s.flush()  # the primary key: a replay stops here
                row = await _find_learner(s, change)
                outcome: Outcome = "no_learner"
                if row is not None:
                    taken = change.customer_id is not None and await s.scalar(
                        select(Learner.id).where(
                            Learner.stripe_customer_id == change.customer_id, Learner.id != row.id
                        )
                    )
                    outcome = _apply(row, change, link_customer=not taken)
                    event.learner_id = row.id
                event.outcome = outcome
                return outcome
        except IntegrityError:
            async with self._tx() as s:
                if await s.get(BillingEvent, change.event_id) is not None:
                    return "duplicate"
            raise


async def _find_learner(s: AsyncSession, change: BillingChange) -> Learner | None:
    """The event's learner (metadata first, then customer), its row locked; never erased."""
    row = None
    if change.learner_id:
        row = await s.get(Learner, change.learner_id, with_for_update=True)
    if (row is None or row.erased) and change.customer_id:
        row = await s.scalar(
            select(Learner)
            .where(Learner.stripe_customer_id == change.customer_id)
            .with_for_update()
        )
    return None if row is None or row.erased else row


def _apply(row: Learner, change: BillingChange, *, link_customer: bool) -> Outcome:
    """Change ``row`` as ``change`` asks (the rules in the module docstring).

    ``link_customer``: the event's customer may become the learner's (no one else has it).
    """
    if link_customer and change.customer_id and row.stripe_customer_id is None:
        row.stripe_customer_id = change.customer_id
    if change.action == "link":
        # A subscription that does not hold the plan yet (its `created` event may come next).
        if change.subscription_id and row.plan_source != "stripe":
            row.stripe_subscription_id = change.subscription_id
        return "linked"
    if row.billing_event_at is not None and change.created < row.billing_event_at:
        return "stale"
    row.billing_event_at = change.created
    if change.action == "grant":
        assert change.plan is not None
        row.plan, row.plan_source = change.plan, "stripe"
        row.stripe_subscription_id = change.subscription_id or row.stripe_subscription_id
        return "granted"
    holds = row.plan_source == "stripe" and change.subscription_id in (
        row.stripe_subscription_id,
        None,
    )
    if not holds:
        return "unchanged"
    assert change.plan is not None
    row.plan, row.plan_source = change.plan, "revoked"
    return "revoked"


async def billing_export(s: AsyncSession, row: Learner) -> dict[str, Any]:
    """The learner's billing state and Stripe events, JSON-ready (read in ``s``, the export's)."""
    events = await s.scalars(
        select(BillingEvent)
        .where(BillingEvent.learner_id == row.id)
        .order_by(BillingEvent.created_at, BillingEvent.event_id)
    )
    return {
        "plan_source": row.plan_source,
        "stripe_customer_id": row.stripe_customer_id,
        "stripe_subscription_id": row.stripe_subscription_id,
        "billing_event_at": _iso(row.billing_event_at),
        "events": [
            {
                "event_id": e.event_id,
                "type": e.type,
                "outcome": e.outcome,
                "created_at": _iso(e.created_at),
                "received_at": _iso(e.received_at),
            }
            for e in events
        ],
    }


async def erase_billing(s: AsyncSession, row: Learner) -> None:
    """Before the learner's row is deleted in ``s``: detach their ``billing_events`` rows.

    The rows keep the event's id, type, outcome and times (so a replay is still a
    duplicate) and lose the learner. The Stripe customer itself stays with Stripe, whose
    payment records the operator keeps.

    Raises:
        SubscriptionActiveError: a Stripe subscription holds their plan: erasing them would
            leave it charging a learner who no longer exists.
    """
    if row.plan_source == "stripe":
        raise SubscriptionActiveError(
            "a Stripe subscription pays for this learner's plan; cancel it first "
            f"(POST /api/v1/learners/{row.id}/billing/portal)"
        )
    await s.execute(
        update(BillingEvent).where(BillingEvent.learner_id == row.id).values(learner_id=None)
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
