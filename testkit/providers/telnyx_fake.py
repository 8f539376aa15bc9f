"""Loopback fake of Telnyx's REST API: TeXML verification calls and call-control hang-ups.

- ``POST /v2/texml/calls/{connection_id}`` with JSON ``To``, ``From``, ``Texml`` places a call
  (https://developers.telnyx.com/api-reference/texml-rest-commands/create-a-connection-scoped-texml-call);
- ``POST /v2/calls/{call_control_id}/actions/hangup`` ends one
  (https://developers.telnyx.com/api/call-control/hangup-call).

The fake checks the bearer API key and records each request.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from testkit.providers.base import FakeProvider


class TelnyxFake(FakeProvider):
    """``served("call")``: ``{connection_id, To, From, Texml}``; ``served("hangup")``: ids."""

    name = "telnyx"

    def __init__(self, api_key: str):
        super().__init__()
        expected = f"Bearer {api_key}"

        def refused(request: Request) -> JSONResponse | None:
            if request.headers.get("authorization") == expected:
                return None
            return JSONResponse(
                {"errors": [{"code": "10009", "title": "Authentication failed"}]}, 401
            )

        @self.app.post("/v2/texml/calls/{connection_id}")
        async def create_call(connection_id: str, request: Request) -> JSONResponse:
            if (answer := refused(request)) is not None:
                return answer
            body = await request.json()
            self.record("call", body={"connection_id": connection_id, **body})
            n = len(self.served("call"))
            return JSONResponse({"call_sid": f"v3:texml-{n}", "status": "queued"})

        @self.app.post("/v2/calls/{call_id}/actions/hangup")
        async def hang_up(call_id: str, request: Request) -> JSONResponse:
            if (answer := refused(request)) is not None:
                return answer
            self.record("hangup", body={"call_id": call_id})
            return JSONResponse({"data": {"result": "ok"}})
