"""Loopback fake of Twilio's REST Call resource: the hang-up a session sends when it ends.

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with ``Status=completed``
ends a call (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource).
The fake checks HTTP Basic auth (account SID : auth token) and records each update.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import JSONResponse

from testkit.providers.base import FakeProvider


class TwilioFake(FakeProvider):
    """Serves the Call update route; ``served("hangup")`` lists ``{call_sid, Status}``."""

    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str):
        super().__init__()
        expected = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()

        @self.app.post("/2010-04-01/Accounts/{account}/Calls/{call_file}")
        async def update_call(account: str, call_file: str, request: Request) -> JSONResponse:
            if request.headers.get("authorization") != expected or account != account_sid:
                return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
            body = dict(parse_qsl((await request.body()).decode()))
            call_sid = call_file.removesuffix(".json")
            self.record("hangup", body={"call_sid": call_sid, **body})
            return JSONResponse({"sid": call_sid, "status": body.get("Status", "in-progress")})
