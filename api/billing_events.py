"""Stripe webhook events: check their signature, and say what each asks of a learner's plan.

The signature is checked by the ``stripe`` library (:func:`stripe.Webhook.construct_event`:
``Stripe-Signature: t=…,v1=…`` is the HMAC-SHA256 of ``"{t}.{body}"`` with the endpoint's
signing secret, and ``t`` at most 5 minutes old; https://docs.stripe.com/webhooks#verify-events).
:func:`change_of` maps the events the server acts on
(https://docs.stripe.com/billing/subscriptions/webhooks) to a :class:`store.BillingChange`:

- ``customer.subscription.created`` / ``.updated``: status ``active`` or ``trialing`` grants
  the plan of the subscription's price (its lookup key, else ``metadata.plan``); ``past_due``,
  ``unpaid``, ``canceled``, ``incomplete_expired`` and ``paused`` (a trial that ended without
  a card) revoke it to the default plan; ``incomplete`` (first payment pending) changes
  nothing.
- ``customer.subscription.deleted`` and ``invoice.payment_failed`` (a subscription's invoice)
  revoke.
- ``checkout.session.completed`` links the customer and the subscription to the learner.
- Anything else is answered 200 and not stored.

The learner is ``metadata.learner_id`` (``client_reference_id`` for a Checkout Session), else
whoever has the event's customer (:meth:`store.Store.apply_billing_change`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import stripe
from loguru import logger

from config.plans import PlanError, get_plan, plan_for_price
from store import BillingChange

GRANTING = frozenset({"active", "trialing"})
"""Subscription statuses that give the learner the subscription's plan."""

REVOKING = frozenset({"past_due", "unpaid", "canceled", "incomplete_expired", "paused"})
"""Subscription statuses that take it back
(https://docs.stripe.com/api/subscriptions/object#subscription_object-status)."""

Action = Literal["grant", "revoke", "link"]

SUBSCRIPTION_EVENTS = frozenset({"customer.subscription.created", "customer.subscription.updated"})


class BadSignatureError(ValueError):
    """The body is not a Stripe event signed with the webhook secret (or too old)."""


def verified_event(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """The event in ``payload`` as plain data, once its ``Stripe-Signature`` checks out.

    Raises:
        BadSignatureError: a missing, malformed, wrong or expired signature, or a body that
            is not a JSON event.
    """
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret)
    except stripe.SignatureVerificationError as e:
        raise BadSignatureError(e.user_message or "invalid signature") from None
    except ValueError:  # not UTF-8 or not JSON (UnicodeDecodeError is a ValueError)
        raise BadSignatureError("the body is not a JSON event") from None
    data = event.to_dict()
    if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
        raise BadSignatureError("the body is not a Stripe event")
    return data


def change_of(event: dict[str, Any], default_plan: str) -> BillingChange | None:
    """What ``event`` asks of a learner's plan, or ``None`` for an event the server ignores.

    Args:
        event: A verified event (:func:`verified_event`).
        default_plan: The plan a revocation falls back to (``VOXTUTOR_DEFAULT_PLAN``).
    """
    kind = event["type"]
    obj = (event.get("data") or {}).get("object") or {}
    if not isinstance(obj, dict):
        return None
    created = datetime.fromtimestamp(int(event.get("created") or 0), UTC)

    def change(
        action: Action, metadata: Any, customer: Any, subscription: Any, plan: str | None = None
    ) -> BillingChange:
        learner = metadata.get("learner_id") if isinstance(metadata, dict) else None
        return BillingChange(
            event_id=event["id"],
            type=kind,
            created=created,
            action=action,
            learner_id=learner if isinstance(learner, str) and learner else None,
            customer_id=_id(customer),
            subscription_id=_id(subscription),
            plan=plan,
        )

    if kind in SUBSCRIPTION_EVENTS or kind == "customer.subscription.deleted":
        who = (obj.get("metadata"), obj.get("customer"), obj.get("id"))
        status = obj.get("status")
        if kind != "customer.subscription.deleted" and status in GRANTING:
            plan = _plan_of(obj)
            if plan is None:
                logger.warning("Stripe event {}: no plan for the subscription's price", event["id"])
                return None
            return change("grant", *who, plan=plan)
        if kind == "customer.subscription.deleted" or status in REVOKING:
            return change("revoke", *who, plan=default_plan)
        return None
    if kind == "invoice.payment_failed":
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        subscription = _id(details.get("subscription")) or _id(obj.get("subscription"))
        if subscription is None:  # a one-off invoice: no plan rides on it
            return None
        return change(
            "revoke", details.get("metadata"), obj.get("customer"), subscription, default_plan
        )
    if kind == "checkout.session.completed" and obj.get("mode") == "subscription":
        metadata = {"learner_id": obj.get("client_reference_id"), **(obj.get("metadata") or {})}
        return change("link", metadata, obj.get("customer"), obj.get("subscription"))
    return None


def _id(value: Any) -> str | None:
    """An object's id whether it came as a string or expanded as an object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _plan_of(subscription: dict[str, Any]) -> str | None:
    """The plan a subscription pays for: its first item's price lookup key, else metadata."""
    items = (subscription.get("items") or {}).get("data") or []
    price = (items[0].get("price") or {}) if items and isinstance(items[0], dict) else {}
    lookup_key = price.get("lookup_key") if isinstance(price, dict) else None
    if isinstance(lookup_key, str) and (plan := plan_for_price(lookup_key)) is not None:
        return plan.name
    named = (subscription.get("metadata") or {}).get("plan")
    try:
        return get_plan(named).name if isinstance(named, str) else None
    except PlanError:
        return None
