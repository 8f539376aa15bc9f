"""Stripe calls of the billing routes: prices, customers, Checkout and the customer portal.

Through the official ``stripe`` library's :class:`stripe.StripeClient` with its httpx client
and the ``*_async`` methods, so no call blocks the event loop. The secret key comes from the
environment only (``STRIPE_SECRET_KEY``); ``VOXTUTOR_STRIPE_API_BASE`` points the library at
another base address (the tests' loopback fake, ``testkit/providers/stripe_fake.py``).

- A plan's price is found by its lookup key (``GET /v1/prices?lookup_keys[]=…&active=true``,
  https://docs.stripe.com/api/prices/list) and cached for :data:`PRICE_TTL_S`.
- A learner's Stripe Customer (https://docs.stripe.com/api/customers/create) is made on their
  first checkout, with only their id in its metadata (no name or contact: Checkout asks the
  learner for what Stripe needs).
- Checkout (https://docs.stripe.com/api/checkout/sessions/create) runs in ``subscription``
  mode with ``client_reference_id`` = the learner and ``subscription_data.metadata`` =
  ``{learner_id, plan}``, so the subscription's events name the learner.
- The customer portal (https://docs.stripe.com/api/customer_portal/sessions/create) lets the
  learner change their card, switch plans or cancel.

Every Stripe failure is one :class:`BillingError` whose message says what Stripe answered,
never a stack trace or the key.
"""

from __future__ import annotations

import time
from typing import Any

import stripe
from loguru import logger

from config.settings import Settings

PRICE_TTL_S = 600.0
"""How long a lookup key's price id is kept (a price moved to another key counts after it)."""

TIMEOUT_S = 20.0
"""Longest wait for one Stripe request."""

RETRIES = 2
"""Retries of a failed Stripe request (connection errors, 409, 5xx), with idempotency keys."""


class BillingError(Exception):
    """A Stripe request failed; the message says how (safe to show: no key, no traceback)."""


class NoPriceError(BillingError):
    """No active Stripe price has the plan's lookup key."""


def upgrade_url(settings: Settings, learner_id: str) -> str:
    """Where a learner over a quota or outside their plan can get more.

    ``VOXTUTOR_UPGRADE_URL`` (the operator's pricing page) when set; else, with Stripe
    configured, the learner's checkout route; else the plan catalog.
    """
    if settings.upgrade_url:
        return settings.upgrade_url
    if settings.stripe_secret_key is not None:
        return f"/api/v1/learners/{learner_id}/billing/checkout"
    return "/api/v1/plans"


class StripeBilling:
    """The Stripe calls the billing routes make (one instance per app, closed at shutdown).

    Args:
        secret_key: Stripe secret key (``sk_…``).
        api_base: Base address of the Stripe API (``None``: ``https://api.stripe.com``).
    """

    def __init__(self, secret_key: str, api_base: str | None = None):
        self._secret = secret_key
        self._http = stripe.HTTPXClient(timeout=TIMEOUT_S)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http,
            max_network_retries=RETRIES,
        )
        self._prices: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeBilling | None:
        """The billing client ``settings`` configure, or ``None`` without ``STRIPE_SECRET_KEY``."""
        key = settings.stripe_secret_key
        if key is None or not key.get_secret_value():
            return None
        return cls(key.get_secret_value(), settings.stripe_api_base)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.close_async()

    async def price_id(self, lookup_key: str) -> str:
        """The id (``price_…``) of the active price with ``lookup_key`` (cached).

        Raises:
            NoPriceError: no active price has the key.
            BillingError: Stripe failed.
        """
        cached = self._prices.get(lookup_key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        prices = await self._call(
            "list prices",
            self._client.v1.prices.list_async(
                {"lookup_keys": [lookup_key], "active": True, "limit": 1}
            ),
        )
        if not prices.data:
            raise NoPriceError(f"no active Stripe price has the lookup key {lookup_key!r}")
        price = str(prices.data[0].id)
        self._prices[lookup_key] = (price, time.monotonic() + PRICE_TTL_S)
        return price

    async def create_customer(self, learner_id: str) -> str:
        """A new Stripe Customer for the learner (``cus_…``), their id in its metadata.

        The idempotency key is the learner's: two checkouts at once get the same customer.

        Raises:
            BillingError: Stripe failed.
        """
        customer = await self._call(
            "create a customer",
            self._client.v1.customers.create_async(
                {"metadata": {"learner_id": learner_id}},
                {"idempotency_key": f"voxtutor-customer-{learner_id}"},
            ),
        )
        return str(customer.id)

    async def checkout(
        self,
        *,
        learner_id: str,
        customer_id: str,
        plan: str,
        price_id: str,
        success_url: str,
        cancel_url: str,
    ) -> tuple[str, str]:
        """A Checkout Session subscribing the customer to ``price_id``.

        Returns:
            The session's ``url`` (where the learner pays) and its ``id`` (``cs_…``).

        Raises:
            BillingError: Stripe failed.
        """
        metadata = {"learner_id": learner_id, "plan": plan}
        session = await self._call(
            "create a Checkout Session",
            self._client.v1.checkout.sessions.create_async(
                {
                    "mode": "subscription",
                    "customer": customer_id,
                    "line_items": [{"price": price_id, "quantity": 1}],
                    "success_url": success_url,
                    "cancel_url": cancel_url,
                    "client_reference_id": learner_id,
                    "metadata": metadata,
                    "subscription_data": {"metadata": metadata},
                }
            ),
        )
        return str(session.url), str(session.id)

    async def portal(self, customer_id: str, return_url: str) -> str:
        """The URL of a customer-portal session for the customer.

        Raises:
            BillingError: Stripe failed.
        """
        session = await self._call(
            "create a portal session",
            self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer_id, "return_url": return_url}
            ),
        )
        return str(session.url)

    async def _call(self, what: str, request: Any) -> Any:
        """Await one Stripe request; its failure becomes a :class:`BillingError`."""
        try:
            return await request
        except stripe.StripeError as e:
            message = f"Stripe could not {what}: {self._describe(e)}"
            logger.warning("{}", message)
            raise BillingError(message) from None

    def _describe(self, e: stripe.StripeError) -> str:
        """What Stripe said (its error message, else the error class), without the key."""
        if isinstance(e, stripe.APIConnectionError):
            text = "Stripe is unreachable"
        else:
            text = e.user_message or type(e).__name__
            if e.http_status:
                text = f"{text} (HTTP {e.http_status})"
        return text.replace(self._secret, "[secret key]")[:300]
