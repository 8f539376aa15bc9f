"""Loopback fake of the Stripe API: prices, customers, Checkout and customer-portal sessions.

Follows Stripe's API reference (https://docs.stripe.com/api), as the official ``stripe``
library speaks it (``VOXTUTOR_STRIPE_API_BASE`` points the library here):

- Requests (https://docs.stripe.com/api/request_ids, /api/authentication): ``Authorization:
  Bearer <secret key>``; POST bodies form-encoded with bracketed keys (``line_items[0][price]``,
  ``metadata[learner_id]``), list query parameters as ``lookup_keys[0]=…`` (the library) or
  ``lookup_keys[]=…``. Every response has a ``Request-Id``; a POST repeated with the same
  ``Idempotency-Key`` is answered with the first response and ``Idempotent-Replayed: true``
  (https://docs.stripe.com/api/idempotent_requests).
- Errors (https://docs.stripe.com/api/errors): ``{"error": {"type", "message", "code"?,
  "param"?}}``; no or a wrong key → 401 ``invalid_request_error`` (the key masked as Stripe
  does, ``sk_test_****abcd``); an unknown id → 400 ``resource_missing``.
- ``GET /v1/prices`` (https://docs.stripe.com/api/prices/list) with ``lookup_keys``,
  ``active``, ``limit`` → a list object of the prices added with :meth:`StripeFake.add_price`.
- ``POST /v1/customers`` (https://docs.stripe.com/api/customers/create) → a customer.
- ``POST /v1/checkout/sessions`` (https://docs.stripe.com/api/checkout/sessions/create):
  ``mode`` (``subscription`` needs a recurring price), ``line_items`` of known prices,
  ``customer`` (must exist), ``success_url``, ``cancel_url``, ``client_reference_id``,
  ``metadata``, ``subscription_data[metadata]`` → an ``open`` session with a ``url``.
- ``POST /v1/billing_portal/sessions`` (https://docs.stripe.com/api/customer_portal/sessions/
  create): ``customer`` (must exist), ``return_url`` → a session with a ``url``.

Recorded: every request (:attr:`FakeProvider.requests`; route keys ``prices``, ``customers``,
``checkout``, ``portal``) with its decoded form or query and headers; the objects made
(:attr:`StripeFake.customers`, :attr:`StripeFake.sessions`). The events Stripe would send when
a session is paid and its subscription changes come from :mod:`testkit.providers.stripe_events`.

Faults (per route key), before authentication and any effect: ``HTTP_5XX`` → 500
``api_error`` (the library retries it), ``HTTP_429`` → 429 ``rate_limit_error``,
``PROVIDER_ERROR`` → 400 ``invalid_request_error``, ``GARBAGE`` → 200 with an HTML page,
``HANG`` holds the request for ``hang_s``.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from testkit.providers.base import CLIENT_GONE, FakeProvider, WireFault


def new_id(prefix: str) -> str:
    """A Stripe-looking id: ``prefix`` + ``_`` + 24 random characters."""
    return f"{prefix}_{secrets.token_hex(12)}"


def stripe_error(
    status: int, type_: str, message: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    """Stripe's error body ``{"error": {type, message, code?, param?}}`` with ``status``."""
    error: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    return JSONResponse({"error": error}, status_code=status)


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracketed form encoding as nested data.

    ``a[b][0][c]=x`` → ``{"a": {"b": [{"c": "x"}]}}``; ``k[]=x`` appends to a list. Objects
    whose keys are all indices become lists, in index order.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + (rest[:-1].split("][") if rest else [])
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # k[]: the next index
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


class StripeFake(FakeProvider):
    """Stripe's API on loopback (``async with StripeFake() as stripe: ...``).

    Args:
        secret_key: The only key accepted (``Authorization: Bearer <secret_key>``).

    Attributes:
        prices: Prices by id (:meth:`add_price`).
        customers: Customers made, by id.
        sessions: Checkout Sessions made, by id, with the ``subscription_data`` they were
            given (under ``subscription_data``, which Stripe does not echo).
        portal_sessions: Customer-portal sessions made, in order.
    """

    name = "stripe"

    def __init__(self, secret_key: str = "sk_test_fake_0123456789abcdef"):
        super().__init__()
        self.secret_key = secret_key
        self.prices: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.portal_sessions: list[dict[str, Any]] = []
        self._replays: dict[str, bytes] = {}
        self.app.get("/v1/prices")(self._list_prices)
        self.app.post("/v1/customers")(self._create_customer)
        self.app.post("/v1/checkout/sessions")(self._create_session)
        self.app.post("/v1/billing_portal/sessions")(self._create_portal)

    def add_price(
        self,
        lookup_key: str,
        unit_amount: int = 999,
        *,
        active: bool = True,
        recurring: bool = True,
    ) -> dict[str, Any]:
        """Add a price (monthly in USD unless ``recurring`` is false); return it."""
        price: dict[str, Any] = {
            "id": new_id("price"),
            "object": "price",
            "active": active,
            "currency": "usd",
            "lookup_key": lookup_key,
            "product": new_id("prod"),
            "recurring": {"interval": "month", "interval_count": 1} if recurring else None,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": unit_amount,
            "livemode": False,
        }
        self.prices[price["id"]] = price
        return price

    async def guard(self, request: Request, route: str, data: dict[str, Any]) -> Response | None:
        """Record the request, apply a queued fault, check the key.

        Returns:
            The response to send instead of serving the request, or ``None`` to serve it.
        """
        self.record(route, body=data, headers=dict(request.headers), query=data)
        fault = self.take_fault(route)
        if fault is not None:
            if fault.fault is WireFault.HTTP_5XX:
                return stripe_error(500, "api_error", "fake: something went wrong on Stripe's end")
            if fault.fault is WireFault.HTTP_429:
                return stripe_error(429, "rate_limit_error", "fake: too many requests")
            if fault.fault is WireFault.PROVIDER_ERROR:
                return stripe_error(400, "invalid_request_error", "fake: request refused")
            if fault.fault is WireFault.GARBAGE:
                return Response("<html><body>502 Bad Gateway</body></html>", 200)
            if fault.fault is WireFault.HANG and not await self.hold(request):
                return Response(status_code=CLIENT_GONE)
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return stripe_error(
                401,
                "invalid_request_error",
                "You did not provide an API key. Provide it as 'Authorization: Bearer <key>'.",
            )
        given = header[7:].strip()
        if not hmac.compare_digest(given, self.secret_key):
            masked = f"{given[:8]}****{given[-4:]}" if len(given) > 12 else "****"
            return stripe_error(401, "invalid_request_error", f"Invalid API Key provided: {masked}")
        return None

    async def _form(self, request: Request) -> dict[str, Any]:
        raw = (await request.body()).decode()
        return decode_form(parse_qsl(raw, keep_blank_values=True))

    def _answer(self, request: Request, obj: dict[str, Any]) -> Response:
        """200 with ``obj``; a POST's ``Idempotency-Key`` replays the first answer."""
        body = json.dumps(obj).encode()
        key = request.headers.get("idempotency-key")
        headers = {"Request-Id": new_id("req")}
        if request.method == "POST" and key:
            if key in self._replays:
                body = self._replays[key]
                headers["Idempotent-Replayed"] = "true"
            else:
                self._replays[key] = body
        return Response(body, 200, headers=headers, media_type="application/json")

    async def _list_prices(self, request: Request) -> Response:
        query = decode_form(list(request.query_params.multi_items()))
        if refusal := await self.guard(request, "prices", query):
            return refusal
        keys = query.get("lookup_keys")
        active = query.get("active")
        limit = int(query.get("limit", 10))
        found = [
            p
            for p in self.prices.values()
            if (keys is None or p["lookup_key"] in keys)
            and (active is None or p["active"] == (active == "true"))
        ]
        listing = {"object": "list", "url": "/v1/prices", "has_more": len(found) > limit}
        return self._answer(request, {**listing, "data": found[:limit]})

    async def _create_customer(self, request: Request) -> Response:
        form = await self._form(request)
        if refusal := await self.guard(request, "customers", form):
            return refusal
        if key := request.headers.get("idempotency-key"):
            if key in self._replays:
                return self._answer(request, {})
        customer: dict[str, Any] = {
            "id": new_id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "email": form.get("email"),
            "name": form.get("name"),
            "metadata": form.get("metadata") or {},
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return self._answer(request, customer)

    async def _create_session(self, request: Request) -> Response:
        form = await self._form(request)
        if refusal := await self.guard(request, "checkout", form):
            return refusal
        mode = form.get("mode")
        if mode not in ("payment", "setup", "subscription"):
            return stripe_error(400, "invalid_request_error", "Invalid mode", param="mode")
        customer = form.get("customer")
        if customer is not None and customer not in self.customers:
            return _missing("customer", customer)
        items = form.get("line_items") or []
        if not isinstance(items, list) or not items:
            return stripe_error(
                400, "invalid_request_error", "line_items is required", param="line_items"
            )
        for i, item in enumerate(items):
            price = self.prices.get(str(item.get("price", "")))
            if price is None or not price["active"]:
                return _missing("price", item.get("price"), f"line_items[{i}][price]")
            if mode == "subscription" and price["recurring"] is None:
                return stripe_error(
                    400,
                    "invalid_request_error",
                    "You must provide at least one recurring price in `subscription` mode",
                )
        sid = new_id("cs_test")
        session = {
            "id": sid,
            "object": "checkout.session",
            "mode": mode,
            "status": "open",
            "customer": customer,
            "client_reference_id": form.get("client_reference_id"),
            "metadata": form.get("metadata") or {},
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
            "subscription": None,
            "url": f"https://checkout.stripe.com/c/pay/{sid}",
            "livemode": False,
        }
        self.sessions[sid] = {
            **session,
            "line_items": items,
            "subscription_data": form.get("subscription_data") or {},
        }
        return self._answer(request, session)

    async def _create_portal(self, request: Request) -> Response:
        form = await self._form(request)
        if refusal := await self.guard(request, "portal", form):
            return refusal
        customer = str(form.get("customer"))
        if customer not in self.customers:
            return _missing("customer", customer)
        session = {
            "id": new_id("bps"),
            "object": "billing_portal.session",
            "customer": customer,
            "return_url": form.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/test_{secrets.token_hex(8)}",
            "livemode": False,
        }
        self.portal_sessions.append(session)
        return self._answer(request, session)


def _missing(what: str, given: Any, param: str | None = None) -> JSONResponse:
    return stripe_error(
        400,
        "invalid_request_error",
        f"No such {what}: '{given}'",
        code="resource_missing",
        param=param or what,
    )
