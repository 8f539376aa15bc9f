"""The webhook events Stripe sends about a :class:`StripeFake`'s sessions, and their signature.

Events are snapshot events (https://docs.stripe.com/api/events/object): ``{id, object:
"event", api_version, created, type, data: {object}, livemode, pending_webhooks, request}``,
in the shapes of API version ``2026-10-28.endive`` (the ``stripe`` 16.1 library's): a
subscription's price under ``items.data[0].price`` (https://docs.stripe.com/api/subscriptions/
object), a failed invoice's subscription under ``parent.subscription_details``
(https://docs.stripe.com/api/invoices/object#invoice_object-parent).

The signature is Stripe's (https://docs.stripe.com/webhooks#verify-manually): ``Stripe-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the endpoint's secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from testkit.providers.stripe_fake import StripeFake, new_id

API_VERSION = "2026-10-28.endive"


def signature(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends with ``payload`` (now, unless ``timestamp``)."""
    t = int(time.time()) if timestamp is None else timestamp
    body = payload.decode() if isinstance(payload, bytes) else payload
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signed(event: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """An event's body and the headers Stripe posts it with."""
    body = json.dumps(event).encode()
    return body, {"Stripe-Signature": signature(body, secret), "Content-Type": "application/json"}


class StripeEvents:
    """Makes the events of a fake's checkouts and subscriptions, ``created`` always rising.

    Args:
        fake: The fake whose sessions, customers and prices the events are about.

    Attributes:
        subscriptions: The subscriptions made by :meth:`complete_checkout`, by id.
        clock: The ``created`` of the next event (unix seconds; each event adds 1).
    """

    def __init__(self, fake: StripeFake):
        self.fake = fake
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.clock = int(time.time()) - 3600

    def event(self, type_: str, obj: dict[str, Any], created: int | None = None) -> dict[str, Any]:
        """A snapshot event of ``type_`` about ``obj`` (``created`` from the clock unless given)."""
        if created is None:
            created, self.clock = self.clock, self.clock + 1
        return {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }

    def complete_checkout(
        self, session_id: str, status: str = "active"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The learner paid: ``checkout.session.completed`` and ``customer.subscription.created``.

        The subscription has the session's price and ``subscription_data.metadata``.
        """
        session = self.fake.sessions[session_id]
        price = self.fake.prices[session["line_items"][0]["price"]]
        sub_id = new_id("sub")
        metadata = dict((session["subscription_data"] or {}).get("metadata") or {})
        self.subscriptions[sub_id] = {
            "id": sub_id,
            "object": "subscription",
            "customer": session["customer"],
            "status": status,
            "metadata": metadata,
            "items": _items(sub_id, price),
            "cancel_at_period_end": False,
            "created": self.clock,
            "livemode": False,
        }
        public = {k: v for k, v in session.items() if k not in ("line_items", "subscription_data")}
        completed = {
            **public,
            "status": "complete",
            "payment_status": "paid",
            "subscription": sub_id,
        }
        created = self.event("customer.subscription.created", dict(self.subscriptions[sub_id]))
        return self.event("checkout.session.completed", completed), created

    def subscription(
        self,
        sub_id: str,
        type_: str = "customer.subscription.updated",
        *,
        status: str | None = None,
        lookup_key: str | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        """An event about a subscription after a change of its status or price.

        ``customer.subscription.deleted`` makes it ``canceled``; ``lookup_key`` switches it to
        the fake's price with that key (a plan change in the portal).
        """
        sub = self.subscriptions[sub_id]
        if type_ == "customer.subscription.deleted":
            status = "canceled"
        if status is not None:
            sub["status"] = status
        if lookup_key is not None:
            price = next(p for p in self.fake.prices.values() if p["lookup_key"] == lookup_key)
            sub["items"] = _items(sub_id, price)
        return self.event(type_, json.loads(json.dumps(sub)), created)

    def invoice_payment_failed(self, sub_id: str, created: int | None = None) -> dict[str, Any]:
        """``invoice.payment_failed`` for the subscription's renewal invoice."""
        sub = self.subscriptions[sub_id]
        invoice = {
            "id": new_id("in"),
            "object": "invoice",
            "customer": sub["customer"],
            "status": "open",
            "billing_reason": "subscription_cycle",
            "attempt_count": 1,
            "amount_due": sub["items"]["data"][0]["price"]["unit_amount"],
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub_id},
            },
            "livemode": False,
        }
        return self.event("invoice.payment_failed", invoice, created)


def _items(sub_id: str, price: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": new_id("si"),
                "object": "subscription_item",
                "price": dict(price),
                "quantity": 1,
                "subscription": sub_id,
            }
        ],
        "has_more": False,
        "url": f"/v1/subscription_items?subscription={sub_id}",
    }
