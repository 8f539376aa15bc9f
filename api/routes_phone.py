"""``/api/v1/phone/{carrier}/…``: phone dial-in over Twilio and Telnyx media streams.

Configure the number's voice webhook (Twilio) or TeXML application (Telnyx) to
``POST https://<host>/api/v1/phone/<carrier>/voice``. The webhook answers TwiML/TeXML:

* ``<Connect><Stream url="wss://<host>/api/v1/phone/<carrier>/stream/<token>"/></Connect>``
  once the call's session is ready (:mod:`api.phone_calls`); the stream is then relayed to the
  session process (:mod:`api.phone_stream`). When the session ends the socket closes and, with
  nothing after ``<Connect>``, the carrier hangs up.
* ``<Gather numDigits="1" action=".../menu">`` with the persona menu for unknown callers; the
  key pressed comes back to ``POST …/menu``.
* ``<Say>…</Say><Hangup/>`` when the call cannot be taken (busy, quota, misconfigured line).

No API key: each webhook must carry the carrier's signature (:mod:`api.phone_auth`); a
missing or wrong one answers 403, and a carrier whose secret is not configured answers 503
``transport_unavailable``. TeXML is TwiML-compatible, so one builder (the Twilio helper
library's ``VoiceResponse``) writes both; Telnyx's ``<Stream>`` also asks for bidirectional
RTP in PCMU (https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream).
"""

from __future__ import annotations

from enum import StrEnum
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, WebSocket
from loguru import logger
from starlette.datastructures import ImmutableMultiDict
from twilio.twiml.voice_response import VoiceResponse

from api.deps import AppContext, Ctx
from api.errors import ApiError, error_responses
from api.phone_auth import (
    TELNYX_SIGNATURE_HEADER,
    TELNYX_TIMESTAMP_HEADER,
    TWILIO_SIGNATURE_HEADER,
    SignatureError,
    form_params,
    public_url,
    telnyx_public_key,
    verify_telnyx,
    verify_twilio,
)
from api.phone_calls import Connect, IncomingCall, Menu, answer_call, end_session, phone_calls
from api.phone_hangup import hang_up
from api.phone_stream import close, relay
from config.personas import LANGUAGE_NAMES, Persona

router = APIRouter(tags=["phone"], responses=error_responses(500))

MENU_TIMEOUT_S = 8
"""Seconds the keypad menu waits for a digit before saying goodbye."""
_XML = "application/xml"
_TWIML_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {_XML: {}}, "description": "TwiML (Twilio) or TeXML (Telnyx)."},
    **error_responses(403, 413, 422, 503),
}


class Carrier(StrEnum):
    """The phone carriers whose media streams voxtutor speaks."""

    TWILIO = "twilio"
    TELNYX = "telnyx"


CarrierPath = Annotated[Carrier, Path(description="`twilio` or `telnyx`.")]


async def verified_params(
    carrier: Carrier, request: Request, ctx: AppContext
) -> ImmutableMultiDict[str, str]:
    """The webhook's form parameters, once the carrier's signature checks out.

    Raises:
        ApiError: 503 ``transport_unavailable`` if the carrier's secret is not configured
            (or the Telnyx key is invalid); 403 ``forbidden`` for a missing or wrong signature.
    """
    settings = ctx.settings
    body = await request.body()
    try:
        if carrier is Carrier.TWILIO:
            if settings.twilio_auth_token is None:
                raise ApiError(503, "transport_unavailable", "twilio needs TWILIO_AUTH_TOKEN")
            params = form_params(body)
            url = public_url(request.url, settings.phone_public_url)
            signature = request.headers.get(TWILIO_SIGNATURE_HEADER)
            verify_twilio(url, params, signature, settings.twilio_auth_token.get_secret_value())
            return params
        if not settings.telnyx_public_key:
            raise ApiError(503, "transport_unavailable", "telnyx needs TELNYX_PUBLIC_KEY")
        try:
            key = telnyx_public_key(settings.telnyx_public_key)
        except ValueError as e:
            raise ApiError(503, "transport_unavailable", str(e)) from None
        headers = request.headers
        verify_telnyx(
            body, headers.get(TELNYX_SIGNATURE_HEADER), headers.get(TELNYX_TIMESTAMP_HEADER), key
        )
        return form_params(body)
    except SignatureError as e:
        ctx.metrics.error("bad_signature")
        logger.warning("{} webhook refused: {}", carrier.value, e)
        raise ApiError(403, "forbidden", f"invalid {carrier.value} signature: {e}") from None


def _carrier_base(request: Request, ctx: AppContext) -> str:
    """The public ``…/api/v1/phone/<carrier>`` of this webhook (see :func:`public_url`)."""
    webhook = public_url(request.url.replace(query=""), ctx.settings.phone_public_url)
    return webhook.rsplit("/", 1)[0]


def _menu_prompt(personas: tuple[Persona, ...]) -> str:
    options = []
    for digit, persona in enumerate(personas, start=1):
        what = (
            "the checkride examiner"
            if persona.role == "examiner"
            else f"the {LANGUAGE_NAMES[persona.language]} tutor"
        )
        options.append(f"For {what}, {persona.name}, press {digit}.")
    return "Welcome to voxtutor. " + " ".join(options)


def _xml(response: VoiceResponse) -> Response:
    return Response(str(response), media_type=_XML)


async def _answer(carrier: Carrier, request: Request, ctx: AppContext, menu: bool) -> Response:
    params = await verified_params(carrier, request, ctx)
    try:
        call = IncomingCall.from_params(carrier.value, params)
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    calls = phone_calls(request.app.state, ctx.settings.phone_stream_ttl_s)
    digit = (params.get("Digits") or "").strip() if menu else None
    answer = await answer_call(ctx, calls, call, digit)
    twiml = VoiceResponse()
    if isinstance(answer, Connect):
        base = _carrier_base(request, ctx).replace("http", "ws", 1)  # http(s) → ws(s)
        url = f"{base}/stream/{answer.token}"
        rtp = {"bidirectional_mode": "rtp", "bidirectional_codec": "PCMU"}
        twiml.connect().stream(url=url, **(rtp if carrier is Carrier.TELNYX else {}))
    elif isinstance(answer, Menu):
        action = f"{_carrier_base(request, ctx)}/menu"
        gather = twiml.gather(num_digits=1, action=action, method="POST", timeout=MENU_TIMEOUT_S)
        gather.say(
            ("Sorry, that is not on the menu. " if digit else "") + _menu_prompt(answer.personas)
        )
        twiml.say("No choice was made. Goodbye.")
        twiml.hangup()
    else:
        twiml.say(answer.message)
        twiml.hangup()
    return _xml(twiml)


@router.post(
    "/phone/{carrier}/voice",
    response_class=Response,
    responses=_TWIML_RESPONSES,
    summary="Incoming call (carrier webhook)",
)
async def incoming_call(carrier: CarrierPath, request: Request, ctx: Ctx) -> Response:
    """Answer an incoming call: connect its media stream, offer the menu, or refuse.

    The body is the carrier's form-encoded call (``CallSid``, ``From``, ``To``), signed with
    ``X-Twilio-Signature`` (Twilio) or ``telnyx-signature-ed25519`` + ``telnyx-timestamp``
    (Telnyx). A known caller (learner ``phone``) is connected at once; an unknown one hears the
    persona menu. Missing ``CallSid`` → 422.
    """
    return await _answer(carrier, request, ctx, menu=False)


@router.post(
    "/phone/{carrier}/menu",
    response_class=Response,
    responses=_TWIML_RESPONSES,
    summary="Menu choice (carrier webhook)",
)
async def menu_choice(carrier: CarrierPath, request: Request, ctx: Ctx) -> Response:
    """The key the caller pressed (``Digits``): start that persona's session, or ask again."""
    return await _answer(carrier, request, ctx, menu=True)


@router.websocket("/phone/{carrier}/stream/{token}")
async def media_stream(websocket: WebSocket, carrier: Carrier, token: str) -> None:
    """The carrier's media stream for one answered call (token from the webhook's TwiML)."""
    await websocket.accept()
    ctx: AppContext | None = getattr(websocket.app.state, "ctx", None)
    if ctx is None:
        await close(websocket, 1013, "the service is starting")
        return
    pending = await phone_calls(websocket.app.state, ctx.settings.phone_stream_ttl_s).claim(token)
    if pending is None or pending.carrier != carrier.value:
        ctx.metrics.error("bad_media_stream")
        logger.warning("{} media stream refused: unknown or expired call token", carrier.value)
        await close(websocket, 1008, "unknown or expired call")
        return
    log = logger.bind(session_id=pending.session_id, call_id=pending.call_id)

    async def end(reason: str) -> None:
        await end_session(ctx, pending.session_id, reason)

    log.info("{} media stream connected", carrier.value)

    async def rest_hang_up() -> None:
        if await hang_up(carrier.value, pending.call_id, ctx.settings):
            log.info("{} call hung up over REST", carrier.value)

    # On an API replica the session runs on a host: its media goes over NATS.
    open_media = getattr(ctx.supervisor, "open_media", None)
    connect = None
    if pending.phone_url.startswith("nats:") and open_media is not None:
        connect = partial(open_media, pending.session_id)
    outcome = await relay(
        websocket, carrier.value, pending.call_id, pending.phone_url, end, rest_hang_up, connect
    )
    if outcome.startswith("refused"):
        ctx.metrics.error("bad_media_stream")
        log.warning("{} media stream {}", carrier.value, outcome)
    else:
        log.info("{} media stream closed: {}", carrier.value, outcome)
