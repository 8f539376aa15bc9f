"""Billing with Stripe: checkout and portal against a loopback fake; signed webhooks, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api.billing import upgrade_url
from config.plans import get_plan
from config.settings import Settings
from runtime.session_env import session_env
from store.models import BillingEvent
from testkit.api_support import V1, Api, assert_error, make_api
from testkit.providers.base import WireFault
from testkit.providers.stripe_events import StripeEvents, signature, signed
from testkit.providers.stripe_fake import StripeFake

WEBHOOK_SECRET = "whsec_test_0123456789"
URLS = {"success_url": "https://app.example/paid", "cancel_url": "https://app.example/back"}
HOOK = f"{V1}/billing/stripe/webhook"


class Billed:
    """An app with Stripe configured against a fake, the fake, and its event source."""

    def __init__(self, api: Api, fake: StripeFake):
        self.api, self.fake, self.events = api, fake, StripeEvents(fake)
        self.prices = {
            name: fake.add_price(get_plan(name).stripe_price_lookup_key or "")["id"]
            for name in ("ground_school", "checkride_prep", "dpe_live")
        }

    async def checkout(self, learner: str, plan: str = "ground_school") -> dict[str, Any]:
        r = await self.api.client.post(
            f"{V1}/learners/{learner}/billing/checkout",
            json={"plan": plan, **URLS},
            headers=self.api.a,
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        body, headers = signed(event, WEBHOOK_SECRET)
        r = await self.api.client.post(HOOK, content=body, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def subscribe(self, learner: str, plan: str = "ground_school") -> str:
        """Check out and pay: both events delivered; the subscription's id."""
        session = await self.checkout(learner, plan)
        completed, created = self.events.complete_checkout(session["checkout_session_id"])
        assert (await self.deliver(completed))["outcome"] == "linked"
        assert (await self.deliver(created))["outcome"] == "granted"
        return str(created["data"]["object"]["id"])

    async def plan(self, learner: str) -> str:
        r = await self.api.client.get(f"{V1}/learners/{learner}", headers=self.api.a)
        return str(r.json()["plan"])


async def billed_app(url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Billed]:
    async with StripeFake() as fake:
        async for api in make_api(
            url,
            tmp_path,
            stripe_secret_key=settings.pop("stripe_secret_key", fake.secret_key),
            stripe_webhook_secret=WEBHOOK_SECRET,
            stripe_api_base=fake.http_url,
            max_body_bytes=65536,
            **settings,
        ):
            yield Billed(api, fake)


@pytest.fixture
async def billed(db_url: str, tmp_path: Path) -> AsyncIterator[Billed]:
    """On SQLite and PostgreSQL."""
    async for b in billed_app(db_url, tmp_path):
        yield b


@pytest.fixture
async def billed_lite(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Billed]:
    async for b in billed_app(sqlite_url, tmp_path):
        yield b


async def test_checkout_makes_one_customer_and_sends_the_plans_price(billed_lite: Billed) -> None:
    b, fake = billed_lite, billed_lite.fake
    learner = await b.api.learner(target_language="en")
    first = await b.checkout(learner)
    session = fake.sessions[first["checkout_session_id"]]
    assert first["url"] == session["url"] and first["url"].startswith("https://checkout.stripe")
    (customer,) = fake.customers.values()
    assert customer["metadata"] == {"learner_id": learner}
    assert session["mode"] == "subscription" and session["customer"] == customer["id"]
    assert session["line_items"] == [{"price": b.prices["ground_school"], "quantity": "1"}]
    assert session["client_reference_id"] == learner
    assert session["subscription_data"] == {
        "metadata": {"learner_id": learner, "plan": "ground_school"}
    }
    assert (session["success_url"], session["cancel_url"]) == tuple(URLS.values())
    (lookup,) = fake.served("prices")
    assert lookup.query["lookup_keys"] == ["voxtutor_ground_school_monthly"]
    assert lookup.query["active"] == "true"
    assert all(r.headers["authorization"] == f"Bearer {fake.secret_key}" for r in fake.requests)
    # Again, for another plan: the same customer, the price looked up once per plan.
    second = await b.checkout(learner, "dpe_live")
    assert fake.sessions[second["checkout_session_id"]]["customer"] == customer["id"]
    await b.checkout(learner)
    assert len(fake.customers) == 1 and len(fake.served("customers")) == 1
    assert len(fake.served("prices")) == 2
    assert await b.plan(learner) == "free"  # nothing is granted before Stripe says it is paid


async def test_checkout_refusals(billed_lite: Billed) -> None:
    b, client = billed_lite, billed_lite.api.client
    learner = await b.api.learner()
    url = f"{V1}/learners/{learner}/billing/checkout"
    r = await client.post(url, json={"plan": "free", **URLS}, headers=b.api.a)
    assert_error(r, 422, "plan_not_for_sale")
    r = await client.post(url, json={"plan": "platinum", **URLS}, headers=b.api.a)
    assert_error(r, 422, "unknown_plan")
    r = await client.post(url, json={"plan": "dpe_live", **URLS}, headers=b.api.b)
    assert_error(r, 404, "learner_not_found")  # another key's learner
    r = await client.post(
        url, json={"plan": "dpe_live", **URLS, "cancel_url": "javascript:x"}, headers=b.api.a
    )
    assert_error(r, 422, "invalid_request")
    b.fake.inject("checkout", WireFault.PROVIDER_ERROR)
    r = await client.post(url, json={"plan": "dpe_live", **URLS}, headers=b.api.a)
    body = assert_error(r, 502, "billing_failed")
    assert "fake: request refused" in body["message"] and b.fake.secret_key not in r.text
    b.fake.prices.clear()  # no price has the lookup key
    r = await client.post(url, json={"plan": "checkride_prep", **URLS}, headers=b.api.a)
    assert_error(r, 422, "plan_not_for_sale")


async def test_a_wrong_secret_key_is_a_502_that_never_shows_the_key(
    sqlite_url: str, tmp_path: Path
) -> None:
    wrong = "sk_test_wrong_key_that_must_not_leak_9876"
    async for b in billed_app(sqlite_url, tmp_path, stripe_secret_key=wrong):
        r = await b.api.client.post(
            f"{V1}/learners/{await b.api.learner()}/billing/checkout",
            json={"plan": "ground_school", **URLS},
            headers=b.api.a,
        )
        body = assert_error(r, 502, "billing_failed")
        assert "Invalid API Key" in body["message"] and "HTTP 401" in body["message"]
        assert wrong not in r.text and wrong[8:-4] not in r.text


async def test_portal_needs_a_customer_then_opens(billed_lite: Billed) -> None:
    b = billed_lite
    learner = await b.api.learner()
    url = f"{V1}/learners/{learner}/billing/portal"
    back = {"return_url": "https://app.example/account"}
    assert_error(
        await b.api.client.post(url, json=back, headers=b.api.a), 409, "no_billing_customer"
    )
    await b.checkout(learner)
    r = await b.api.client.post(url, json=back, headers=b.api.a)
    assert r.status_code == 201, r.text
    (portal,) = b.fake.portal_sessions
    assert r.json() == {"url": portal["url"]}
    assert portal["customer"] in b.fake.customers and portal["return_url"] == back["return_url"]
    assert_error(await b.api.client.post(url, json=back, headers=b.api.b), 404)


async def test_without_stripe_the_billing_routes_are_503(lite: Api) -> None:
    learner = await lite.learner()
    for path, body in (
        ("checkout", {"plan": "ground_school", **URLS}),
        ("portal", {"return_url": "https://app.example/"}),
    ):
        r = await lite.client.post(
            f"{V1}/learners/{learner}/billing/{path}", json=body, headers=lite.a
        )
        assert_error(r, 503, "billing_unavailable")
    assert_error(await lite.client.post(HOOK, content=b"{}"), 503, "billing_unavailable")


async def test_a_bad_signature_is_400_and_changes_nothing(billed_lite: Billed) -> None:
    b = billed_lite
    learner = await b.api.learner()
    session = await b.checkout(learner)
    _, created = b.events.complete_checkout(session["checkout_session_id"])
    body, headers = signed(created, WEBHOOK_SECRET)
    forged = body.replace(b'"ground_school"', b'"dpe_live"')
    old = signature(body, WEBHOOK_SECRET, timestamp=1_600_000_000)
    for content, sig in (
        (body, None),  # no header
        (body, signature(body, "whsec_someone_else")),
        (forged, headers["Stripe-Signature"]),  # the body changed after signing
        (body, old),  # a captured delivery replayed years later
        (body, "t=abc,v1=zz"),
    ):
        h = {"Stripe-Signature": sig} if sig is not None else {}
        assert_error(
            await b.api.client.post(HOOK, content=content, headers=h), 400, "bad_signature"
        )
    assert await b.plan(learner) == "free"
    async with b.api.store.engine.connect() as conn:
        assert (await conn.execute(select(BillingEvent))).all() == []


@pytest.fixture
def cloud_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic")


async def test_a_paid_subscription_entitles_the_learner_and_holds_the_plan(
    billed: Billed, cloud_keys: None
) -> None:
    b, client = billed, billed.api.client
    learner = await b.api.learner(target_language="en")
    start = {"persona": "aviation-examiner", "tier": "ground_school", "transport": "webrtc"}
    r = await client.post(f"{V1}/sessions", json={**start, "learner_id": learner}, headers=b.api.a)
    assert r.status_code == 403 and r.json()["error"] == "tier_not_entitled"
    sub = await b.subscribe(learner)
    assert await b.plan(learner) == "ground_school"
    r = await client.post(f"{V1}/sessions", json={**start, "learner_id": learner}, headers=b.api.a)
    assert r.status_code == 201, r.text
    await client.delete(f"{V1}/sessions/{r.json()['session_id']}", headers=b.api.a)
    # The subscription holds the plan: no PATCH changes it, no second checkout, no erasure.
    patch = await client.patch(f"{V1}/learners/{learner}", json={"plan": "free"}, headers=b.api.a)
    assert_error(patch, 409, "plan_managed_by_billing")
    r = await client.post(
        f"{V1}/learners/{learner}/billing/checkout",
        json={"plan": "dpe_live", **URLS},
        headers=b.api.a,
    )
    assert_error(r, 409, "already_subscribed")
    # A plan switched in the portal arrives as an update with the new price.
    switched = b.events.subscription(sub, lookup_key="voxtutor_dpe_live_monthly")
    assert (await b.deliver(switched))["outcome"] == "granted"
    assert await b.plan(learner) == "dpe_live"
    assert_error(
        await client.delete(f"{V1}/learners/{learner}", headers=b.api.a), 409, "subscription_active"
    )
    export = (await client.get(f"{V1}/learners/{learner}/export", headers=b.api.a)).json()
    assert export["billing"]["plan_source"] == "stripe"
    assert export["billing"]["stripe_subscription_id"] == sub
    outcomes = [e["outcome"] for e in export["billing"]["events"]]  # in Stripe's order
    assert outcomes == ["granted", "linked", "granted"]


async def test_a_replayed_event_is_applied_once_even_when_delivered_twice_at_once(
    billed: Billed,
) -> None:
    b = billed
    learner = await b.api.learner()
    sub = await b.subscribe(learner, "checkride_prep")
    renewed = b.events.subscription(sub, status="active")
    first, second = await asyncio.gather(b.deliver(renewed), b.deliver(renewed))
    assert sorted([first["outcome"], second["outcome"]]) == ["duplicate", "granted"]
    assert {first["duplicate"], second["duplicate"]} == {True, False}
    deleted = b.events.subscription(sub, "customer.subscription.deleted")
    assert (await b.deliver(deleted))["outcome"] == "revoked"
    # Stripe redelivers the earlier update after the deletion: it must not restore the plan.
    assert await b.deliver(renewed) == {"received": True, "duplicate": True, "outcome": "duplicate"}
    assert await b.plan(learner) == "free"
    async with b.api.store.engine.connect() as conn:
        ids = [r.event_id for r in (await conn.execute(select(BillingEvent.event_id))).all()]
    assert sorted(ids) == sorted(set(ids)) and renewed["id"] in ids and len(ids) == 4


@pytest.mark.parametrize("how", ["deleted", "payment_failed", "unpaid"])
async def test_the_end_of_a_subscription_revokes_to_the_default_plan(
    billed_lite: Billed, how: str
) -> None:
    b = billed_lite
    learner = await b.api.learner()
    sub = await b.subscribe(learner, "dpe_live")
    event = {
        "deleted": lambda: b.events.subscription(sub, "customer.subscription.deleted"),
        "payment_failed": lambda: b.events.invoice_payment_failed(sub),
        "unpaid": lambda: b.events.subscription(sub, status="unpaid"),
    }[how]()
    assert (await b.deliver(event))["outcome"] == "revoked"
    assert await b.plan(learner) == "free"
    # Stripe no longer holds it: the key may set a plan again, and erase the learner.
    r = await b.api.client.patch(
        f"{V1}/learners/{learner}", json={"plan": "ground_school"}, headers=b.api.a
    )
    assert r.status_code == 200 and r.json()["plan"] == "ground_school"
    assert (
        await b.api.client.delete(f"{V1}/learners/{learner}", headers=b.api.a)
    ).status_code == 204
    async with b.api.store.engine.connect() as conn:
        rows = (await conn.execute(select(BillingEvent.type, BillingEvent.learner_id))).all()
    assert len(rows) == 3 and all(learner_id is None for _, learner_id in rows)
    # A late event about the erased learner's subscription finds no one.
    late = b.events.subscription(sub, status="active")
    assert (await b.deliver(late))["outcome"] == "no_learner"


async def test_an_older_event_does_not_override_a_newer_one(billed_lite: Billed) -> None:
    b = billed_lite
    learner = await b.api.learner()
    sub = await b.subscribe(learner, "ground_school")
    t = b.events.clock + 100
    upgrade = b.events.subscription(
        sub, status="active", lookup_key="voxtutor_dpe_live_monthly", created=t
    )
    lapsed = b.events.subscription(sub, status="past_due", created=t + 60)
    # Delivered out of order: the lapse (newer) first, the upgrade (older) after it.
    assert (await b.deliver(lapsed))["outcome"] == "revoked"
    assert (await b.deliver(upgrade))["outcome"] == "stale"
    assert await b.plan(learner) == "free"
    recovered = b.events.subscription(sub, status="active", created=t + 120)
    assert (await b.deliver(recovered))["outcome"] == "granted"
    assert await b.plan(learner) == "dpe_live"


async def test_events_the_server_does_not_act_on_are_answered_and_not_stored(
    billed_lite: Billed,
) -> None:
    b = billed_lite
    other = b.events.event("charge.succeeded", {"id": "ch_1", "object": "charge"})
    assert await b.deliver(other) == {"received": True, "duplicate": False, "outcome": "ignored"}
    stranger = b.events.event(
        "customer.subscription.updated",
        {
            "id": "sub_x",
            "object": "subscription",
            "customer": "cus_nobody",
            "status": "active",
            "metadata": {"plan": "dpe_live"},
            "items": {"data": []},
        },
    )
    assert (await b.deliver(stranger))["outcome"] == "no_learner"


async def test_upgrade_url_of_a_402_points_at_the_learners_checkout(billed_lite: Billed) -> None:
    b = billed_lite
    learner = await b.api.learner(plan="ground_school")
    limit = get_plan("ground_school").sessions_per_month
    assert limit is not None
    for _ in range(limit):
        await b.api.store.create_session(learner, b.api.key_a_id, "german-tutor", "local", "webrtc")
    start = {"persona": "german-tutor", "tier": "local", "transport": "webrtc"}
    r = await b.api.client.post(
        f"{V1}/sessions", json={**start, "learner_id": learner}, headers=b.api.a
    )
    assert r.status_code == 402, r.text
    body = r.json()
    assert (body["error"], body["scope"]) == ("quota_exceeded", "plan")
    assert body["upgrade_url"] == f"/api/v1/learners/{learner}/billing/checkout"
    # The route it names exists and sells the next plan.
    r = await b.api.client.post(
        body["upgrade_url"], json={"plan": "checkride_prep", **URLS}, headers=b.api.a
    )
    assert r.status_code == 201, r.text


def test_upgrade_url_prefers_the_operators_page_and_falls_back_to_the_plans() -> None:
    lid = "0b0c4a4e-2f2e-4a7e-9d43-3d2c4b8d1f00"
    assert upgrade_url(Settings(), lid) == "/api/v1/plans"
    assert upgrade_url(Settings(stripe_secret_key="sk_test_x"), lid).endswith(
        f"/learners/{lid}/billing/checkout"
    )
    page = "https://tutor.example.com/pricing"
    assert upgrade_url(Settings(upgrade_url=page, stripe_secret_key="sk_test_x"), lid) == page


def test_session_processes_never_get_stripes_secrets() -> None:
    server = {
        "PATH": "/bin",
        "STRIPE_SECRET_KEY": "sk_live_1",
        "STRIPE_WEBHOOK_SECRET": "whsec_1",
        "VOXTUTOR_STRIPE_SECRET_KEY": "sk_live_2",
        "VOXTUTOR_STRIPE_WEBHOOK_SECRET": "whsec_2",
        "VOXTUTOR_STRIPE_API_BASE": "https://api.stripe.com",
    }
    for kind in ("local", "cloud", "phone"):
        env = session_env(kind, server, dotenv=None)
        assert not {v for v in env.values() if v.startswith(("sk_", "whsec_"))}, kind


async def test_stripe_requests_do_not_block_the_event_loop(billed_lite: Billed) -> None:
    b = billed_lite
    learner = await b.api.learner()
    b.fake.hang_s = 0.5
    b.fake.inject("checkout", WireFault.HANG)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1

    paying = asyncio.create_task(b.checkout(learner))
    await tick()  # 0.2 s of 10 ms sleeps while Stripe holds the request
    assert ticks == 20 and not paying.done()
    await paying
