"""What a learner does, run against any deployment: the scaled-out one and the default.

Each scenario creates its session through one base URL and connects through another (the
same one for the single-process default), with real speech: aiortc as the browser, or a
protocol-level Twilio media stream.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription

from testkit.phone_app import KNOWN_CALLER, LINE, TWILIO_TOKEN, wait_for
from testkit.phone_support import (
    CarrierCall,
    speech_onset,
    stream_url,
    twilio_form,
    ulaw_decode,
    ulaw_encode,
)
from testkit.webrtc_peer import SpeechTrack
from tests.cluster.conftest import Cluster
from transports.file import load_learner_audio


async def learner_spoke(cluster: Cluster, session_id: str, timeout_s: float = 120) -> str:
    """Wait for a learner turn and a bot reply after it; return the learner's text."""
    deadline = time.monotonic() + timeout_s
    roles: list[str] = []
    while time.monotonic() < deadline:
        turns = await cluster.store.list_turns(session_id)
        roles = [t.role for t in turns]
        if "learner" in roles and roles[-1] == "bot" and roles.index("learner") < len(roles) - 1:
            return next(t.text for t in turns if t.role == "learner")
        await asyncio.sleep(0.5)
    raise AssertionError(f"no learner turn and reply within {timeout_s} s: {roles}")


async def webrtc_call(cluster: Cluster, create_on: str, offer_to: str, clip) -> str:
    """Create a session through ``create_on``, offer through ``offer_to``; speak ``clip``.

    Returns the session id once the learner's speech was transcribed and answered.
    """
    body = await cluster.create_session(create_on)
    sid, connect = body["session_id"], body["connect"]
    pcm = np.repeat(load_learner_audio(clip, 16000), 3)  # 16 kHz → 48 kHz
    pc = RTCPeerConnection()
    pc.addTrack(SpeechTrack(pcm, delay_s=8.0))
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with httpx.AsyncClient(base_url=offer_to, timeout=60) as http:
            r = await http.post(
                connect["offer_url"],
                headers={"Authorization": f"Bearer {connect['token']}"},
                json={"sdp": pc.localDescription.sdp, "type": "offer"},
            )
            assert r.status_code == 200, r.text
            await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
        text = await learner_spoke(cluster, sid)
        assert "disposed" in text.lower() or "young man" in text.lower(), text
    finally:
        await pc.close()
    return sid


async def twilio_call(cluster: Cluster, webhook_to: str, stream_to: str, clip) -> str:
    """A Twilio call whose webhook reaches ``webhook_to`` and media stream ``stream_to``.

    The caller (:data:`KNOWN_CALLER`) hears the greeting, speaks ``clip``, hears the reply;
    then the session is ended through the API and the call hung up. Returns the session id.
    """
    call_sid = "CA" + str(time.time_ns())[-32:].rjust(32, "0")
    params = {"CallSid": call_sid, "From": KNOWN_CALLER, "To": LINE}
    path = "/api/v1/phone/twilio/voice"
    async with httpx.AsyncClient(base_url=webhook_to, timeout=120) as http:
        body, headers = twilio_form(webhook_to + path, params, TWILIO_TOKEN)
        r = await http.post(path, content=body, headers=headers)
    assert r.status_code == 200, r.text
    url = stream_url(r.text)
    # The carrier's socket lands on the other replica (its load balancer's choice).
    url = url.replace(webhook_to.replace("http", "ws"), stream_to.replace("http", "ws"))
    assert url.startswith(stream_to.replace("http", "ws")), url
    rows, _ = await cluster.store.list_sessions(
        cluster.learner.owner_key_id, cluster.learner.id, None, 1, 0
    )
    sid = rows[0].id
    pcm = load_learner_audio(clip, 8000)
    call = CarrierCall("twilio", url, call_sid)
    await call.start()
    try:
        await wait_for(lambda: _true(call.audio_after(0) >= 8000), 60)  # 1 s of greeting
        await asyncio.sleep(6)  # let the greeting finish
        spoke_at = time.monotonic()
        call.speak(ulaw_encode(pcm), speech_onset(pcm))
        await asyncio.wait_for(call.speech_done.wait(), 30)
        text = await learner_spoke(cluster, sid)
        assert "disposed" in text.lower() or "young man" in text.lower(), text
        await wait_for(lambda: _true(call.audio_after(spoke_at) >= 8000), 30)
        reply = b"".join(b for at, b in call.media if at > spoke_at)
        assert np.abs(ulaw_decode(reply)).max() > 1000, "the reply is silence"

        # Ended through the API while the call is up, once the reply has been spoken: the
        # goodbye, then the replica holding the carrier's socket hangs the call up (Twilio
        # REST) and closes it.
        await wait_for(lambda: _true(call.audio_after(time.monotonic() - 2.0) == 0), 90)
        await cluster.end_session(webhook_to, sid)
        await call.wait_closed(60)
        assert (call.close_code, call.close_reason) == (1000, "session ended")
        hangups = [h.body for h in cluster.twilio.served("hangup")]
        assert {"call_sid": call_sid, "Status": "completed"} in hangups, hangups
    finally:
        await call.aclose()
    return sid


async def _true(value: bool) -> bool:
    return value
