"""``POST /api/v1/dialin/daily``: phone calls through Daily's pinless dial-in (PSTN or SIP).

Set this URL as the ``room_creation_api`` of the Daily domain's ``pinless_dialin`` config
(https://docs.daily.co/guides/products/dial-in-dial-out/dialin-pinless). A call then goes:

1. Daily puts the caller on hold and POSTs ``{callId, callDomain, To, From, sipHeaders}``.
2. This route checks the signature, finds the caller as the Twilio/Telnyx webhooks do
   (:mod:`api.phone_calls`: learner by ``From``, else a guest learner; persona and tier from
   the dialled number's ``phone_lines`` entry), creates the session, a SIP-enabled Daily room
   (:func:`transports.daily.create_dialin_room`), spawns the bot with the call's ``callId`` and
   ``callDomain``, and answers 200 ``{status, session_id}``.
3. The bot's ``DailyTransport`` joins the room; when Daily reports the room's SIP endpoint
   ready, it sends ``pinlessCallUpdate`` and Daily moves the caller into the room
   (:func:`transports.daily.daily_bot_transport`). The session ends when the caller hangs up;
   its room is deleted then.

There is no keypad menu: the call is on hold until the room is ready, so an unknown caller
gets the line's persona, else the first ``phone_menu`` persona; a known learner without a line
persona gets the menu persona that speaks their target language.

Signature (Daily's docs show it only as a snippet; this follows Daily's pinless guide as
implemented in Pipecat's examples): ``X-Pinless-Signature`` is the base64 HMAC-SHA256 of
``"<X-Pinless-Timestamp>.<raw body>"`` keyed with the base64-decoded ``hmac`` secret of the
``pinless_dialin`` config (``DAILY_DIALIN_HMAC``). A hex digest is accepted too, and the
timestamp may be in seconds or milliseconds (both seen in the wild); one more than
:data:`PINLESS_TOLERANCE_S` away from now is refused as a replay, and a ``callId`` already
answered gets the same session back instead of a second one.

Daily checks the URL when the config is saved with a body that is not a call (``{"test":
"test"}`` or just ``{"To": …}``), before the operator knows the secret Daily generated: such
a body is answered 200 without a signature and starts nothing. A refused call (busy, quota,
Daily failing) answers the error; Daily then plays the config's timeout message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, cast

from fastapi import APIRouter, Request
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.deps import AppContext, Ctx
from api.errors import ApiError, ErrorBody, error_responses
from api.launch import LaunchRequest, check_tier, find_persona, launch
from api.phone_auth import SignatureError
from api.phone_calls import (
    IncomingCall,
    caller_learner,
    menu_personas,
    persona_for,
    phone_calls,
    shared_state,
    spoken_name,
)
from config.settings import PhoneLine
from runtime.cluster import ephemeral
from runtime.cluster.bus import EPHEMERAL_TTL_S
from runtime.cluster.ephemeral import Ephemeral
from store import LearnerInfo
from transports.daily import (
    DAILY_KEY_ENV,
    DialinRoom,
    create_dialin_room,
    daily_api_key,
)

router = APIRouter(tags=["phone"], responses=error_responses(500))

PINLESS_SIGNATURE_HEADER = "X-Pinless-Signature"
PINLESS_TIMESTAMP_HEADER = "X-Pinless-Timestamp"
PINLESS_TOLERANCE_S = 300
"""Largest accepted distance of ``X-Pinless-Timestamp`` from now, seconds."""
SECRET_ENV = "DAILY_DIALIN_HMAC"
"""Environment variable of ``settings.daily_dialin_hmac``."""
REMEMBERED_CALLS = 1000
"""How many answered ``callId`` s are remembered to answer a repeated webhook (in memory)."""
DIALIN_KIND = "dialin"
"""Kind of the shared ``callId`` entries (:func:`runtime.cluster.ephemeral.key`)."""
ANSWERING_S = 120.0
"""Longest a replica's "answering this call" mark holds off Daily's retries elsewhere, s (a
replica that died mid-answer no longer blocks the call after it)."""
_MILLISECONDS = 10_000_000_000  # a Unix time above this is in ms (year 2286 in s)


class DailyDialinCall(BaseModel):
    """The body of Daily's pinless dial-in webhook (fields Daily may add are ignored).

    Attributes:
        call_id: ``callId``: the held call (a UUID on Daily's SIP network).
        call_domain: ``callDomain``: the Daily domain on the SIP network (a UUID).
        dialled: ``To``: the number (or SIP URI) called.
        caller: ``From``: the caller's number (or SIP URI); ``""`` if absent.
        sip_headers: ``sipHeaders``: the call's SIP headers, if any.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    call_id: str = Field(alias="callId", min_length=1, max_length=200)
    call_domain: str = Field(alias="callDomain", min_length=1, max_length=200)
    dialled: str = Field(default="", alias="To", max_length=200)
    caller: str = Field(default="", alias="From", max_length=200)
    sip_headers: dict[str, Any] | None = Field(default=None, alias="sipHeaders")


class DialinAnswer(BaseModel):
    """What the webhook answers (Daily needs only the 200)."""

    status: str = Field(
        description="`ok` for Daily's endpoint check; else the session's status "
        "(`ready`), or `duplicate` for a `callId` already answered."
    )
    session_id: str | None = Field(default=None, description="The call's session.")


def pinless_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded ``hmac`` secret.

    Raises:
        ValueError: Not base64, or empty.
    """
    try:
        key = base64.b64decode(secret.strip(), validate=True)
    except binascii.Error:
        raise ValueError(f"{SECRET_ENV} is not base64") from None
    if not key:
        raise ValueError(f"{SECRET_ENV} is empty")
    return key


def verify_pinless(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    key: bytes,
    now: float | None = None,
) -> None:
    """Check ``X-Pinless-Signature`` of a Daily pinless dial-in webhook (see module doc).

    Args:
        body: The raw request body, exactly as received.
        signature: ``X-Pinless-Signature`` (base64 or hex), or ``None`` if absent.
        timestamp: ``X-Pinless-Timestamp`` (Unix seconds or milliseconds), or ``None``.
        key: :func:`pinless_key` of the secret.
        now: Current Unix time in seconds (tests); ``None`` = the clock.

    Raises:
        SignatureError: A header is missing or malformed, the timestamp is out of tolerance,
            or the signature does not match.
    """
    if not signature or not timestamp:
        raise SignatureError(
            f"the request lacks {PINLESS_SIGNATURE_HEADER} or {PINLESS_TIMESTAMP_HEADER}"
        )
    try:
        sent_at = float(timestamp)
    except ValueError:
        raise SignatureError(f"{PINLESS_TIMESTAMP_HEADER} is not a Unix time") from None
    if sent_at > _MILLISECONDS:
        sent_at /= 1000
    if not abs((time.time() if now is None else now) - sent_at) <= PINLESS_TOLERANCE_S:
        raise SignatureError(f"{PINLESS_TIMESTAMP_HEADER} is more than 5 minutes off")
    mac = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).digest()
    given = signature.strip().encode()
    if not any(
        hmac.compare_digest(given, expected)
        for expected in (base64.b64encode(mac), mac.hex().encode())
    ):
        raise SignatureError(f"{PINLESS_SIGNATURE_HEADER} does not match the request")


def is_endpoint_check(payload: dict[str, Any]) -> bool:
    """Whether ``payload`` is Daily's URL check rather than a call (see module doc)."""
    return "test" in payload or set(payload) <= {"To"}


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_request", "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", "the body is not a JSON object")
    return payload


def _check_signature(request: Request, body: bytes, ctx: AppContext) -> None:
    """Refuse the webhook unless Daily signed it.

    Raises:
        ApiError: 503 ``transport_unavailable`` without a (valid) secret; 401 without the
            signature headers; 403 for a wrong or stale signature.
    """
    secret = ctx.settings.daily_dialin_hmac
    if secret is None:
        raise ApiError(503, "transport_unavailable", f"Daily dial-in needs {SECRET_ENV}")
    try:
        key = pinless_key(secret.get_secret_value())
    except ValueError as e:
        raise ApiError(503, "transport_unavailable", str(e)) from None
    headers = request.headers
    signature = headers.get(PINLESS_SIGNATURE_HEADER)
    timestamp = headers.get(PINLESS_TIMESTAMP_HEADER)
    try:
        verify_pinless(body, signature, timestamp, key)
    except SignatureError as e:
        ctx.metrics.error("bad_signature")
        logger.warning("Daily dial-in webhook refused: {}", e)
        status, code = (
            (401, "unauthorized") if not (signature and timestamp) else (403, "forbidden")
        )
        raise ApiError(status, code, f"invalid Daily dial-in signature: {e}") from None


class AnsweredCalls:
    """``callId`` → session id of the calls answered lately (a repeat starts no session).

    In memory (the last :data:`REMEMBERED_CALLS`) in one process; in NATS KV
    (``dialin.<sha256(callId)>``, :mod:`runtime.cluster.ephemeral`) on an API replica of a
    scaled-out deployment, where Daily's retry may reach another replica.

    Args:
        shared: The deployment's ephemeral store, or ``None`` for memory.
    """

    def __init__(self, shared: Ephemeral | None = None):
        self.shared = shared
        self._memory: dict[str, str] = {}

    async def reserve(self, call_id: str) -> str | None:
        """Claim ``call_id`` for answering here.

        Returns:
            ``None`` if this caller now answers it; else the session id it was answered with
            (``""`` while another request, or replica, is still answering it).
        """
        if self.shared is None:
            if call_id in self._memory:
                return self._memory[call_id]
            self._memory[call_id] = ""  # reserved while this call is answered
            return None
        key = ephemeral.key(DIALIN_KIND, call_id)
        for _ in range(3):  # an entry released between the two reads: reserve again
            if await self.shared.create(key, {"session_id": ""}, ANSWERING_S):
                return None
            if (entry := await self.shared.get(key)) is not None:
                session_id = entry.get("session_id")
                return session_id if isinstance(session_id, str) else ""
        return ""

    async def answered(self, call_id: str, session_id: str) -> None:
        """Remember that ``call_id`` was answered with ``session_id``."""
        if self.shared is not None:
            key = ephemeral.key(DIALIN_KIND, call_id)
            try:
                await self.shared.put(key, {"session_id": session_id}, EPHEMERAL_TTL_S)
            except Exception as e:  # the call is answered; its mark still holds retries off
                logger.bind(call_id=call_id).warning("dial-in answer not shared: {!r}", e)
            return
        self._memory[call_id] = session_id
        while len(self._memory) > REMEMBERED_CALLS:
            self._memory.pop(next(iter(self._memory)))

    async def release(self, call_id: str) -> None:
        """Forget ``call_id`` (its answer failed: Daily's retry may start it again)."""
        if self.shared is not None:
            try:
                await self.shared.delete(ephemeral.key(DIALIN_KIND, call_id))
            except Exception as e:  # the mark expires by itself after ANSWERING_S
                logger.bind(call_id=call_id).warning("dial-in mark not cleared: {!r}", e)
            return
        self._memory.pop(call_id, None)


def _answered(app_state: object) -> AnsweredCalls:
    """The app's :class:`AnsweredCalls` (created on first use, kept on ``app.state``)."""
    calls = getattr(app_state, "daily_dialin_calls", None)
    if calls is None:
        calls = AnsweredCalls(shared_state(app_state))
        setattr(app_state, "daily_dialin_calls", calls)  # noqa: B010
    return cast(AnsweredCalls, calls)


@router.post(
    "/dialin/daily",
    response_model=DialinAnswer,
    summary="Incoming Daily dial-in call (Daily webhook)",
    responses={
        **error_responses(402, 413, 422, 429, 503),
        401: {"model": ErrorBody, "description": "No X-Pinless-Signature/-Timestamp."},
        403: {"model": ErrorBody, "description": "Wrong or stale signature."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DailyDialinCall.model_json_schema()}},
        }
    },
)
async def daily_dialin(request: Request, ctx: Ctx) -> DialinAnswer:
    """Answer a call held by Daily: session, SIP-enabled room and bot (see module doc).

    Signed with ``X-Pinless-Signature`` + ``X-Pinless-Timestamp``: missing → 401, wrong or
    stale → 403, ``DAILY_DIALIN_HMAC`` or ``DAILY_API_KEY`` unset or Daily failing → 503
    ``transport_unavailable``. No ``callId``/``callDomain`` → 422; quota used up → 402; all
    slots busy → 429. Daily's endpoint check (``{"test": …}``) → 200 ``{"status": "ok"}``.
    """
    body = await request.body()
    payload = _json_object(body)
    if is_endpoint_check(payload):
        logger.info("Daily dial-in endpoint check answered")
        return DialinAnswer(status="ok")
    _check_signature(request, body, ctx)
    try:
        call = DailyDialinCall.model_validate(payload)
    except ValidationError as e:
        where = ".".join(str(p) for p in e.errors()[0]["loc"]) or "body"
        raise ApiError(422, "invalid_request", f"{where}: {e.errors()[0]['msg']}") from None
    answered = _answered(request.app.state)
    if (earlier := await answered.reserve(call.call_id)) is not None:
        return DialinAnswer(status="duplicate", session_id=earlier or None)
    try:
        session_id = await _start(ctx, request, call)
    except BaseException:
        await answered.release(call.call_id)
        raise
    await answered.answered(call.call_id, session_id)
    return DialinAnswer(status="ready", session_id=session_id)


async def _start(ctx: AppContext, request: Request, call: DailyDialinCall) -> str:
    """Pick learner, persona and tier; create the session and its room; spawn the bot."""
    log = logger.bind(call_id=call.call_id)
    settings = ctx.settings
    if daily_api_key() is None:
        raise ApiError(503, "transport_unavailable", f"Daily dial-in needs {DAILY_KEY_ENV}")
    incoming = IncomingCall.from_params(
        "daily", {"CallSid": call.call_id, "From": call.caller, "To": call.dialled}
    )
    line = settings.phone_lines.get(incoming.dialled) or PhoneLine()
    try:
        menu = menu_personas(settings.phone_menu)
        known = await ctx.store.find_learner_by_phone(incoming.caller) if incoming.caller else None
        persona = find_persona(line.persona or persona_for(known, menu) or menu[0].id)
        tier = line.tier or settings.phone_default_tier
        check_tier(tier)
    except ApiError as e:
        log.error("phone line {} is misconfigured: {}", incoming.dialled, e.message)
        raise ApiError(
            503, "transport_unavailable", f"the line {incoming.dialled!r} is misconfigured"
        ) from None
    calls = phone_calls(request.app.state, settings.phone_stream_ttl_s)

    async def learner() -> LearnerInfo:  # a guest is created only once a slot is reserved
        return await caller_learner(ctx.store, calls, incoming, persona)

    async def make_room(session_id: str) -> DialinRoom:
        return await create_dialin_room(
            session_id,
            api_url=settings.daily_api_url,
            api_key=daily_api_key() or "",
            bot_name=persona.name,
            caller_name=incoming.caller or "Phone caller",
        )

    started = await launch(
        ctx,
        LaunchRequest(
            learner=learner,
            persona=persona,
            tier=tier,
            by_line=True,  # the operator's line chose the tier
            transport="daily",
            learner_name=spoken_name,
            make_room=make_room,
            daily_call_id=call.call_id,
            daily_call_domain=call.call_domain,
        ),
    )
    log.bind(session_id=started.session.id).info(
        "Daily dial-in call answered: persona={} tier={}", persona.id, tier
    )
    return started.session.id
