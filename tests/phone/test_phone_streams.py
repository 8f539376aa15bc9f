"""Bad input on the real phone server: unsigned webhooks, broken or stray media streams.

Each bad stream is closed with a WebSocket close code and reason, its session ends with the
reason, and the server and a call in progress carry on (that call still gets answered).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import pytest_asyncio
import websockets

from testkit.phone_app import KNOWN_CALLER, LINE, OTHER_LINE, PhoneApp, phone_app, wait_for
from testkit.phone_support import CarrierCall, speech_onset, stream_url, telnyx_headers, ulaw_encode
from transports.file import load_learner_audio

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TTL_S = 15.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory) -> PhoneApp:
    async with phone_app(
        tmp_path_factory.mktemp("phone"), max_sessions=4, phone_stream_ttl_s=TTL_S
    ) as a:
        yield a


async def _count_sessions(app: PhoneApp) -> int:
    _, total = await app.store.list_sessions(app.learner.owner_key_id, app.learner.id)
    return total


async def test_unsigned_or_wrongly_signed_webhooks_are_refused(app):
    params = {"CallSid": "CA" + "b" * 32, "From": KNOWN_CALLER, "To": LINE}
    before = await _count_sessions(app)
    voice = "/api/v1/phone/twilio/voice"
    r = await app.twilio_webhook(voice, params, signature="")
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    assert "no X-Twilio-Signature" in r.json()["message"]
    r = await app.twilio_webhook(voice, params, signature="bm90IHRoZSBzaWduYXR1cmU=")
    assert r.status_code == 403
    # Signed for another number than the one in the body:
    forged = {**params, "From": "+15550009999"}
    r = await app.twilio_webhook(voice, params, signature=_twilio_sig(app, voice, forged))
    assert r.status_code == 403

    body = b"CallSid=v3%3Ax&From=%2B15550002000&To=%2B15550001000"
    stale = telnyx_headers(body, app.telnyx_key, at=time.time() - 600)
    r = await app.telnyx_webhook("/api/v1/phone/telnyx/voice", dict(_pairs(body)), stale)
    assert r.status_code == 403 and "5 minutes" in r.json()["message"]
    r = await app.telnyx_webhook("/api/v1/phone/telnyx/voice", dict(_pairs(body)), {})
    assert r.status_code == 403
    assert await _count_sessions(app) == before  # nothing was started
    assert (await app.http.get("/healthz")).status_code == 200


def _twilio_sig(app: PhoneApp, path: str, params: dict[str, str]) -> str:
    from testkit.phone_app import TWILIO_TOKEN
    from testkit.phone_support import twilio_signature

    return twilio_signature(app.base + path, params, TWILIO_TOKEN)


def _pairs(body: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body.decode())


async def test_a_key_not_on_the_menu_asks_again(app):
    params = {"CallSid": "v3:menu", "From": "+15550007777", "To": OTHER_LINE, "Digits": "9"}
    r = await app.telnyx_webhook("/api/v1/phone/telnyx/menu", params)
    assert r.status_code == 200
    assert "Sorry, that is not on the menu" in r.text and 'numDigits="1"' in r.text
    assert await app.store.find_learner_by_phone("+15550007777") is None


async def _answer(app: PhoneApp, carrier: str, call_id: str) -> tuple[str, str]:
    """A known caller's call: its stream URL and session id."""
    params = {"CallSid": call_id, "From": KNOWN_CALLER, "To": LINE}
    path = f"/api/v1/phone/{carrier}/voice"
    if carrier == "twilio":
        r = await app.twilio_webhook(path, params)
    else:
        r = await app.telnyx_webhook(path, params)
    assert r.status_code == 200 and "<Connect>" in r.text, r.text
    return stream_url(r.text), await app.newest_session(app.learner)


async def _ended_with(app: PhoneApp, sid: str, reason_start: str, timeout_s: float = 30):
    async def ended() -> bool:
        info = await app.store.get_session(sid)
        return info is not None and info.status == "ended"

    await wait_for(ended, timeout_s)
    reason = (await app.store.get_session(sid)).end_reason
    assert reason.startswith(reason_start), reason


async def _garbage(call: CarrierCall, ws: websockets.ClientConnection) -> None:
    await ws.send("hello, this is not JSON")


async def _media_before_start(call: CarrierCall, ws: websockets.ClientConnection) -> None:
    await ws.send(call.connected())
    await ws.send(call.media_message(b"\xff" * 160))


async def _wrong_codec(call: CarrierCall, ws: websockets.ClientConnection) -> None:
    await ws.send(call.connected())
    await ws.send(call.start_message("audio/x-l16", 16000))


async def _another_call(call: CarrierCall, ws: websockets.ClientConnection) -> None:
    call.call_id = "CA-not-this-one"
    await ws.send(call.connected())
    await ws.send(call.start_message())


async def _binary(call: CarrierCall, ws: websockets.ClientConnection) -> None:
    await ws.send(call.connected())
    await ws.send(call.start_message())
    await ws.send(b"\x00\x01\x02")


BAD_STREAMS: list[tuple[str, Callable[..., Awaitable[None]], int, str]] = [
    ("twilio", _garbage, 1007, "malformed message: not JSON"),
    ("telnyx", _media_before_start, 1008, "out of order: 'media' before 'start'"),
    ("twilio", _wrong_codec, 1003, "unsupported codec 'audio/x-l16' at 16000 Hz"),
    ("telnyx", _another_call, 1008, "the stream belongs to another call"),
    ("twilio", _binary, 1003, "binary frames are not part of the media stream protocol"),
]


async def test_bad_streams_are_closed_with_a_reason_and_other_calls_carry_on(app, librivox):
    # A good call in progress, and one whose stream never connects.
    good_url, good_sid = await _answer(app, "twilio", "CA-good")
    good = CarrierCall("twilio", good_url, "CA-good")
    await good.start()
    _, idle_sid = await _answer(app, "telnyx", "v3:never-connects")
    await wait_for(lambda: _got(good.audio_after(0) > 0), 60)

    stray = CarrierCall("twilio", good_url.rsplit("/", 1)[0] + "/not-a-token", "CA-x")
    await stray.open()
    await stray.wait_closed(10)
    assert (stray.close_code, stray.close_reason) == (1008, "unknown or expired call")

    for i, (carrier, send, code, reason) in enumerate(BAD_STREAMS):
        url, sid = await _answer(app, carrier, f"CA-bad-{i}")
        bad = CarrierCall(carrier, url, f"CA-bad-{i}")
        await send(bad, await bad.open())
        await bad.wait_closed(15)
        assert bad.close_code == code and bad.close_reason.startswith(reason), (
            bad.close_code,
            bad.close_reason,
        )
        await _ended_with(app, sid, f"media stream refused: {reason}")
        await bad.aclose()

    # A stream that breaks mid-call: the session was talking, then garbage arrives.
    url, sid = await _answer(app, "telnyx", "v3:breaks")
    breaking = CarrierCall("telnyx", url, "v3:breaks")
    await breaking.start()
    await wait_for(lambda: _got(breaking.audio_after(0) > 0), 60)
    assert breaking._ws is not None
    await breaking._ws.send('{"event": "media", "media": {"payload": "%%%"}}')
    await breaking.wait_closed(15)
    assert (breaking.close_code, breaking.close_reason) == (
        1007,
        "malformed media: payload is not base64 audio",
    )
    await _ended_with(app, sid, "media stream refused: malformed media")
    await breaking.aclose()

    # The token of the stream that never connected expired; the session was ended.
    await _ended_with(app, idle_sid, "the media stream never connected", TTL_S + 30)

    # The server is healthy and the good call is still answered.
    assert (await app.http.get("/healthz")).status_code == 200
    assert good.close_code is None
    clip = next(p for p in librivox if "0880" in p.name)
    pcm = load_learner_audio(clip, 8000)
    good.speak(ulaw_encode(pcm), speech_onset(pcm))
    await asyncio.wait_for(good.speech_done.wait(), 30)
    spoke_at = time.monotonic()

    async def answered() -> bool:
        roles = [t.role for t in await app.store.list_turns(good_sid)]
        return "learner" in roles and roles[-1] == "bot"

    await wait_for(answered, 120)
    await wait_for(lambda: _got(good.audio_after(spoke_at) > 4000), 30)
    await good.hang_up()
    await _ended_with(app, good_sid, "client disconnected")


async def _got(value: bool) -> bool:
    return value
