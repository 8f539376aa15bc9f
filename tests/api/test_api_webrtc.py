"""The HTTP API's WebRTC signalling, authorised by the per-session token.

Each test runs against a real store, a SQLite file and a fresh PostgreSQL database
(``api`` fixture), or SQLite only for the HTTP layer (``lite``); the session runtime is
``testkit.api_support.FakeSupervisor``.
"""

from __future__ import annotations

from testkit.api_support import GOOD_SDP, V1, Api, assert_error

# -- WebRTC signalling ----------------------------------------------------------------------


async def test_offer_and_ice_with_the_session_token(api: Api) -> None:
    s = await api.session()
    sid, token = s["session_id"], s["connect"]["token"]
    url = s["connect"]["offer_url"]
    offer = {"sdp": GOOD_SDP, "type": "offer"}
    r = await api.client.post(url, headers={"Authorization": f"Bearer {token}"}, json=offer)
    assert r.status_code == 200, r.text
    assert r.json() == {"sdp": "v=0\r\nanswer", "type": "answer", "pc_id": "pc-1"}
    kind, (called_sid, sent) = api.sup.calls[-1]
    assert kind == "offer" and called_sid == sid
    assert sent == {"sdp": GOOD_SDP, "type": "offer", "pc_id": None, "restart_pc": False}
    assert (await api.store.get_session(sid)).status == "active"  # type: ignore[union-attr]
    # Renegotiation with the bearer form, a pc_id and Pipecat's requestData.
    again = {**offer, "pc_id": "pc-1", "restart_pc": True, "requestData": {"x": 1}}
    r = await api.client.post(url, json=again, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["pc_id"] == "pc-1"
    assert api.sup.calls[-1][1][1]["restart_pc"] is True
    patch = {
        "pc_id": "pc-1",
        "candidates": [
            {
                "candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host",
                "sdp_mid": "0",
                "sdp_mline_index": 0,
            }
        ],
    }
    r = await api.client.patch(url, headers={"Authorization": f"Bearer {token}"}, json=patch)
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert api.sup.calls[-1] == ("ice", (sid, patch))


async def test_offer_auth_409_and_400(api: Api) -> None:
    s = await api.session()
    sid, token, url = s["session_id"], s["connect"]["token"], s["connect"]["offer_url"]
    offer = {"sdp": GOOD_SDP, "type": "offer"}
    assert_error(await api.client.post(url, json=offer), 401, "unauthorized")
    other = (await api.session())["connect"]["token"]
    for bad in (other, "x" * 43, "not a token!"):
        assert_error(
            await api.client.post(url, headers={"Authorization": f"Bearer {bad}"}, json=offer),
            403,
            "forbidden",
        )
    # The API key is not the session token.
    assert_error(await api.client.post(url, json=offer, headers=api.a), 403)
    unknown = f"{V1}/sessions/00000000-0000-4000-8000-000000000000/offer"
    assert_error(
        await api.client.post(unknown, headers={"Authorization": f"Bearer {token}"}, json=offer),
        403,
    )
    assert_error(
        await api.client.post(
            f"{V1}/sessions/x/offer", headers={"Authorization": f"Bearer {token}"}, json=offer
        ),
        403,
    )
    # Malformed SDP: the process refuses it → 400 with its message.
    r = await api.client.post(
        url, headers={"Authorization": f"Bearer {token}"}, json={"sdp": "garbage", "type": "offer"}
    )
    assert "malformed SDP" in assert_error(r, 400, "bad_offer")["message"]
    assert api.metric('voxtutor_errors_total{kind="bad_offer"} ') == 1
    # Invalid bodies never reach the process.
    calls = len(api.sup.calls)
    for body in (
        {"sdp": GOOD_SDP, "type": "answer"},
        {"sdp": "", "type": "offer"},
        {"sdp": GOOD_SDP},
        {**offer, "extra": 1},
    ):
        assert_error(
            await api.client.post(url, headers={"Authorization": f"Bearer {token}"}, json=body), 422
        )
    assert len(api.sup.calls) == calls
    # Ended session → 409, for the offer and for ICE.
    await api.client.delete(f"{V1}/sessions/{sid}", headers=api.a)
    r = await api.client.post(url, headers={"Authorization": f"Bearer {token}"}, json=offer)
    assert "ended" in assert_error(r, 409, "session_not_running")["message"]
    patch = {"pc_id": "pc-1", "candidates": []}
    assert_error(
        await api.client.patch(url, headers={"Authorization": f"Bearer {token}"}, json=patch), 409
    )


async def test_offer_for_a_live_session_without_process_is_409(api: Api) -> None:
    s = await api.session()
    api.sup.running.pop(s["session_id"])  # died; the supervisor has not recorded it yet
    r = await api.client.post(
        s["connect"]["offer_url"],
        headers={"Authorization": f"Bearer {s['connect']['token']}"},
        json={"sdp": GOOD_SDP, "type": "offer"},
    )
    assert_error(r, 409, "session_not_running")


async def test_the_session_token_is_refused_in_the_url(api: Api) -> None:
    s = await api.session()
    url, token = s["connect"]["offer_url"], s["connect"]["token"]
    r = await api.client.post(url, params={"token": token}, json={"sdp": GOOD_SDP, "type": "offer"})
    assert_error(r, 401, "unauthorized")
    assert "never in the URL" in r.json()["message"]
    assert token not in url
