"""Proving a phone number (``/api/v1/learners/{id}/phone``) against loopback carrier fakes.

The server calls the number through Twilio's (or Telnyx's) REST API with the code in inline
TwiML/TeXML; the fakes record the call, and the tests read the code from what the carrier
was asked to say, as the person answering the phone would hear it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from store.models import PhoneVerification, utcnow
from store.phone_identity import MAX_ATTEMPTS
from testkit.api_support import V1, Api, assert_error, make_api
from testkit.providers.telnyx_fake import TelnyxFake
from testkit.providers.twilio_fake import TwilioFake

SID, TOKEN = "AC" + "0" * 32, "twilio-auth-token-for-tests"
LINE = "+15550001000"
NUMBER = "+420601123456"


@pytest.fixture
async def twilio(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TwilioFake]:
    async with TwilioFake(SID, TOKEN) as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
        monkeypatch.setenv("VOXTUTOR_TWILIO_API_BASE_URL", fake.http_url)
        yield fake


@pytest.fixture
async def papi(twilio: TwilioFake, db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async for a in make_api(db_url, tmp_path, phone_lines={LINE: {"tier": "local"}}):
        yield a


def heard(call: Any) -> str:
    """The code a call read out (digits separated by commas in ``<Say>``)."""
    words = call.body.get("Twiml") or call.body.get("Texml")
    said = re.findall(r"code is: ([0-9](?:, [0-9])*)\.", words)
    assert len(said) == 2 and said[0] == said[1], words  # read twice
    return str(said[0].replace(", ", ""))


async def claim(api: Api, learner_id: str, headers: dict[str, str] | None = None) -> Any:
    return await api.client.post(
        f"{V1}/learners/{learner_id}/phone", json={"phone": NUMBER}, headers=headers or api.a
    )


async def enter(api: Api, learner_id: str, code: str, headers: dict[str, str] | None = None) -> Any:
    return await api.client.post(
        f"{V1}/learners/{learner_id}/phone/verify",
        json={"code": code},
        headers=headers or api.a,
    )


async def test_a_number_is_the_learners_only_after_the_code_called_to_it(
    papi: Api, twilio: TwilioFake
) -> None:
    lid = await papi.learner()
    r = await claim(papi, lid)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "calling" and r.json()["phone"] == NUMBER
    (call,) = twilio.served("call")
    assert (call.body["To"], call.body["From"]) == (NUMBER, LINE)
    code = heard(call)
    assert code not in r.text
    # Claimed but not proved: not the learner's, calls from it find nobody.
    assert (await papi.client.get(f"{V1}/learners/{lid}", headers=papi.a)).json()["phone"] is None
    assert await papi.store.find_learner_by_phone(NUMBER) is None
    wrong = "000000" if code != "000000" else "111111"
    assert_error(await enter(papi, lid, wrong), 422, "invalid_code")
    r = await enter(papi, lid, code)
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == NUMBER
    found = await papi.store.find_learner_by_phone(NUMBER)
    assert found is not None and found.id == lid
    assert_error(await enter(papi, lid, code), 422, "invalid_code")  # used up
    # Unlinking: calls from it no longer reach the learner.
    r = await papi.client.delete(f"{V1}/learners/{lid}/phone", headers=papi.a)
    assert r.status_code == 204
    assert await papi.store.find_learner_by_phone(NUMBER) is None


async def test_a_claim_on_a_known_number_gets_the_same_answer_and_takes_nothing(
    papi: Api, twilio: TwilioFake
) -> None:
    owner = await papi.learner()
    code = (await claim(papi, owner), heard(twilio.served("call")[-1]))[1]
    assert (await enter(papi, owner, code)).status_code == 200
    # Another key claims the same number: no 409, no hint; the call goes to the real phone.
    intruder = await papi.learner(papi.b)
    r = await claim(papi, intruder, papi.b)
    assert r.status_code == 202 and set(r.json()) == {"status", "phone", "expires_at"}
    # Without the code the call read, nothing: not the owner's code, not guesses.
    assert_error(await enter(papi, intruder, code, papi.b), 422, "invalid_code")
    found = await papi.store.find_learner_by_phone(NUMBER)
    assert found is not None and found.id == owner
    # Someone of key A may not touch key B's learner at all.
    assert_error(await enter(papi, intruder, code), 404)


async def test_within_a_key_the_learner_who_proves_the_number_gets_it(
    papi: Api, twilio: TwilioFake
) -> None:
    first, second = await papi.learner(name="First"), await papi.learner(name="Second")
    await claim(papi, first)
    assert (await enter(papi, first, heard(twilio.served("call")[-1]))).status_code == 200
    await claim(papi, second)
    assert (await enter(papi, second, heard(twilio.served("call")[-1]))).status_code == 200
    got = (await papi.client.get(f"{V1}/learners/{first}", headers=papi.a)).json()
    assert got["phone"] is None
    found = await papi.store.find_learner_by_phone(NUMBER)
    assert found is not None and found.id == second


async def test_codes_are_rate_limited_spent_by_wrong_guesses_and_expire(
    papi: Api, twilio: TwilioFake
) -> None:
    lid = await papi.learner()
    assert (await claim(papi, lid)).status_code == 202
    r = await claim(papi, lid)
    assert_error(r, 429, "too_soon")
    assert 0 < int(r.headers["Retry-After"]) <= 60
    assert len(twilio.served("call")) == 1  # no second paid call
    code = heard(twilio.served("call")[-1])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(MAX_ATTEMPTS):
        assert_error(await enter(papi, lid, wrong), 422, "invalid_code")
    assert_error(await enter(papi, lid, code), 422, "invalid_code")  # spent
    # A fresh code (the old one made long ago) that has expired is refused as well.
    async with papi.store._tx() as s:
        await s.execute(
            update(PhoneVerification).values(created_at=utcnow() - timedelta(minutes=30))
        )
    assert (await claim(papi, lid)).status_code == 202
    code = heard(twilio.served("call")[-1])
    async with papi.store._tx() as s:
        await s.execute(update(PhoneVerification).values(expires_at=utcnow()))
    assert_error(await enter(papi, lid, code), 422, "invalid_code")
    assert await papi.store.find_learner_by_phone(NUMBER) is None


async def test_concurrent_guesses_each_spend_an_attempt(papi: Api, twilio: TwilioFake) -> None:
    lid = await papi.learner()
    assert (await claim(papi, lid)).status_code == 202
    code = heard(twilio.served("call")[-1])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answers = await asyncio.gather(*(enter(papi, lid, wrong) for _ in range(2 * MAX_ATTEMPTS)))
    assert {r.status_code for r in answers} == {422}
    assert_error(await enter(papi, lid, code), 422, "invalid_code")  # all spent


async def test_a_refused_call_answers_502_and_does_not_hold_back_a_retry(
    papi: Api, twilio: TwilioFake
) -> None:
    lid = await papi.learner()
    twilio.refuse_calls = True
    r = await claim(papi, lid)
    assert_error(r, 502, "call_failed")
    assert TOKEN not in r.text
    twilio.refuse_calls = False
    assert (await claim(papi, lid)).status_code == 202


async def test_verification_calls_per_key_are_limited(
    twilio: TwilioFake, sqlite_url: str, tmp_path: Path
) -> None:
    extra = {"phone_lines": {LINE: {"tier": "local"}}, "phone_verify_calls_per_key": "2/day"}
    async for api in make_api(sqlite_url, tmp_path, **extra):
        for _ in range(2):
            assert (await claim(api, await api.learner())).status_code == 202
        r = await claim(api, await api.learner())
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) > 0
        assert len(twilio.served("call")) == 2  # no third paid call


@pytest.mark.parametrize("body", [{"phone": "12345"}, {"phone": "+0420601123"}, {}, {"phone": 5}])
async def test_bad_numbers_and_codes_answer_422(papi: Api, body: dict[str, Any]) -> None:
    lid = await papi.learner()
    assert_error(
        await papi.client.post(f"{V1}/learners/{lid}/phone", json=body, headers=papi.a), 422
    )
    assert_error(await enter(papi, lid, "12ab56"), 422, "invalid_request")


async def test_without_a_carrier_numbers_cannot_be_proved(sqlite_url: str, tmp_path: Path) -> None:
    async for api in make_api(sqlite_url, tmp_path):
        lid = await api.learner()
        assert_error(await claim(api, lid), 503, "phone_unavailable")


async def test_telnyx_places_the_call_when_twilio_is_not_configured(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with TelnyxFake("telnyx-key-for-tests") as telnyx:
        monkeypatch.setenv("TELNYX_API_KEY", "telnyx-key-for-tests")
        monkeypatch.setenv("TELNYX_TEXML_CONNECTION_ID", "texml-app-1")
        extra = {"telnyx_api_base_url": telnyx.http_url, "phone_verify_from": "+15550009999"}
        async for api in make_api(sqlite_url, tmp_path, **extra):
            lid = await api.learner()
            assert (await claim(api, lid)).status_code == 202
            (call,) = telnyx.served("call")
            assert call.body["connection_id"] == "texml-app-1"
            assert (call.body["To"], call.body["From"]) == (NUMBER, "+15550009999")
            assert (await enter(api, lid, heard(call))).status_code == 200
