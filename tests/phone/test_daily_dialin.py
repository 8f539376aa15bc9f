"""Daily pinless dial-in (``POST /api/v1/dialin/daily``) against a loopback fake of Daily's API.

Covered: Daily's endpoint check, the webhook's signature, the caller's learner, persona and
tier, the SIP-enabled room, the spawned bot's spec, refusals that leave nothing behind, and
the call update the bot's transport sends once the room's SIP endpoint is ready.

Limit: the bot's ``DailyTransport`` cannot join a Daily room offline (daily-python talks to
Daily's servers, which fire ``dialin-ready``), so the call update is driven by invoking the
transport's ``on_dialin_ready`` callback, the one Pipecat wires to that event, with the SIP
endpoint the fake gave the room.

Webhooks are signed here as Daily's pinless guide describes (base64 HMAC-SHA256 of
``"<timestamp>.<body>"`` keyed with the base64-decoded secret), independently of the code
under test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.phone_auth import SignatureError
from api.routes_dialin import pinless_key, verify_pinless
from testkit.api_support import V1, Api, assert_error, make_api
from testkit.providers.base import WireFault
from testkit.providers.daily_fake import DailyFake
from transports.daily import daily_bot_transport, end_on_dialin_failure

KEY = "dk-dialin-secret-0123456789"
SECRET = base64.b64encode(b"pinless-hmac-secret-for-tests").decode()
URL = f"{V1}/dialin/daily"
LINE = "+15550001000"
"""A dialled number configured for the checkride examiner on the local tier."""
OTHER_LINE = "+15550003000"
KNOWN = "+15550002000"
CALL_ID = "8d5c3a6e-1b7f-4e2a-9c0d-0f1e2d3c4b5a"
CALL_DOMAIN = "3f6a1c2b-5d4e-4f70-8a9b-c0d1e2f3a4b5"


def sign(body: bytes, secret: str = SECRET, timestamp: str | None = None) -> dict[str, str]:
    """Daily's signature headers for ``body``."""
    ts = timestamp or str(int(time.time()))
    mac = hmac.new(base64.b64decode(secret), ts.encode() + b"." + body, hashlib.sha256)
    return {
        "X-Pinless-Signature": base64.b64encode(mac.digest()).decode(),
        "X-Pinless-Timestamp": ts,
        "Content-Type": "application/json",
    }


def call_body(
    caller: str = KNOWN, to: str = OTHER_LINE, call_id: str = CALL_ID, **extra: Any
) -> bytes:
    body = {"callId": call_id, "callDomain": CALL_DOMAIN, "To": to, "From": caller, **extra}
    return json.dumps(body).encode()


async def post(api: Api, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await api.client.post(
        URL, content=body, headers=sign(body) if headers is None else headers
    )


@pytest.fixture
async def daily(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DailyFake]:
    monkeypatch.setenv("DAILY_API_KEY", KEY)
    async with DailyFake(api_key=KEY) as fake:
        fake.hold_call(CALL_ID, CALL_DOMAIN)
        yield fake


async def _api(
    daily: DailyFake, sqlite_url: str, tmp_path: Path, **extra: Any
) -> AsyncIterator[Api]:
    settings: dict[str, Any] = {
        "daily_api_url": daily.api_url,
        "daily_dialin_hmac": SECRET,
        "phone_lines": {LINE: {"persona": "aviation-examiner", "tier": "local"}},
        **extra,
    }
    async for a in make_api(sqlite_url, tmp_path, **settings):
        yield a


@pytest.fixture
async def dapi(daily: DailyFake, sqlite_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async for a in _api(daily, sqlite_url, tmp_path):
        yield a


async def known_learner(api: Api) -> str:
    return await api.phone_learner(KNOWN)


def spawned(api: Api) -> list[Any]:
    return [spec for kind, spec in api.sup.calls if kind == "spawn"]


async def all_sessions(api: Api) -> list[Any]:
    """Every session in the store, whichever key owns it."""
    keys = await api.store.list_api_keys(include_revoked=True)
    rows = []
    for k in keys:
        rows += (await api.store.list_sessions(k.id, None, None, 100, 0))[0]
    return rows


# -- Daily's endpoint check -----------------------------------------------------------------


@pytest.mark.parametrize("body", [{"test": "test"}, {"To": "+15550001000"}])
async def test_daily_endpoint_check_is_answered_without_a_signature_and_starts_nothing(
    dapi: Api, daily: DailyFake, body: dict[str, str]
) -> None:
    r = await dapi.client.post(URL, json=body)
    assert r.status_code == 200 and r.json() == {"status": "ok", "session_id": None}
    assert daily.requests == [] and spawned(dapi) == [] and await all_sessions(dapi) == []


# -- refusals: nothing is created -----------------------------------------------------------


def _wrong_headers(case: str, body: bytes) -> dict[str, str]:
    if case == "unsigned":
        return {"Content-Type": "application/json"}
    if case == "no timestamp":
        return {k: v for k, v in sign(body).items() if k != "X-Pinless-Timestamp"}
    if case == "other secret":
        return sign(body, secret=base64.b64encode(b"someone-else").decode())
    if case == "stale":
        return sign(body, timestamp=str(int(time.time()) - 3600))
    if case == "other body":
        return sign(call_body(caller="+15559999999"))
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("unsigned", 401, "unauthorized"),
        ("no timestamp", 401, "unauthorized"),
        ("other secret", 403, "forbidden"),
        ("stale", 403, "forbidden"),
        ("other body", 403, "forbidden"),
    ],
)
async def test_unsigned_or_wrongly_signed_call_is_refused_and_creates_nothing(
    dapi: Api, daily: DailyFake, case: str, status: int, code: str
) -> None:
    await known_learner(dapi)
    body = call_body()
    r = await post(dapi, body, _wrong_headers(case, body))
    assert "Daily dial-in signature" in assert_error(r, status, code)["message"]
    assert daily.requests == [] and daily.rooms == {}
    assert spawned(dapi) == [] and await all_sessions(dapi) == []
    assert dapi.metric('voxtutor_errors_total{kind="bad_signature"} ') == 1


async def test_without_the_secret_dialin_is_refused_naming_the_variable(
    daily: DailyFake, sqlite_url: str, tmp_path: Path
) -> None:
    async for api in _api(daily, sqlite_url, tmp_path, daily_dialin_hmac=None):
        r = await post(api, call_body())
        assert "DAILY_DIALIN_HMAC" in assert_error(r, 503, "transport_unavailable")["message"]
        # Daily's endpoint check still works: the secret comes from saving the config.
        assert (await api.client.post(URL, json={"test": "test"})).status_code == 200
        assert daily.requests == [] and spawned(api) == []


async def test_without_the_daily_key_dialin_is_refused_naming_it(
    dapi: Api, daily: DailyFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAILY_API_KEY")
    r = await post(dapi, call_body())
    assert "DAILY_API_KEY" in assert_error(r, 503, "transport_unavailable")["message"]
    assert daily.requests == [] and await all_sessions(dapi) == []


@pytest.mark.parametrize("drop", ["callId", "callDomain"])
async def test_signed_call_without_its_ids_answers_422(dapi: Api, drop: str) -> None:
    body = json.loads(call_body())
    del body[drop]
    r = await post(dapi, json.dumps(body).encode())
    assert drop in assert_error(r, 422, "invalid_request")["message"]
    assert assert_error(await post(dapi, b"[1, 2]"), 422)["message"] == (
        "the body is not a JSON object"
    )


# -- a call is answered ---------------------------------------------------------------------


async def test_known_caller_gets_a_sip_room_a_bot_and_the_call_update(
    dapi: Api, daily: DailyFake
) -> None:
    learner_id = await known_learner(dapi)  # target language de → german-tutor
    r = await post(dapi, call_body(sipHeaders={"X-Custom": "1"}))
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    assert r.json() == {"status": "ready", "session_id": sid}
    # The room: private, SIP dial-in with one endpoint, named after the caller.
    (created,) = daily.served("rooms")
    assert created.body["name"] == f"vt-{sid}" and created.body["privacy"] == "private"
    props = created.body["properties"]
    assert props["sip"] == {
        "display_name": KNOWN,
        "video": False,
        "sip_mode": "dial-in",
        "num_endpoints": 1,
    }
    assert props["max_participants"] == 2 and props["eject_at_room_exp"] is True
    room = daily.rooms[f"vt-{sid}"]
    endpoint = room["config"]["sip_uri"]["endpoint"]
    # Only the bot's token (owner); the caller arrives over SIP.
    ((bot_token, bot_props),) = daily.tokens.items()
    assert bot_props["is_owner"] is True and bot_props["user_name"] == "Lena"
    # The session: the caller's learner, transport daily, the spawned bot's spec.
    info = await dapi.store.get_session(sid)
    assert info is not None and info.learner_id == learner_id
    assert (info.transport, info.persona, info.tier, info.status) == (
        "daily",
        "german-tutor",
        "local",
        "ready",
    )
    (spec,) = spawned(dapi)
    assert (spec.session_id, spec.transport, spec.learner_name) == (sid, "daily", "Eva")
    assert (spec.daily_room_url, spec.daily_token) == (room["url"], bot_token)
    assert (spec.daily_call_id, spec.daily_call_domain) == (CALL_ID, CALL_DOMAIN)
    assert KEY not in json.dumps(spec.to_json()) and KEY not in r.text
    assert daily.call_updates == []  # only the bot's transport updates the call

    # The bot's side (see module doc): Daily reports the SIP endpoint ready.
    transport = daily_bot_transport(spec, "Lena", daily.api_url)
    await transport._client._callbacks.on_dialin_ready(endpoint)
    assert daily.call_updates == [
        {"callId": CALL_ID, "callDomain": CALL_DOMAIN, "sipUri": endpoint}
    ]
    (update,) = daily.served("call_update")
    assert update.headers["authorization"] == f"Bearer {KEY}"
    assert daily.held_calls == {}


async def test_a_number_claimed_by_another_key_without_its_code_gets_none_of_the_calls(
    dapi: Api, daily: DailyFake
) -> None:
    intruder = await dapi.learner(dapi.b)
    info = await dapi.store.get_learner(intruder)
    assert info is not None
    # Key B types the caller's number; the code is called to the caller, never to B.
    await dapi.store.start_phone_verification(intruder, info.owner_key_id, KNOWN, "twilio")
    r = await post(dapi, call_body())
    assert r.status_code == 200, r.text
    first = await dapi.store.get_session(r.json()["session_id"])
    assert first is not None and first.learner_id != intruder
    assert first.owner_key_id != info.owner_key_id
    r = await dapi.client.get(f"{V1}/sessions", params={"learner_id": intruder}, headers=dapi.b)
    assert r.json()["total"] == 0
    # The caller proves the number on their own learner: their next call reaches it.
    owner = await known_learner(dapi)
    second_call = "9e6d4b7f-2c8a-4f3b-8d1e-1a2b3c4d5e6f"
    r = await post(dapi, call_body(call_id=second_call))
    assert r.status_code == 200, r.text
    second = await dapi.store.get_session(r.json()["session_id"])
    assert second is not None and second.learner_id == owner


async def test_unknown_caller_gets_a_guest_learner_and_the_lines_persona(
    dapi: Api, daily: DailyFake
) -> None:
    caller = "+15557770000"
    r = await post(dapi, call_body(caller=caller, to=LINE))
    assert r.status_code == 200, r.text
    info = await dapi.store.get_session(r.json()["session_id"])
    assert info is not None and info.persona == "aviation-examiner"
    guest = await dapi.store.find_learner_by_phone(caller)
    assert guest is not None and info.learner_id == guest.id and guest.name == "Phone guest"
    (spec,) = spawned(dapi)
    assert spec.learner_name is None and spec.daily_call_id == CALL_ID
    (created,) = daily.served("rooms")
    assert created.body["properties"]["sip"]["display_name"] == caller


async def test_withheld_number_on_an_unconfigured_line_gets_the_first_menu_persona(
    dapi: Api, daily: DailyFake
) -> None:
    r = await post(dapi, call_body(caller="anonymous"))
    assert r.status_code == 200, r.text
    info = await dapi.store.get_session(r.json()["session_id"])
    assert info is not None and info.persona == "german-tutor"
    (created,) = daily.served("rooms")
    assert created.body["properties"]["sip"]["display_name"] == "Phone caller"


async def test_a_repeated_webhook_for_the_same_call_starts_no_second_session(
    dapi: Api, daily: DailyFake
) -> None:
    await known_learner(dapi)
    first = await post(dapi, call_body())
    again = await post(dapi, call_body())
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "session_id": first.json()["session_id"]}
    assert len(daily.rooms) == 1 and len(spawned(dapi)) == 1


async def test_daily_failing_answers_503_fails_the_session_and_leaks_no_room(
    dapi: Api, daily: DailyFake
) -> None:
    await known_learner(dapi)
    daily.inject("tokens", WireFault.HTTP_5XX)
    r = await post(dapi, call_body())
    message = assert_error(r, 503, "transport_unavailable")["message"]
    assert "bot's Daily meeting token" in message and KEY not in r.text
    assert daily.rooms == {} and len(daily.deleted) == 1 and spawned(dapi) == []
    (info,) = await all_sessions(dapi)
    assert info.status == "failed"
    # Daily may call again for the same call: it is answered now.
    retry = await post(dapi, call_body())
    assert retry.status_code == 200 and retry.json()["status"] == "ready"


async def test_failed_spawn_deletes_the_room(dapi: Api, daily: DailyFake) -> None:
    dapi.sup.spawn_error = RuntimeError("session process failed to start: exit status 1")
    r = await post(dapi, call_body())
    assert_error(r, 503, "session_start_failed")
    assert daily.rooms == {} and len(daily.deleted) == 1


async def test_all_slots_busy_answers_429_before_anything_is_created(
    dapi: Api, daily: DailyFake
) -> None:
    for _ in range(dapi.sup.max_sessions):
        await dapi.session()
    r = await post(dapi, call_body())
    assert_error(r, 429, "at_capacity")
    assert r.headers["Retry-After"] and daily.requests == []
    assert await dapi.store.find_learner_by_phone(KNOWN) is None  # no guest either


# -- the call update's failure and the signature's edge cases -------------------------------


async def settled() -> None:
    """Let the transport's event handlers (Pipecat runs them as tasks) finish."""
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_call_update_refused_by_daily_is_reported_as_a_transport_error(
    dapi: Api, daily: DailyFake
) -> None:
    await known_learner(dapi)
    assert (await post(dapi, call_body())).status_code == 200
    (spec,) = spawned(dapi)
    transport = daily_bot_transport(spec, "Lena", daily.api_url)
    transport.input()  # Pipecat reports the error through the input transport
    errors: list[str] = []

    @transport.event_handler("on_error")
    async def _error(_t: Any, error: str) -> None:
        errors.append(error)

    ended: list[str] = []

    async def end(reason: str) -> None:
        ended.append(reason)

    end_on_dialin_failure(transport, end)  # what the session process registers
    await transport._client._callbacks.on_dialin_ready("sip:000000000@elsewhere.sip.daily.co")
    assert daily.call_updates == [] and CALL_ID in daily.held_calls
    assert len(errors) == 1 and "status: 404" in errors[0], errors
    # The caller will never arrive: the session ends now, once, not at the idle timeout.
    assert len(ended) == 1 and ended[0].startswith("dial-in failed") and "404" in ended[0]
    await transport._client._callbacks.on_dialin_error({"error": "sip leg failed"})
    await settled()
    assert len(ended) == 1


async def test_an_unrelated_transport_error_does_not_end_a_dialin_session(
    dapi: Api, daily: DailyFake
) -> None:
    await known_learner(dapi)
    assert (await post(dapi, call_body())).status_code == 200
    (spec,) = spawned(dapi)
    transport = daily_bot_transport(spec, "Lena", daily.api_url)
    transport.input()
    ended: list[str] = []

    async def end(reason: str) -> None:
        ended.append(reason)

    end_on_dialin_failure(transport, end)
    await transport._client._callbacks.on_error("app message too large")
    await settled()
    assert ended == []
    await transport._client._callbacks.on_dialin_error({"error": "sip leg failed"})
    await settled()
    assert ended == ["dial-in failed: {'error': 'sip leg failed'}"]


def test_signature_accepts_milliseconds_and_hex_and_refuses_bad_headers() -> None:
    key, body, now = pinless_key(SECRET), b'{"callId":"c"}', time.time()
    ms = str(int(now * 1000))
    hex_sig = hmac.new(key, ms.encode() + b"." + body, hashlib.sha256).hexdigest()
    verify_pinless(body, hex_sig, ms, key, now=now)
    verify_pinless(body, sign(body)["X-Pinless-Signature"], sign(body)["X-Pinless-Timestamp"], key)
    with pytest.raises(SignatureError, match="not a Unix time"):
        verify_pinless(body, hex_sig, "yesterday", key, now=now)
    with pytest.raises(SignatureError, match="more than 5 minutes"):
        verify_pinless(body, hex_sig, ms, key, now=now + 301)
    with pytest.raises(ValueError, match="not base64"):
        pinless_key("not base64!")
