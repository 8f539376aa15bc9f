"""Loopback fake of Twilio's REST Call resource: hang-ups and verification calls.

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with ``Status=completed``
ends a call (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource);
``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` with ``To``, ``From`` and ``Twiml``
places one (https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource).
The fake checks HTTP Basic auth (account SID : auth token) and records each request.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import JSONResponse

from testkit.providers.base import FakeProvider


class TwilioFake(FakeProvider):
    """Serves the Call routes.

    ``served("hangup")`` lists ``{call_sid, Status}``; ``served("call")`` the created calls'
    form fields (``To``, ``From``, ``Twiml``). ``refuse_calls`` makes creation answer 400
    (Twilio's answer to an unreachable number, error 21217).
    """

    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str):
        super().__init__()
        expected = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()

        self.refuse_calls = False

        @self.app.post("/2010-04-01/Accounts/{account}/Calls.json")
        async def create_call(account: str, request: Request) -> JSONResponse:
            if request.headers.get("authorization") != expected or account != account_sid:
                return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
            body = dict(parse_qsl((await request.body()).decode()))
            self.record("call", body=body)
            if self.refuse_calls:
                return JSONResponse(
                    {"code": 21217, "message": "Phone number does not appear to be valid"},
                    status_code=400,
                )
            sid = f"CA{len(self.served('call')):032x}"
            return JSONResponse({"sid": sid, "status": "queued", "to": body.get("To")}, 201)

        @self.app.post("/2010-04-01/Accounts/{account}/Calls/{call_file}")
        async def update_call(account: str, call_file: str, request: Request) -> JSONResponse:
            if request.headers.get("authorization") != expected or account != account_sid:
                return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
            body = dict(parse_qsl((await request.body()).decode()))
            call_sid = call_file.removesuffix(".json")
            self.record("hangup", body={"call_sid": call_sid, **body})
            return JSONResponse({"sid": call_sid, "status": body.get("Status", "in-progress")})
