"""Hanging up a phone call over the carrier's REST API, from the server.

When a call's session ends, the media stream's socket closes, which ends the call; with the
carrier's credentials the server also hangs the call up over REST, so no call can stay open
on the carrier's side. The server does it, not the session process: the credentials (Twilio's
auth token, Telnyx's API key) stay out of the processes that parse callers' audio
(:mod:`runtime.session_env`).

- Twilio: ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with
  ``Status=completed``, HTTP basic auth (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource).
- Telnyx: ``POST /v2/calls/{call_control_id}/actions/hangup``, bearer API key
  (https://developers.telnyx.com/api/call-control/hangup-call).
"""

from __future__ import annotations

import httpx
from loguru import logger

from config.settings import Settings

TWILIO_API = "https://api.twilio.com"
TELNYX_API = "https://api.telnyx.com"
TIMEOUT_S = 10.0


def secret_value(value: object) -> str | None:
    """The plain text of a ``SecretStr`` setting (or plain value); ``None`` when unset."""
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter is not None else (str(value) if value else None)


async def hang_up(carrier: str, call_id: str, settings: Settings) -> bool:
    """Hang ``call_id`` up if the carrier's credentials are set; ``True`` if the carrier took it.

    Failures are logged, never raised: the call ends with its media stream anyway.
    """
    if carrier == "twilio":
        token, sid = secret_value(settings.twilio_auth_token), settings.twilio_account_sid
        if not (token and sid):
            return False
        base = (settings.twilio_api_base_url or TWILIO_API).rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{sid}/Calls/{call_id}.json"
        request = {"data": {"Status": "completed"}, "auth": (sid, token)}
    elif carrier == "telnyx":
        key = secret_value(settings.telnyx_api_key)
        if not key:
            return False
        base = (settings.telnyx_api_base_url or TELNYX_API).rstrip("/")
        url = f"{base}/v2/calls/{call_id}/actions/hangup"
        request = {"json": {}, "headers": {"Authorization": f"Bearer {key}"}}
    else:
        return False
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            r = await client.post(url, **request)  # type: ignore[arg-type]
    except httpx.HTTPError as e:
        logger.warning("{} hang-up of {} failed: {!r}", carrier, call_id, e)
        return False
    if r.status_code >= 400:
        logger.warning("{} hang-up of {} answered {}", carrier, call_id, r.status_code)
        return False
    return True
