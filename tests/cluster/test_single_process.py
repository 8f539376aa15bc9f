"""The same calls on the single-process default, with no NATS server anywhere in it.

``voxtutor serve`` without ``VOXTUTOR_NATS_URL`` runs the sessions itself; the scenarios of
``test_scale_out.py`` (a browser over WebRTC, a Twilio media stream, real speech) pass with
no broker started for it and none configured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.cluster.conftest import Cluster, deployment
from tests.cluster.scenarios import twilio_call, webrtc_call

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def single(tmp_path_factory) -> AsyncIterator[Cluster]:
    """One ``voxtutor serve`` of the embedded default (no ``VOXTUTOR_NATS_URL``)."""
    async with deployment(tmp_path_factory.mktemp("single"), scaled_out=False) as c:
        assert "VOXTUTOR_NATS_URL" not in c.env and not c.hosts
        yield c


@pytest.fixture(scope="module")
def clip(librivox):
    """LibriVox "he was not an ill disposed young man"."""
    return next(p for p in librivox if "0880" in p.name)


async def test_a_webrtc_call_on_the_single_process_default(single: Cluster, clip):
    (api,) = single.apis
    sid = await webrtc_call(single, api, api, clip)
    await single.end_session(api, sid)


async def test_a_twilio_call_on_the_single_process_default(single: Cluster, clip):
    (api,) = single.apis
    sid = await twilio_call(single, api, api, clip)
    assert (await single.store.get_session(sid)).end_reason == "ended by client"
