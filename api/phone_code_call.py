"""Calling a phone number to read a verification code (:mod:`store.phone_identity`).

The server places the call over the carrier's REST API with the words inline, so the code
never travels to a URL anyone could fetch:

- Twilio: ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` with ``To``, ``From`` and
  ``Twiml`` (https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource).
- Telnyx: ``POST /v2/texml/calls/{connection_id}`` with ``To``, ``From`` and ``Texml``
  (https://developers.telnyx.com/api-reference/texml-rest-commands/create-a-connection-scoped-texml-call).

Twilio is used when its account SID and auth token are set, else Telnyx with its API key and
TeXML connection id; with neither, numbers cannot be verified.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import httpx
from loguru import logger

from api.phone_hangup import TELNYX_API, TIMEOUT_S, TWILIO_API, secret_value
from config.settings import Settings

REPEATS = 2
"""The code is read this many times (a listener misses the first digits more often)."""


class CallFailedError(Exception):
    """The carrier did not take the call (unreachable, refused, bad credentials)."""


def code_carrier(settings: Settings) -> str | None:
    """The carrier verification calls go through: ``twilio``, ``telnyx`` or ``None``."""
    if settings.twilio_account_sid and secret_value(settings.twilio_auth_token):
        return "twilio"
    if secret_value(settings.telnyx_api_key) and settings.telnyx_texml_connection_id:
        return "telnyx"
    return None


def caller_number(settings: Settings) -> str | None:
    """The number the calls come from: ``phone_verify_from`` or the first ``phone_lines``."""
    return settings.phone_verify_from or next(iter(settings.phone_lines), None)


def code_words(code: str) -> str:
    """The XML document the call speaks: the code digit by digit, :data:`REPEATS` times.

    Args:
        code: Digits only.
    """
    digits = ", ".join(code)
    said = " ".join(
        f'<Say>Your voxtutor code is: {digits}.</Say><Pause length="1"/>' for _ in range(REPEATS)
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{said}</Response>'


async def call_with_code(settings: Settings, number: str, code: str) -> str:
    """Call ``number`` and read ``code``; return the carrier's call id.

    Raises:
        CallFailedError: no carrier or caller number configured, the carrier refused or
            could not be reached (the message says which; it holds no credentials).
    """
    carrier, caller = code_carrier(settings), caller_number(settings)
    if carrier is None or caller is None:
        raise CallFailedError("no carrier is configured to call numbers")
    words = code_words(escape(code))
    if carrier == "twilio":
        sid = settings.twilio_account_sid
        base = (settings.twilio_api_base_url or TWILIO_API).rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{sid}/Calls.json"
        request: dict[str, object] = {
            "data": {"To": number, "From": caller, "Twiml": words},
            "auth": (sid, secret_value(settings.twilio_auth_token)),
        }
    else:
        base = (settings.telnyx_api_base_url or TELNYX_API).rstrip("/")
        url = f"{base}/v2/texml/calls/{settings.telnyx_texml_connection_id}"
        request = {
            "json": {"To": number, "From": caller, "Texml": words},
            "headers": {"Authorization": f"Bearer {secret_value(settings.telnyx_api_key)}"},
        }
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            r = await client.post(url, **request)  # type: ignore[arg-type]
    except httpx.HTTPError as e:
        logger.warning("{} verification call failed: {!r}", carrier, e)
        raise CallFailedError(f"{carrier} could not be reached") from None
    if r.status_code >= 400:
        logger.warning("{} refused the verification call: {}", carrier, r.status_code)
        raise CallFailedError(f"{carrier} refused the call ({r.status_code})")
    try:
        body = r.json()
    except ValueError:
        body = {}
    call_id = body.get("sid") or body.get("call_sid") or (body.get("data") or {}).get("call_sid")
    return str(call_id or "")
