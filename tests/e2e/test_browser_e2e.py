"""The learner app talking to the examiner in real headless Chromium against the real server.

Chromium's fake microphone plays a LibriVox recording (after 11 s of silence, while the
examiner greets); the learner opens their link, the page creates a session through the
learner API, talks over WebRTC, shows the live transcript from the bot's RTVI messages, the
server's quota notice, and plays the bot's audio track. A screenshot of the page is kept as a
test artifact (``out/test-artifacts/browser-room.png``). The learner app's own pages are
tested in ``test_learner_app.py``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import uvicorn
from playwright.async_api import async_playwright

from config.settings import Settings
from config.tiers import get_tier, load_tiers
from server import create_app
from services.llama_server import free_port
from store import Store
from transports.file import load_learner_audio

pytestmark = [pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "out" / "test-artifacts"


@pytest.fixture
def mic_wav(tmp_path, librivox) -> Path:
    clip = next(p for p in librivox if "0880" in p.name)
    pcm = load_learner_audio(clip, 16000)
    wav = tmp_path / "mic.wav"
    sf.write(wav, np.concatenate([np.zeros(11 * 16000, np.int16), pcm]), 16000, subtype="PCM_16")
    return wav


async def wait_for_reply(store_url: str, timeout_s: float) -> list:
    """Poll the store until a bot turn answering the learner is stored; return the turns."""
    deadline = time.monotonic() + timeout_s
    turns: list = []
    async with await Store.open(store_url) as store:
        key = (await store.list_api_keys())[0]
        while time.monotonic() < deadline:
            sessions, _ = await store.list_sessions(key.id)
            turns = await store.list_turns(sessions[0].id) if sessions else []
            if any(t.role == "bot" and t.latency_ms for t in turns):
                return turns
            await asyncio.sleep(0.5)
    raise AssertionError(f"no reply stored within {timeout_s} s: {turns}")


@pytest.fixture
def chromium() -> Path:
    assert CHROMIUM.is_file(), "install Debian package chromium (scripts/setup.sh does)"
    return CHROMIUM


async def test_the_learner_app_talks_to_the_examiner(tmp_path, mic_wav, chromium, monkeypatch):
    # One exchange per session, so the page must also show the server's quota notice.
    local = get_tier("local")
    one = local.quotas.model_copy(update={"exchanges_per_session": 1})
    monkeypatch.setitem(load_tiers(), "local", local.model_copy(update={"quotas": one}))
    settings = Settings(
        llm_model="qwen2.5-coder-0.5b",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}",
    )
    async with await Store.open(settings.store_url) as store:
        key, _ = await store.create_api_key("browser")
        learner = await store.create_learner(key.id, "Pat", "en", "B2")
        token, _ = await store.mint_access(learner.id, key.id, timedelta(hours=1))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.1)
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=str(chromium),
                args=[
                    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={mic_wav}%noloop",
                    "--autoplay-policy=no-user-gesture-required",
                ],
            )  # fmt: skip
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/#token={token}")
            await page.wait_for_selector("#start")
            await page.check("#persona-aviation-examiner")
            await page.check("#tier-local")
            await page.click("#start")
            await page.wait_for_selector(".turn.bot", timeout=60_000)  # the greeting
            turns = await wait_for_reply(settings.store_url, 90)
            await asyncio.sleep(3)  # let the reply's text reach the page
            await page.wait_for_selector(".turn.notice", timeout=15_000)
            notices = await page.locator(".turn.notice").all_inner_texts()
            learner = await page.locator(".turn.learner").all_inner_texts()
            bots = await page.locator(".turn.bot").all_inner_texts()
            await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "browser-room.png"), full_page=True)
            received = await page.evaluate(
                """async () => {
                    const audio = document.getElementById('bot-audio');
                    const track = audio.srcObject?.getAudioTracks()[0];
                    return track ? track.readyState : null;
                }"""
            )
            await browser.close()
        assert [t.role for t in turns][:2] == ["bot", "learner"]
        reply = next(t for t in turns if t.role == "bot" and t.latency_ms)
        assert bots and "examiner walker" in bots[0].lower(), bots
        assert learner and "young man" in " ".join(learner).lower(), learner
        assert reply.text.split()[0] in " ".join(bots[1:]), (reply.text, bots)
        assert received == "live"
        assert notices == [
            "Limit reached: 1 of 1 exchanges this session. Your tutor is saying goodbye."
        ]
    finally:
        server.should_exit = True
        await serving
