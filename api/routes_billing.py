"""Billing with Stripe: checkout for a plan, the customer portal, and Stripe's signed webhook.

The learner routes use the API key as the other learner routes do (404 for another key's
learner); the webhook has no key: Stripe signs it (``STRIPE_WEBHOOK_SECRET``). Stripe calls:
:mod:`api.billing`; what an event does: :mod:`api.billing_events`; applying it once:
:mod:`store.billing`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field

from api.billing import BillingError, NoPriceError, StripeBilling
from api.billing_events import BadSignatureError, change_of, verified_event
from api.deps import ApiKey, Ctx, is_uuid
from api.errors import ApiError, error_responses
from api.schemas import Text
from config.plans import PlanError, get_plan
from store import BillingAccount, NotFoundError

router = APIRouter(tags=["billing"], responses=error_responses(429, 500))

ReturnUrl = Annotated[
    Text,
    Field(
        pattern=r"^https?://\S+$",
        max_length=2048,
        description="Absolute http(s) URL Stripe sends the learner back to.",
        examples=["https://app.example.com/billing/done"],
    ),
]


class CheckoutRequest(BaseModel):
    """A plan to buy, and where Stripe Checkout sends the learner afterwards."""

    model_config = ConfigDict(extra="forbid")

    plan: Text = Field(max_length=32, description="A plan for sale (GET /api/v1/plans).")
    success_url: ReturnUrl
    cancel_url: ReturnUrl


class CheckoutOut(BaseModel):
    """A Stripe Checkout Session: send the learner to ``url``."""

    url: str
    checkout_session_id: str


class PortalRequest(BaseModel):
    """Where the customer portal sends the learner back to."""

    model_config = ConfigDict(extra="forbid")

    return_url: ReturnUrl


class PortalOut(BaseModel):
    """A customer-portal session: send the learner to ``url``."""

    url: str


class WebhookOut(BaseModel):
    """The answer to Stripe: received (Stripe stops retrying), and what the event did."""

    received: Literal[True] = True
    duplicate: bool = False
    outcome: str = Field(
        description="granted, revoked, linked, stale, unchanged, no_learner, duplicate or "
        "ignored (an event type the server does not act on)."
    )


EVENT = {
    "schema": {
        "type": "object",
        "description": "A Stripe event (https://docs.stripe.com/api/events/object), read as sent.",
        "required": ["id", "type", "created", "data"],
        "properties": {
            "id": {"type": "string", "examples": ["evt_1"]},
            "type": {"type": "string", "examples": ["customer.subscription.updated"]},
            "created": {"type": "integer"},
            "data": {"type": "object", "properties": {"object": {"type": "object"}}},
        },
    }
}
"""The webhook's body in the OpenAPI schema (the route reads the raw bytes it signs)."""


def _billing(ctx: Ctx) -> StripeBilling:
    if ctx.billing is None:
        raise ApiError(503, "billing_unavailable", "billing is not configured (STRIPE_SECRET_KEY)")
    return ctx.billing


async def _account(ctx: Ctx, learner_id: str, key_id: str) -> BillingAccount:
    try:
        if not is_uuid(learner_id):
            raise NotFoundError(learner_id)
        return await ctx.store.billing_account(learner_id, key_id)
    except NotFoundError:
        raise ApiError(404, "learner_not_found", f"no learner {learner_id!r}") from None


@router.post(
    "/learners/{learner_id}/billing/checkout",
    status_code=201,
    response_model=CheckoutOut,
    responses=error_responses(401, 404, 409, 413, 422, 502, 503),
    summary="Start a Stripe Checkout for a plan",
)
async def checkout(learner_id: str, body: CheckoutRequest, key: ApiKey, ctx: Ctx) -> CheckoutOut:
    """A Checkout Session subscribing the learner to ``plan``; send them to its ``url``.

    The learner gets a Stripe Customer on their first checkout. When they have paid, Stripe's
    ``customer.subscription.created`` event puts them on the plan (the webhook below).
    422 ``unknown_plan`` / ``plan_not_for_sale`` (no Stripe price); 409 ``already_subscribed``
    while a subscription holds their plan (switch plans in the portal); 502 ``billing_failed``
    when Stripe fails; 503 ``billing_unavailable`` without ``STRIPE_SECRET_KEY``.
    """
    billing = _billing(ctx)
    account = await _account(ctx, learner_id, key.id)
    try:
        plan = get_plan(body.plan)
    except PlanError as e:
        raise ApiError(422, "unknown_plan", str(e)) from None
    if plan.stripe_price_lookup_key is None:
        raise ApiError(422, "plan_not_for_sale", f"plan {plan.name!r} has no Stripe price")
    if account.plan_source == "stripe":
        raise ApiError(
            409,
            "already_subscribed",
            f"a Stripe subscription holds this learner's plan {account.plan!r}; switch plans "
            "or cancel in the customer portal (POST .../billing/portal)",
        )
    try:
        price = await billing.price_id(plan.stripe_price_lookup_key)
        customer = account.stripe_customer_id
        if customer is None:
            customer = await ctx.store.set_stripe_customer(
                learner_id, await billing.create_customer(learner_id)
            )
        url, session_id = await billing.checkout(
            learner_id=learner_id,
            customer_id=customer,
            plan=plan.name,
            price_id=price,
            success_url=body.success_url,
            cancel_url=body.cancel_url,
        )
    except NoPriceError as e:
        raise ApiError(422, "plan_not_for_sale", str(e)) from None
    except BillingError as e:
        raise ApiError(502, "billing_failed", str(e)) from None
    return CheckoutOut(url=url, checkout_session_id=session_id)


@router.post(
    "/learners/{learner_id}/billing/portal",
    status_code=201,
    response_model=PortalOut,
    responses=error_responses(401, 404, 409, 413, 422, 502, 503),
    summary="Open the Stripe customer portal",
)
async def portal(learner_id: str, body: PortalRequest, key: ApiKey, ctx: Ctx) -> PortalOut:
    """A customer-portal session where the learner changes their card, plan or cancels.

    409 ``no_billing_customer`` for a learner who never started a checkout.
    """
    billing = _billing(ctx)
    account = await _account(ctx, learner_id, key.id)
    if account.stripe_customer_id is None:
        raise ApiError(409, "no_billing_customer", "this learner has never checked out")
    try:
        url = await billing.portal(account.stripe_customer_id, body.return_url)
    except BillingError as e:
        raise ApiError(502, "billing_failed", str(e)) from None
    return PortalOut(url=url)


@router.post(
    "/billing/stripe/webhook",
    response_model=WebhookOut,
    responses=error_responses(400, 413, 503),
    summary="Stripe's webhook (signed; no API key)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": EVENT}}},
)
async def stripe_webhook(
    request: Request,
    ctx: Ctx,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> WebhookOut:
    """Apply a Stripe event to its learner's plan, once per event id.

    400 ``bad_signature`` unless ``Stripe-Signature`` checks out with ``STRIPE_WEBHOOK_SECRET``
    (503 ``billing_unavailable`` without it). A replayed event answers ``duplicate: true`` and
    changes nothing; an event older than the last one applied to the learner is ``stale``.
    """
    secret = ctx.settings.stripe_webhook_secret
    if secret is None or not secret.get_secret_value():
        message = "the Stripe webhook is not configured (STRIPE_WEBHOOK_SECRET)"
        raise ApiError(503, "billing_unavailable", message)
    payload = await request.body()
    try:
        event = verified_event(payload, stripe_signature, secret.get_secret_value())
    except BadSignatureError as e:
        raise ApiError(400, "bad_signature", f"not a signed Stripe event: {e}") from None
    change = change_of(event, ctx.settings.default_plan)
    if change is None:
        return WebhookOut(outcome="ignored")
    outcome = await ctx.store.apply_billing_change(change)
    return WebhookOut(duplicate=outcome == "duplicate", outcome=outcome)
