"""Phone webhooks in-process (fake supervisor): proxies, configuration, refusals by voice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from xml.etree import ElementTree

import pytest

from testkit.api_support import Api, make_api
from testkit.phone_support import twilio_form

TOKEN = "proxy-test-token"
PUBLIC = "https://tutor.example.com"
VOICE = "/api/v1/phone/twilio/voice"


@pytest.fixture
async def phone_api(sqlite_url, tmp_path) -> AsyncIterator[Api]:
    async for api in make_api(
        sqlite_url, tmp_path, twilio_auth_token=TOKEN, phone_public_url=PUBLIC
    ):
        yield api


async def _post(api: Api, params: dict[str, str], signed_url: str):
    body, headers = twilio_form(signed_url, params, TOKEN)
    return await api.client.post(VOICE, content=body, headers=headers)


async def test_behind_a_proxy_the_public_url_is_signed_and_handed_out(phone_api):
    params = {"CallSid": "CA1", "From": "+15550009999", "To": "+15550001000"}
    r = await _post(phone_api, params, "http://test" + VOICE)  # the URL the app sees
    assert r.status_code == 403
    r = await _post(phone_api, params, PUBLIC + VOICE)  # the URL Twilio called
    assert r.status_code == 200, r.text
    gather = ElementTree.fromstring(r.text).find("./Gather")
    assert gather is not None
    assert gather.attrib["action"] == PUBLIC + "/api/v1/phone/twilio/menu"
    prompt = gather.findtext("Say") or ""
    assert "German tutor, Lena, press 1" in prompt and "checkride examiner" in prompt


async def test_a_runtime_that_cannot_take_calls_says_so_and_hangs_up(phone_api):
    key = await phone_api.store.authenticate(phone_api.key_a)
    assert key is not None
    await phone_api.store.create_learner(key.id, "Pat", "en", phone="+15550002000")
    params = {"CallSid": "CA2", "From": "+15550002000", "To": "+15550001000"}
    r = await _post(phone_api, params, PUBLIC + VOICE)
    assert r.status_code == 200
    root = ElementTree.fromstring(r.text)
    assert [el.tag for el in root] == ["Say", "Hangup"]
    assert "cannot take calls" in (root.findtext("Say") or "")
    assert phone_api.sup.calls == []  # no session process was asked for


async def test_a_webhook_without_a_call_id_is_invalid(phone_api):
    params = {"From": "+15550002000", "To": "+15550001000"}
    r = await _post(phone_api, params, PUBLIC + VOICE)
    assert (r.status_code, r.json()["error"]) == (422, "invalid_request")


@pytest.fixture
async def unconfigured(sqlite_url, tmp_path, monkeypatch) -> AsyncIterator[Api]:
    for name in (
        "TWILIO_AUTH_TOKEN",
        "VOXTUTOR_TWILIO_AUTH_TOKEN",
        "TELNYX_PUBLIC_KEY",
        "VOXTUTOR_TELNYX_PUBLIC_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    async for api in make_api(sqlite_url, tmp_path):
        yield api


async def test_carriers_without_their_secret_are_unavailable(unconfigured):
    for carrier in ("twilio", "telnyx"):
        r = await unconfigured.client.post(f"/api/v1/phone/{carrier}/voice", content=b"CallSid=x")
        assert (r.status_code, r.json()["error"]) == (503, "transport_unavailable"), carrier


@pytest.fixture
async def line_api(sqlite_url, tmp_path) -> AsyncIterator[Api]:
    lines = {"+15550001000": {"persona": "aviation-examiner", "tier": "local"}}
    async for api in make_api(
        sqlite_url,
        tmp_path,
        twilio_auth_token=TOKEN,
        phone_public_url=PUBLIC,
        phone_lines=lines,
        max_sessions=5,
    ):
        api.sup.ready_info = lambda _sid: {"phone_url": "ws://127.0.0.1:9/session"}  # type: ignore[attr-defined]
        yield api


def _stream(twiml: str) -> str:
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    return stream.attrib["url"]


async def test_a_replayed_webhook_gets_the_same_answer_and_no_second_session(line_api):
    params = {"CallSid": "CA" + "7" * 32, "From": "+15550003000", "To": "+15550001000"}
    first = await _post(line_api, params, PUBLIC + VOICE)
    again = await _post(line_api, params, PUBLIC + VOICE)
    assert first.status_code == again.status_code == 200
    assert _stream(first.text) == _stream(again.text)
    assert [c[0] for c in line_api.sup.calls] == ["spawn"]


async def test_callers_who_withhold_their_number_share_one_guest_per_line(line_api):
    from contracts.assessment import AcsGrade, Assessment

    sessions = []
    for n in range(2):
        params = {"CallSid": f"CA{n}" + "8" * 31, "From": "anonymous", "To": "+15550001000"}
        r = await _post(line_api, params, PUBLIC + VOICE)
        assert r.status_code == 200 and _stream(r.text)
        sid = line_api.sup.calls[-1][1].session_id
        sessions.append(sid)
        if n == 0:  # the first caller got an answer wrong, then hung up
            grade = AcsGrade("PA.I.A.1", "PA.I.A", "Q?", "unsatisfactory", ("x",), "ref", "src")
            wrong = Assessment(kind="acs", text="no idea", grade=grade)
            await line_api.store.add_assessment(sid, wrong.to_dict(), 1)
            await line_api.sup.end(sid, "caller hung up")
    learners = {(await line_api.store.get_session(s)).learner_id for s in sessions}  # type: ignore[union-attr]
    assert len(learners) == 1
    # A shared guest's history is other callers': no session starts from it.
    memory = line_api.sup.calls[-1][1].memory
    assert memory["returning"] is False and not memory["review"] and memory["name"] is None
