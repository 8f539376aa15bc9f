"""WebRTC signalling accepts only public ICE candidates (unless allowed) and bounded SDP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.ice import candidate_address, candidate_allowed, filter_offer
from testkit.api_support import GOOD_SDP, Api, assert_error, make_api


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[Api]:
    """The API as in production: only public candidates; a body limit large enough for SDP."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'v.db'}"
    async for api in make_api(
        url, tmp_path, webrtc_private_candidates=False, max_body_bytes=1_000_000
    ):
        yield api


def cand(address: str) -> dict[str, object]:
    return {"candidate": f"candidate:1 1 udp 2122260223 {address} 54321 typ host", "sdp_mid": "0"}


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("192.168.0.7", False),
        ("169.254.1.1", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("f0e1d2c3.local", False),
    ],
)
def test_only_global_unicast_addresses_are_allowed(address: str, allowed: bool) -> None:
    line = str(cand(address)["candidate"])
    assert candidate_address(line) == address
    assert candidate_allowed(line, allow_private=False) is allowed
    assert candidate_allowed(line, allow_private=True)
    assert not candidate_allowed("candidate:garbage", allow_private=True)


async def test_a_loopback_candidate_is_refused_and_a_public_one_passes(strict: Api) -> None:
    s = await strict.session()
    url, token = s["connect"]["offer_url"], s["connect"]["token"]
    r = await strict.client.post(
        url, headers={"Authorization": f"Bearer {token}"}, json={"sdp": GOOD_SDP, "type": "offer"}
    )
    assert r.status_code == 200, r.text
    bad = {"pc_id": "pc-1", "candidates": [cand("8.8.8.8"), cand("127.0.0.1")]}
    r = await strict.client.patch(url, headers={"Authorization": f"Bearer {token}"}, json=bad)
    assert_error(r, 422, "candidate_refused")
    assert strict.sup.calls[-1][0] == "offer"  # nothing reached the session
    good = {"pc_id": "pc-1", "candidates": [cand("8.8.8.8"), {"candidate": "", "sdp_mid": "0"}]}
    r = await strict.client.patch(url, headers={"Authorization": f"Bearer {token}"}, json=good)
    assert r.status_code == 200 and strict.sup.calls[-1][0] == "ice"
    many = {"pc_id": "pc-1", "candidates": [cand("8.8.8.8")] * 21}
    assert (
        await strict.client.patch(url, headers={"Authorization": f"Bearer {token}"}, json=many)
    ).status_code == 422


async def test_an_offers_private_candidates_are_left_out_and_a_huge_sdp_is_refused(
    strict: Api,
) -> None:
    s = await strict.session()
    url, token = s["connect"]["offer_url"], s["connect"]["token"]
    sdp = (
        GOOD_SDP
        + "a=candidate:1 1 udp 2122260223 192.168.1.5 5000 typ host\r\n"
        + "a=candidate:2 1 udp 1686052607 8.8.8.8 5000 typ srflx raddr 0.0.0.0 rport 0\r\n"
    )
    r = await strict.client.post(
        url, headers={"Authorization": f"Bearer {token}"}, json={"sdp": sdp, "type": "offer"}
    )
    assert r.status_code == 200, r.text
    sent = strict.sup.calls[-1][1][1]["sdp"]
    assert "192.168.1.5" not in sent and "8.8.8.8" in sent
    huge = {"sdp": "v=0\r\n" + "ž" * 100_000, "type": "offer"}
    r = await strict.client.post(url, headers={"Authorization": f"Bearer {token}"}, json=huge)
    assert r.status_code == 422 and "20000" in r.text.replace(",", ""), r.text
    kept, dropped = filter_offer("a=candidate:9 1 udp 1 127.0.0.1 1 typ host\r\n", True)
    assert dropped == 0 and "127.0.0.1" in kept
