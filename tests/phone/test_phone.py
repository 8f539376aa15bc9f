"""Phone calls end to end: carrier webhook → session process → media stream, real models.

A protocol-level carrier (``testkit/phone_support.py``) plays real LibriVox speech at telephone
quality (8 kHz μ-law, one 20 ms message every 20 ms) over Twilio's and Telnyx's media-stream
protocols to the real server (uvicorn on loopback), whose session processes run the local
tier (Whisper base, the 0.5B LLM, Piper).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import pytest_asyncio

from testkit.phone_app import KNOWN_CALLER, LINE, OTHER_LINE, PhoneApp, phone_app, wait_for
from testkit.phone_support import CarrierCall, speech_onset, stream_url, ulaw_decode, ulaw_encode
from transports.file import load_learner_audio

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

BARGE_IN_LIMIT_S = 0.5
"""The project's bound: the carrier gets ``clear`` within 500 ms of the caller speaking."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory) -> PhoneApp:
    async with phone_app(tmp_path_factory.mktemp("phone")) as a:
        yield a


@pytest.fixture(scope="module")
def speech(librivox) -> tuple[bytes, int]:
    """LibriVox "he was not an ill disposed young man": 8 kHz μ-law, speech-onset frame."""
    clip = next(p for p in librivox if "0880" in p.name)
    pcm = load_learner_audio(clip, 8000)
    return ulaw_encode(pcm), speech_onset(pcm)


async def _talk_over_the_greeting(call: CarrierCall, speech: tuple[bytes, int]) -> float:
    """Wait for the greeting, speak over it; return when the speech went out (monotonic s)."""

    async def greeting_playing() -> bool:
        return call.audio_after(time.monotonic() - 0.5) > 0

    await wait_for(greeting_playing, 60)
    await asyncio.sleep(1.5)
    assert call.clears == []
    assert await greeting_playing(), "the greeting stopped before the caller spoke"
    call.speak(*speech)
    await asyncio.wait_for(call.speech_done.wait(), 30)
    return time.monotonic()


def _assert_barge_in(call: CarrierCall) -> None:
    assert call.onset_sent_at is not None and call.clears, "no clear after speaking over the bot"
    delay = call.clears[0] - call.onset_sent_at
    print(f"{call.carrier}: clear {delay * 1000:.0f} ms after the caller's speech onset")
    assert 0 < delay < BARGE_IN_LIMIT_S, f"clear {delay * 1000:.0f} ms after the speech onset"


async def _learner_turn_and_reply(app: PhoneApp, sid: str, call: CarrierCall, spoke_at: float):
    async def replied() -> bool:
        roles = [t.role for t in await app.store.list_turns(sid)]
        return "learner" in roles and roles[-1] == "bot" and roles.index("learner") < len(roles) - 1

    await wait_for(replied, 120)
    turns = await app.store.list_turns(sid)
    learner = next(t for t in turns if t.role == "learner")
    assert "disposed" in learner.text.lower() or "young man" in learner.text.lower(), learner
    await wait_for(lambda: _true(call.audio_after(spoke_at) > 8000), 30)  # > 1 s of reply
    reply = b"".join(b for at, b in call.media if at > spoke_at)
    assert np.abs(ulaw_decode(reply)).max() > 1000  # speech, not silence


async def _true(value: bool) -> bool:
    return value


async def test_twilio_known_caller_talks_barges_in_and_is_hung_up_when_the_session_ends(
    app, speech
):
    call_sid = "CA" + "a" * 32
    r = await app.twilio_webhook(
        "/api/v1/phone/twilio/voice", {"CallSid": call_sid, "From": KNOWN_CALLER, "To": LINE}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    url = stream_url(r.text)
    assert url.startswith(app.base.replace("http", "ws") + "/api/v1/phone/twilio/stream/")
    sid = await app.newest_session(app.learner)
    info = await app.store.get_session(sid)
    assert (info.persona, info.tier, info.transport, info.status) == (
        "aviation-examiner",
        "local",
        "twilio",
        "ready",
    )

    call = CarrierCall("twilio", url, call_sid)
    await call.start()
    spoke_at = await _talk_over_the_greeting(call, speech)
    _assert_barge_in(call)
    await _learner_turn_and_reply(app, sid, call, spoke_at)

    # The session ends (here: the API ends it) → goodbye, REST hang-up, socket closed.
    r = await app.http.delete(f"/api/v1/sessions/{sid}", headers={"X-API-Key": app.key})
    assert r.status_code == 202
    await call.wait_closed(60)
    assert (call.close_code, call.close_reason) == (1000, "session ended")
    hangups = app.twilio.served("hangup")
    assert [h.body for h in hangups] == [{"call_sid": call_sid, "Status": "completed"}]
    await wait_for(lambda: _ended(app, sid), 30)
    assert (await app.store.get_session(sid)).end_reason == "ended by client"
    await call.aclose()


async def _ended(app: PhoneApp, sid: str) -> bool:
    info = await app.store.get_session(sid)
    return info is not None and info.status == "ended"


async def test_telnyx_unknown_caller_picks_the_examiner_on_the_keypad_and_hangs_up(app, speech):
    caller, call_id = "+15550009999", "v3:telnyx-call-0001"
    params = {"CallSid": call_id, "From": caller, "To": OTHER_LINE}
    r = await app.telnyx_webhook("/api/v1/phone/telnyx/voice", params)
    assert r.status_code == 200
    assert 'numDigits="1"' in r.text and "press 3" in r.text and "<Connect>" not in r.text
    assert await app.store.find_learner_by_phone(caller) is None  # nothing chosen yet

    r = await app.telnyx_webhook("/api/v1/phone/telnyx/menu", {**params, "Digits": "3"})
    assert r.status_code == 200
    assert 'bidirectionalMode="rtp"' in r.text and 'bidirectionalCodec="PCMU"' in r.text
    guest = await app.store.find_learner_by_phone(caller)
    assert guest is not None and guest.target_language == "en"
    sid = await app.newest_session(guest)
    info = await app.store.get_session(sid)
    assert (info.persona, info.transport) == ("aviation-examiner", "telnyx")

    call = CarrierCall("telnyx", stream_url(r.text), call_id)
    await call.start()
    spoke_at = await _talk_over_the_greeting(call, speech)
    _assert_barge_in(call)
    await _learner_turn_and_reply(app, sid, call, spoke_at)

    await call.hang_up()
    await wait_for(lambda: _ended(app, sid), 30)
    assert (await app.store.get_session(sid)).end_reason == "client disconnected"

    # Calling again, the guest is known: straight to the persona of their language.
    r = await app.telnyx_webhook(
        "/api/v1/phone/telnyx/voice", {**params, "CallSid": "v3:telnyx-call-0002"}
    )
    assert "<Connect>" in r.text and "Gather" not in r.text
    again_sid = await app.newest_session(guest)
    again = CarrierCall("telnyx", stream_url(r.text), "v3:telnyx-call-0002")
    await again.open()
    await again.aclose()  # the caller hangs up before the stream started
    await wait_for(lambda: _ended(app, again_sid), 30)
    info = await app.store.get_session(again_sid)
    assert info.end_reason == "the caller hung up before the stream started"


async def test_a_greeting_cut_off_by_a_hang_up_is_stored_as_an_interrupted_turn(app):
    call_sid = "CA" + "b" * 32
    r = await app.twilio_webhook(
        "/api/v1/phone/twilio/voice", {"CallSid": call_sid, "From": KNOWN_CALLER, "To": LINE}
    )
    sid = await app.newest_session(app.learner)
    call = CarrierCall("twilio", stream_url(r.text), call_sid)
    await call.start()
    started = time.monotonic()
    await wait_for(lambda: _true(call.audio_after(started) > 8000), 60)  # 1 s of greeting
    await call.hang_up()  # mid-greeting
    await wait_for(lambda: _ended(app, sid), 30)
    (greeting,) = await app.store.list_turns(sid)
    # What was spoken before the hang-up, marked interrupted (the greeting runs ~10 s).
    assert greeting.role == "bot" and greeting.interrupted is True, greeting
    assert greeting.text.strip(), greeting
