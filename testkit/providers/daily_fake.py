"""Loopback fake of Daily's REST API: rooms and meeting tokens.

Follows Daily's REST API reference (https://docs.daily.co/reference/rest-api):

- Authentication (https://docs.daily.co/docs/rest-api/authentication): ``Authorization: Bearer
  KEY``; a missing or malformed header answers 400 ``authorization-header-error``, a wrong key
  401 ``authentication-error``.
- Errors (https://docs.daily.co/docs/rest-api/errors): ``{"error": type, "info": text}`` with
  types ``invalid-request-error`` (400), ``not-found`` (404), ``rate-limit-error`` (429),
  ``server-error`` (5xx).
- ``POST /v1/rooms`` (https://docs.daily.co/reference/rest-api/rooms/create-room) with
  ``{name?, privacy?, properties?}`` answers the room object ``{id, name, api_created, privacy,
  url, created_at, config}``; names match ``[A-Za-z0-9_-]{1,128}`` (random when absent), a
  taken name is a 400, ``privacy`` defaults to ``public``; ``config`` echoes the properties.
- ``GET /v1/rooms/{name}`` answers the room object; ``DELETE /v1/rooms/{name}`` answers
  ``{"deleted": true, "name"}``. An unknown room is a 404; an expired one (``exp`` passed) is
  treated as deleted, as Daily does.
- ``POST /v1/meeting-tokens`` (https://docs.daily.co/reference/rest-api/meeting-tokens) with
  ``{properties: {room_name, exp, is_owner, user_name, ...}}`` answers ``{"token"}``: an HS256
  JWT signed with the API key whose payload is the properties (Daily signs tokens with the
  domain's key; its payload abbreviates the names, the fake does not).

- SIP dial-in (https://docs.daily.co/guides/products/dial-in-dial-out/sip): a room created with
  ``properties.sip`` (``sip_mode: "dial-in"``, ``display_name``, ``num_endpoints`` 1-5, the
  default ``max_sip_pstn_sessions_per_room``) gets the read-only ``config.sip_uri`` ``{endpoint:
  "sip:<digits>@<domain>.sip.daily.co"}`` (plus ``extra_endpoints`` beyond one).
- ``POST /v1/dialin/pinlessCallUpdate`` (https://docs.daily.co/reference/rest-api/dialin/
  pinless-call-update) with ``{callId, callDomain, sipUri}``: a missing field is a 400; a call
  not on hold (:meth:`DailyFake.hold_call`) or a ``sipUri`` that is no live room's endpoint
  (with or without the ``sip:`` scheme) is a 404; else 200 ``{"status": "success"}``, the call
  leaves hold and the update is kept in :attr:`DailyFake.call_updates`.

Recorded: every request (:attr:`FakeProvider.requests`, route keys below), the rooms alive
(:attr:`DailyFake.rooms`), the names deleted (:attr:`DailyFake.deleted`) and every token issued
with its properties (:attr:`DailyFake.tokens`).

Faults (route keys ``"rooms"`` for ``POST /rooms``, ``"get_room"``, ``"delete_room"``,
``"tokens"``, ``"call_update"``), checked before authentication and before any effect:
``HTTP_5XX`` answers 500 ``server-error``, ``HTTP_429`` 429 ``rate-limit-error``,
``PROVIDER_ERROR`` 400 ``invalid-request-error``; ``HANG`` holds the request for ``hang_s``
and, if the client is still there, then serves it (a client that gave up leaves nothing
behind); ``GARBAGE`` answers 200 with an HTML page; ``DISCONNECT`` drops the connection after
part of a JSON body.

Extending: add routes on ``self.app`` that start with :meth:`DailyFake.guard`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from testkit.providers.base import CLIENT_GONE, AbortConnection, FakeProvider, WireFault

ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""Daily's room-name rule (create-room: letters, digits, ``-`` and ``_``; at most 128)."""


def daily_error(status: int, error: str, info: str) -> JSONResponse:
    """Daily's error body ``{"error": type, "info": text}`` with ``status``."""
    return JSONResponse({"error": error, "info": info}, status_code=status)


async def body_of(request: Request) -> Any:
    """The request's JSON body, its text if it is not JSON, or ``None`` if empty."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DailyFake(FakeProvider):
    """Daily's REST API on loopback (``async with DailyFake() as daily: ...``).

    Args:
        api_key: The only key accepted (``Authorization: Bearer <api_key>``).
        domain: The Daily domain rooms live on: ``https://<domain>.daily.co/<name>``.

    Attributes:
        rooms: Rooms alive, by name: the room objects as served.
        deleted: Names of the rooms deleted through ``DELETE /rooms/{name}``, in order.
        tokens: Every meeting token issued → its ``properties``.
        held_calls: Calls on hold waiting for ``pinlessCallUpdate``: ``callId`` → ``callDomain``.
        call_updates: Every accepted ``pinlessCallUpdate`` body, in order.
    """

    name = "daily"

    def __init__(self, api_key: str = "daily-fake-key", domain: str = "voxtutor-fake"):
        super().__init__()
        self.api_key = api_key
        self.domain = domain
        self.rooms: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.tokens: dict[str, dict[str, Any]] = {}
        self.held_calls: dict[str, str] = {}
        self.call_updates: list[dict[str, Any]] = []
        self.app.post("/v1/rooms")(self._create_room)
        self.app.post("/v1/dialin/pinlessCallUpdate")(self._call_update)
        self.app.get("/v1/rooms/{name}")(self._get_room)
        self.app.delete("/v1/rooms/{name}")(self._delete_room)
        self.app.post("/v1/meeting-tokens")(self._create_token)

    @property
    def api_url(self) -> str:
        """The REST base for ``settings.daily_api_url``: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.http_url}/v1"

    def hold_call(self, call_id: str, call_domain: str) -> None:
        """Put a call on hold, as Daily does before calling the pinless webhook."""
        self.held_calls[call_id] = call_domain

    def room_object(self, name: str, privacy: str, config: dict[str, Any]) -> dict[str, Any]:
        """A new room object as ``POST /rooms`` serves it (subclasses add fields)."""
        if isinstance(config.get("sip"), dict):
            count = config["sip"].get("num_endpoints", 1)
            endpoints = [
                f"sip:{secrets.randbelow(10**9):09d}@{self.domain}.sip.daily.co"
                for _ in range(count)
            ]
            config = {**config, "sip_uri": {"endpoint": endpoints[0]}}
            if count > 1:
                config["sip_uri"]["extra_endpoints"] = endpoints[1:]
        return {
            "id": str(uuid.uuid4()),
            "name": name,
            "api_created": True,
            "privacy": privacy,
            "url": f"https://{self.domain}.daily.co/{name}",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "config": config,
        }

    def live_room(self, name: str) -> dict[str, Any] | None:
        """The room ``name`` unless missing or expired (an expired room is dropped)."""
        room = self.rooms.get(name)
        exp = room["config"].get("exp") if room else None
        if room is not None and isinstance(exp, int | float) and exp <= time.time():
            del self.rooms[name]
            return None
        return room

    async def guard(self, request: Request, route: str) -> Response | None:
        """Record the request, apply a queued fault, check the key.

        Returns:
            The response to send instead of serving the request, or ``None`` to serve it.
        """
        self.record(route, body=await body_of(request), headers=dict(request.headers))
        fault = self.take_fault(route)
        if fault is not None:
            if fault.fault is WireFault.HTTP_5XX:
                return daily_error(500, "server-error", "fake: server error")
            if fault.fault is WireFault.HTTP_429:
                return daily_error(429, "rate-limit-error", "fake: too many requests")
            if fault.fault is WireFault.PROVIDER_ERROR:
                return daily_error(400, "invalid-request-error", "fake: request refused")
            if fault.fault is WireFault.GARBAGE:
                return Response("<html><body>502 Bad Gateway</body></html>", 200)
            if fault.fault is WireFault.DISCONNECT:
                return StreamingResponse(_truncated(), media_type="application/json")
            if fault.fault is WireFault.HANG and not await self.hold(request):
                return Response(status_code=CLIENT_GONE)
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return daily_error(400, "authorization-header-error", "bad Authorization header")
        if not hmac.compare_digest(header[7:].strip(), self.api_key):
            return daily_error(401, "authentication-error", "invalid API key")
        return None

    async def _create_room(self, request: Request) -> Response:
        if refusal := await self.guard(request, "rooms"):
            return refusal
        body = await body_of(request) or {}
        if not isinstance(body, dict):
            return daily_error(400, "json-parsing-error", "body is not a JSON object")
        name = body.get("name") or secrets.token_urlsafe(15).replace("_", "x").replace("-", "y")
        if not isinstance(name, str) or not ROOM_NAME.match(name):
            return daily_error(400, "invalid-request-error", f"invalid room name {name!r}")
        if self.live_room(name) is not None:
            return daily_error(400, "invalid-request-error", f"a room named {name} already exists")
        privacy = body.get("privacy", "public")
        if privacy not in ("public", "private"):
            return daily_error(400, "invalid-request-error", f"invalid privacy {privacy!r}")
        config = body.get("properties") or {}
        if not isinstance(config, dict):
            return daily_error(400, "invalid-request-error", "properties must be an object")
        for key in ("exp", "nbf"):  # Pipecat sends time.time() + n (a float); Daily takes it
            if key in config and (type(config[key]) not in (int, float) or config[key] < 1):
                return daily_error(400, "invalid-request-error", f"{key} must be a timestamp")
        size = config.get("max_participants", 1)
        if type(size) is not int or not 1 <= size <= 200:  # 200: the documented default cap
            return daily_error(400, "invalid-request-error", "max_participants must be 1-200")
        if "sip" in config and (refusal := _sip_refusal(config["sip"])):
            return refusal
        room = self.room_object(name, privacy, config)
        self.rooms[name] = room
        return JSONResponse(room)

    async def _call_update(self, request: Request) -> Response:
        if refusal := await self.guard(request, "call_update"):
            return refusal
        body = await body_of(request)
        fields = ("callId", "callDomain", "sipUri")
        if not isinstance(body, dict) or not all(
            isinstance(body.get(f), str) and body[f] for f in fields
        ):
            return daily_error(400, "invalid-request-error", "Missing fields")
        call_id, uri = body["callId"], body["sipUri"].removeprefix("sip:")
        if self.held_calls.get(call_id) != body["callDomain"]:
            return daily_error(404, "not-found", "Call Forwarding Failed: no such call on hold")
        endpoints = {
            e.removeprefix("sip:")
            for name in list(self.rooms)
            if (room := self.live_room(name)) is not None
            for e in _endpoints(room["config"].get("sip_uri"))
        }
        if uri not in endpoints:
            return daily_error(404, "not-found", "Call Forwarding Failed: unknown sipUri")
        del self.held_calls[call_id]
        self.call_updates.append(body)
        return JSONResponse({"status": "success"})

    async def _get_room(self, name: str, request: Request) -> Response:
        if refusal := await self.guard(request, "get_room"):
            return refusal
        room = self.live_room(name)
        if room is None:
            return daily_error(404, "not-found", f"room {name} not found")
        return JSONResponse(room)

    async def _delete_room(self, name: str, request: Request) -> Response:
        if refusal := await self.guard(request, "delete_room"):
            return refusal
        if self.live_room(name) is None:
            return daily_error(404, "not-found", f"room {name} not found")
        del self.rooms[name]
        self.deleted.append(name)
        return JSONResponse({"deleted": True, "name": name})

    async def _create_token(self, request: Request) -> Response:
        if refusal := await self.guard(request, "tokens"):
            return refusal
        body = await body_of(request)
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict):
            return daily_error(400, "invalid-request-error", "properties must be an object")
        if "exp" in properties and type(properties["exp"]) not in (int, float):
            return daily_error(400, "invalid-request-error", "exp must be a timestamp")
        if "is_owner" in properties and not isinstance(properties["is_owner"], bool):
            return daily_error(400, "invalid-request-error", "is_owner must be a boolean")
        token = self._sign({**properties, "iat": int(time.time())})
        self.tokens[token] = properties
        return JSONResponse({"token": token})

    def _sign(self, payload: dict[str, Any]) -> str:
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        mac = hmac.new(self.api_key.encode(), f"{head}.{body}".encode(), hashlib.sha256)
        return f"{head}.{body}.{_b64(mac.digest())}"


def _sip_refusal(sip: Any) -> Response | None:
    """A 400 for a ``sip`` room property Daily would refuse, else ``None``."""
    if not isinstance(sip, dict) or sip.get("sip_mode") != "dial-in":
        return daily_error(400, "invalid-request-error", "sip.sip_mode must be 'dial-in'")
    if not isinstance(sip.get("display_name"), str) or not sip["display_name"]:
        return daily_error(400, "invalid-request-error", "sip.display_name must be a string")
    count = sip.get("num_endpoints", 1)
    if type(count) is not int or not 1 <= count <= 5:
        return daily_error(400, "invalid-request-error", "sip.num_endpoints must be 1-5")
    return None


def _endpoints(sip_uri: Any) -> list[str]:
    if not isinstance(sip_uri, dict):
        return []
    return [sip_uri["endpoint"], *sip_uri.get("extra_endpoints", [])]


async def _truncated() -> AsyncIterator[bytes]:
    yield b'{"id": "'
    raise AbortConnection
