"""Phone pieces without the server: signatures, media-stream checks, the 8 kHz audio path."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncGenerator

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pipecat.frames.frames import EndFrame, Frame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.workers.runner import WorkerRunner
from starlette.datastructures import URL

import transports.phone as phone
from api.phone_auth import (
    SignatureError,
    form_params,
    public_url,
    telnyx_public_key,
    verify_telnyx,
    verify_twilio,
)
from api.phone_stream import StreamError, StreamStart, check_message, check_start, parse
from config.personas import load_persona
from config.settings import Settings
from pipelines.session import build_session
from pipelines.turn_taking import phone_turn_strategies
from testkit.fakes import FakeLLM, FakeTTS, ScriptedTransport
from testkit.phone_support import CarrierCall, form, telnyx_headers, twilio_signature, ulaw_decode

TOKEN = "12345"
URL_ = "https://tutor.example.com/api/v1/phone/twilio/voice"
PARAMS = {"CallSid": "CA1", "From": "+15550002000", "To": "+15550001000", "Digits": "3"}


# -- signatures --------------------------------------------------------------------------


def test_twilio_signature_of_the_documented_algorithm_verifies():
    verify_twilio(URL_, form_params(form(PARAMS)), twilio_signature(URL_, PARAMS, TOKEN), TOKEN)


@pytest.mark.parametrize(
    ("url", "params", "token"),
    [
        (URL_, {**PARAMS, "From": "+15550009999"}, TOKEN),  # a parameter changed
        (URL_.replace("voice", "menu"), PARAMS, TOKEN),  # another URL
        (URL_, PARAMS, "another-token"),
    ],
)
def test_twilio_signature_over_other_content_or_key_is_refused(url, params, token):
    signature = twilio_signature(url, params, token)
    with pytest.raises(SignatureError, match="does not match"):
        verify_twilio(URL_, form_params(form(PARAMS)), signature, TOKEN)


def test_twilio_request_without_signature_is_refused():
    with pytest.raises(SignatureError, match="no X-Twilio-Signature"):
        verify_twilio(URL_, form_params(form(PARAMS)), None, TOKEN)


def test_public_url_replaces_scheme_and_host_and_keeps_the_query():
    url = URL("http://10.0.0.5:8080/api/v1/phone/twilio/voice?x=1")
    assert public_url(url, "https://tutor.example.com/") == URL_ + "?x=1"
    assert public_url(url, None) == str(url)


@pytest.fixture(scope="module")
def telnyx_keys():
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, telnyx_public_key(base64.b64encode(raw).decode())


def test_telnyx_signature_verifies(telnyx_keys):
    private, public = telnyx_keys
    body = form(PARAMS)
    h = telnyx_headers(body, private)
    verify_telnyx(body, h["telnyx-signature-ed25519"], h["telnyx-timestamp"], public)


@pytest.mark.parametrize("case", ["tampered", "other_key", "old", "future", "missing", "garbage"])
def test_telnyx_bad_signatures_are_refused(telnyx_keys, case):
    private, public = telnyx_keys
    body = form(PARAMS)
    signer = Ed25519PrivateKey.generate() if case == "other_key" else private
    at = {"old": time.time() - 301, "future": time.time() + 301}.get(case)
    h = telnyx_headers(body, signer, at)
    sig, ts = h["telnyx-signature-ed25519"], h["telnyx-timestamp"]
    if case == "tampered":
        body = body.replace(b"Digits=3", b"Digits=1")
    if case == "missing":
        sig = None
    if case == "garbage":
        sig = "not base64!"
    with pytest.raises(SignatureError):
        verify_telnyx(body, sig, ts, public)


def test_a_telnyx_public_key_that_is_not_base64_is_a_configuration_error():
    with pytest.raises(ValueError, match="base64"):
        telnyx_public_key("not a key!")


# -- media-stream messages ---------------------------------------------------------------


def _call(carrier: str) -> CarrierCall:
    return CarrierCall(carrier, "ws://unused", "CALL-1", stream_id="S1")


@pytest.mark.parametrize("carrier", ["twilio", "telnyx"])
def test_a_well_formed_stream_passes_its_checks(carrier):
    call = _call(carrier)
    start = check_start(carrier, parse(call.start_message()), "CALL-1")
    assert start == StreamStart("S1", "CALL-1")
    assert check_message(carrier, parse(call.media_message(b"\xff" * 160)), start) == "media"
    assert check_message(carrier, parse(call.stop_message()), start) == "stop"
    assert check_message(carrier, parse(json.dumps({"event": "telemetry"})), start) is None


@pytest.mark.parametrize("carrier", ["twilio", "telnyx"])
@pytest.mark.parametrize(
    ("encoding", "rate"), [("audio/x-l16", 8000), ("PCMA", 8000), (None, 16000)]
)
def test_a_stream_in_another_codec_is_refused(carrier, encoding, rate):
    with pytest.raises(StreamError, match="unsupported codec") as e:
        check_start(carrier, parse(_call(carrier).start_message(encoding, rate)), "CALL-1")
    assert e.value.code == 1003


@pytest.mark.parametrize("carrier", ["twilio", "telnyx"])
def test_a_stream_of_another_call_or_out_of_order_is_refused(carrier):
    call = _call(carrier)
    with pytest.raises(StreamError, match="another call") as e:
        check_start(carrier, parse(call.start_message()), "CALL-2")
    assert e.value.code == 1008
    with pytest.raises(StreamError, match="out of order"):
        check_start(carrier, parse(call.media_message(b"\xff" * 160)), "CALL-1")
    start = StreamStart("S1", "CALL-1")
    with pytest.raises(StreamError, match="out of order"):
        check_message(carrier, parse(call.start_message()), start)
    with pytest.raises(StreamError, match="another stream"):
        check_message(carrier, parse(_call(carrier).media_message(b"\xff")), StreamStart("S2", "C"))


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "[1, 2]",
        '{"event": 5}',
        '{"event": "media", "media": {"payload": "%%%"}}',
        '{"event": "media", "media": {}}',
        '{"event": "dtmf", "dtmf": {"digit": "x"}}',
        "x" * 20000,
    ],
)
def test_malformed_messages_are_refused(text):
    with pytest.raises(StreamError) as e:
        check_message("twilio", parse(text), StreamStart("S1", "CALL-1"))
    assert e.value.code in (1007, 1009)


# -- the 8 kHz audio path ----------------------------------------------------------------


class ToneTTS(TTSService):
    """One second of 440 Hz tone at 24 kHz per text, in 40 ms chunks (no resampling)."""

    def __init__(self) -> None:
        super().__init__(
            sample_rate=24000,
            push_start_frame=True,
            push_stop_frames=True,
            stop_frame_timeout_s=0.2,
            settings=TTSSettings(model=None, voice=None, language=None),
        )

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        t = np.arange(24000) / 24000
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        for chunk in np.split(tone, 25):
            yield TTSAudioRawFrame(chunk.tobytes(), 24000, 1, context_id=context_id)


async def _tone_over_the_wire() -> float:
    """Play ToneTTS through the phone endpoint; seconds of tone the caller received."""
    runner = WorkerRunner(handle_sigint=False)
    box: dict[str, PipelineWorker] = {}

    async def on_call(transport: phone.BaseTransport) -> None:
        pipeline = Pipeline([transport.input(), ToneTTS(), transport.output()])
        box["w"] = PipelineWorker(
            pipeline, params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=24000)
        )
        await runner.add_workers(box["w"])
        box["task"] = asyncio.create_task(runner.run())  # type: ignore[assignment]

    endpoint = phone.PhoneEndpoint("twilio", Settings(), on_call)
    call = CarrierCall("twilio", await endpoint.start(), "CA1")
    await call.start()
    for _ in range(200):
        if "w" in box:
            break
        await asyncio.sleep(0.05)
    frames: list[Frame] = [TTSSpeakFrame("tone")]
    await box["w"].queue_frames(frames)
    await asyncio.sleep(2.5)  # 1 s of tone, then over 0.2 s of quiet
    await box["w"].queue_frames([EndFrame()])
    await call.wait_closed(20)
    await endpoint.close()
    await call.aclose()
    pcm = ulaw_decode(b"".join(b for _, b in call.media))
    loud = np.flatnonzero(np.abs(pcm) > 1000)
    return (loud[-1] - loud[0] + 1) / 8000 if len(loud) else 0.0


async def test_every_sample_of_the_bots_utterance_reaches_the_caller_at_8khz():
    assert await _tone_over_the_wire() == pytest.approx(1.0, abs=0.005)  # 0.9999 s measured


async def test_resampling_in_the_serializer_instead_would_cut_the_tail(monkeypatch):
    # Why the transport resamples, as a control: the same pipeline with the transport at 24 kHz
    # leaves resampling to the serializer, whose stream resampler keeps the last tens of ms.
    monkeypatch.setattr(phone, "WIRE_SAMPLE_RATE", None)
    assert await _tone_over_the_wire() < 0.98  # 0.962 s measured


async def test_phone_sessions_are_built_without_rtvi(monkeypatch):
    """A phone has no RTVI client: the endpoint asks for a session without RTVI."""
    calls: dict = {}

    class Endpoint:
        def __init__(self, carrier, settings, on_call):
            calls["on_call"] = on_call

        async def start(self):
            pass

    monkeypatch.setattr(phone, "PhoneEndpoint", Endpoint)
    persona = load_persona("aviation-examiner")
    sessions = []

    async def on_connection(transport, **kwargs):
        sessions.append(
            build_session(
                persona,
                stt=IdentityFilter(),
                llm=FakeLLM("Hi."),
                tts=FakeTTS(),
                transport=transport,
                settings=Settings(),
                **kwargs,
            )
        )

    await phone.start_phone_endpoint(
        "twilio", phone_turn_strategies(persona, Settings()), Settings(), on_connection
    )
    await calls["on_call"](ScriptedTransport())
    [session] = sessions
    with pytest.raises(Exception, match="RTVI is not enabled"):
        session.worker.rtvi  # noqa: B018
    browser = build_session(
        persona,
        stt=IdentityFilter(),
        llm=FakeLLM("Hi."),
        tts=FakeTTS(),
        transport=ScriptedTransport(),
        settings=Settings(),
    )
    assert browser.worker.rtvi is not None
