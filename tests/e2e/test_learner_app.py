"""The learner app (``web/``) in real headless Chromium (Debian package) against the real server.

What a learner does, from the link their app hands them to their progress charts, once by
voice and once in text mode:

- **Voice**: Chromium's fake microphone plays a German learner sentence with a planted error
  ("mit der Bus"; synthetic: spoken by SVOX Pico, as no packaged German recording exists, see
  ``../shared/notes/test-audio.md``) after 14 s of silence (the tutor greets first). The
  learner opens the link, checks the microphone (the meter hears the sentence), starts a
  session with Lena; the transcript and the correction ("der Bus" struck through, "dem Bus"
  inserted, the rule) appear; they end it, the report appears in History, and Progress draws
  the mistakes chart from the stored data.
- **Text**: the microphone is denied (``--deny-permission-prompts``). The microphone check
  says so and switches to text mode; the learner types the sentence, the tutor answers by
  voice (the bot's audio track plays) and the correction shows inline. Then History and
  Progress as above, and a stale token shows the "link has expired" page.

- **A pilot, with the API answered by the test** (no models): what a session with the small
  model cannot show on demand: the ACS area × task mastery grid, grade chips, a tier outside
  the plan, 402 and 429 at start, the language switch, and the page without a link.

Every page is screenshotted into ``out/test-artifacts/`` and scanned with axe-core (npm
``axe-core``, installed by ``scripts/setup.sh``): no serious or critical violation. Nothing
the page loads may break the Content-Security-Policy (no console CSP errors).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urljoin

import httpx
import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, Page, Route, async_playwright
from starlette.staticfiles import StaticFiles

from api.middleware import SecurityHeadersMiddleware
from config.settings import Settings
from server import WEB_DIR, create_app
from services.llama_server import free_port
from store import Store
from store.learner_model import acs_mastery
from transports.file import load_learner_audio

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "out" / "test-artifacts"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
CHART = ROOT / "web" / "vendor" / "chart.umd.js"

PLANTED = "Ich fahre jeden Tag mit der Bus zur Arbeit."
"""A typed German learner sentence with a planted case error (``mit`` takes the dative)."""

SPOKEN = "Ich fahre jeden Tag mit der Bus."
"""The spoken one: the same error in a sentence Whisper base hears exactly over WebRTC (it
hears Pico's "zur Arbeit" as "zu arbeiten", and the tutor then rightly fixes more than one
thing at once)."""

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip

PHONE = {"width": 375, "height": 812}
"""An iPhone's CSS viewport (seed 000: the app is used from an iPhone home screen)."""


@dataclass
class Served:
    """The running server: its base URL, an API key of the operator's app, the app itself."""

    base: str
    api_key: str
    app: FastAPI
    learners: dict[str, str] = field(default_factory=dict)

    def http(self) -> httpx.AsyncClient:
        """A client of the operator's API."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30)

    async def learner_link(self, name: str) -> str:
        """A new German learner (plan ``free``: the ``local`` tier) and their access link."""
        async with self.http() as http:
            r = await http.post(
                "/api/v1/learners",
                json={"name": name, "target_language": "de", "cefr_level": "A2"},
            )
            assert r.status_code == 201, r.text
            self.learners[name] = r.json()["id"]
            r = await http.post(f"/api/v1/learners/{self.learners[name]}/access", json={})
            assert r.status_code in (200, 201), r.text
            url = r.json()["url"]
        assert "#token=" in url, url
        return urljoin(self.base + "/", url)

    async def crash_session(self, name: str) -> None:
        """Kill the learner's running session process, as a crash would."""
        async with self.http() as http:
            r = await http.get("/api/v1/sessions", params={"learner_id": self.learners[name]})
        live = [s["id"] for s in r.json()["items"] if s["status"] in ("ready", "active")]
        assert len(live) == 1, r.json()
        pid = self.app.state.ctx.supervisor.pid(live[0])
        assert pid is not None
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def installed() -> None:
    """Chromium, and the npm packages the app and the scan use."""
    assert CHROMIUM.is_file(), "install Debian package chromium (scripts/setup.sh does)"
    assert AXE.is_file() and CHART.is_file(), "run scripts/setup.sh (npm ci in web/)"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory, installed) -> AsyncIterator[Served]:
    """The real app (llama.cpp server, session processes, report worker) on a loopback port.

    The fast 0.5B model, with the tutor's local scorer on (as in production: it finds the
    wrong article the small model's rewrite misses). Session processes read their settings
    from the environment, so the scorer and its model are set there too.
    """
    db = tmp_path_factory.mktemp("learner-app") / "vox.db"
    env = pytest.MonkeyPatch()
    env.setenv("VOXTUTOR_ASSESSMENT_SCORER", "true")
    env.setenv("VOXTUTOR_LLM_MODEL", "qwen2.5-coder-0.5b")
    settings = Settings(
        home=Settings().home,  # the installed models
        llm_model="qwen2.5-coder-0.5b",
        assessment_scorer=True,
        database_url=f"sqlite+aiosqlite:///{db}",
        report_poll_s=1.0,
    )
    async with await Store.open(settings.store_url) as store:
        _, key = await store.create_api_key("learner-app")
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.1)
            assert not serving.done(), "the server did not start"
        yield Served(f"http://127.0.0.1:{port}", key, app)
    finally:
        server.should_exit = True
        await serving
        env.undo()


@pytest.fixture
def german_mic(tmp_path) -> Path:
    """The spoken sentence, by SVOX Pico (synthetic), after 14 s of silence."""
    pico = shutil.which("pico2wave")
    assert pico, "install libttspico-utils (scripts/setup.sh does)"
    said = tmp_path / "said.wav"
    subprocess.run([pico, "-l", "de-DE", "-w", str(said), SPOKEN], check=True)
    pcm = load_learner_audio(said, 16000)
    wav = tmp_path / "mic.wav"
    silence = np.zeros(14 * 16000, np.int16)
    sf.write(wav, np.concatenate([silence, pcm, silence[: 2 * 16000]]), 16000, subtype="PCM_16")
    return wav


class Watch:
    """Console errors and page errors of a page (CSP violations show up there)."""

    def __init__(self, page: Page):
        self.errors: list[str] = []
        page.on(
            "console",
            lambda m: m.type == "error" and self.errors.append(m.text),
        )
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def check(self) -> None:
        """No script error and no Content-Security-Policy violation."""
        bad = [e for e in self.errors if "Content Security Policy" in e or "page error" in e]
        assert not bad, bad


async def scan(page: Page, name: str) -> None:
    """Screenshot the page and scan it with axe-core: no serious or critical violation.

    axe is run with ``page.evaluate`` (DevTools): ``add_script_tag`` inserts an inline
    script, which the app's CSP (``script-src 'self'``) rightly refuses.
    """
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"learner-{name}.png"), full_page=True)
    source = await asyncio.to_thread(AXE.read_text)
    await page.evaluate(source + "\n;0")
    violations = await page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                          nodes: v.nodes.map((n) => n.target.join(" "))}))"""
    )
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, (name, serious)


async def open_link(browser: Browser, link: str, viewport: dict[str, int]) -> tuple[Page, Watch]:
    """Open the learner's link: the token leaves the address bar for session storage."""
    page = await browser.new_page(viewport=viewport)
    watch = Watch(page)
    await page.goto(link)
    await page.wait_for_selector("#start")
    assert "token" not in page.url and page.url.endswith("#/start"), page.url
    token = link.split("#token=", 1)[1]
    stored = await page.evaluate("localStorage.getItem('voxtutor-learner-token')")
    assert stored == token
    return page, watch


async def choose_lena(page: Page) -> None:
    """Lena (German tutor), level A2, the local tier; the other tiers are not selectable."""
    await page.check("#persona-german-tutor")
    await page.wait_for_selector("#level")  # the page redraws in the persona's language
    await page.select_option("#level", "A2")
    await page.check("#tier-local")
    disabled = await page.eval_on_selector_all(
        "input[name=tier]", "els => els.filter(e => e.disabled).map(e => e.value)"
    )
    assert "dpe_live" in disabled  # not in the free plan: shown, not selectable


async def correction_shown(page: Page) -> None:
    """The learner's line shows the planted error struck through, its correction and rule.

    The correction is the smallest span: ``der`` → ``dem`` (the line reads "mit der dem Bus").
    """
    line = page.locator(".turn.learner", has=page.locator("ins")).first
    await line.wait_for(timeout=150_000)
    assert (await line.locator("del").first.inner_text()).split()[-1] == "der"
    assert (await line.locator("ins").first.inner_text()).split()[-1] == "dem"
    assert "Bus" in await line.inner_text()
    # Its rule and category (the rule as the model named it: the category when it named none).
    assert (await line.locator(".rules li").first.inner_text()).strip()


async def end_and_report(page: Page, name: str) -> None:
    """End the session; its report appears in History; History and the list scan clean."""
    await page.click("#end")
    await page.wait_for_selector("#session-after a[href^='#/history/']", timeout=60_000)
    await page.click("#session-after a[href^='#/history/']")
    await page.wait_for_selector("#report .report-body", timeout=240_000)
    # The correction, in the report and inline in the stored transcript.
    assert (await page.locator("#report .rules ins").first.inner_text()).strip() == "dem"
    assert (await page.locator(".transcript del").first.inner_text()).split()[-1] == "der"
    await scan(page, f"{name}-history-session")
    await page.click("a[href='#/history']")
    await page.wait_for_selector(".sessions .session-item")
    await scan(page, f"{name}-history")


async def progress_charted(page: Page, name: str) -> None:
    """Progress draws the mistakes per category chart, with the session's correction."""
    await page.click("a[data-page=progress]")
    await page.wait_for_selector("#chart-mistakes")
    await page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('chart-mistakes'))"
    )
    total = await page.evaluate(
        """() => Chart.getChart(document.getElementById('chart-mistakes')).data.datasets
            .flatMap((d) => d.data).reduce((a, b) => a + b, 0)"""
    )
    assert total >= 1
    await scan(page, f"{name}-progress")


async def as_learner(
    browser: Browser,
    link: str,
    viewport: dict[str, int],
    name: str,
    flow: Callable[[Page], Awaitable[None]],
) -> None:
    """Open the link and run ``flow(page)``; a failure leaves a screenshot of where it was."""
    page, watch = await open_link(browser, link, viewport)
    try:
        await flow(page)
    except BaseException:
        await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"learner-{name}-failed.png"), full_page=True)
        raise
    watch.check()


async def answered_out_loud(page: Page) -> None:
    """The tutor's reply is in the transcript (as spoken) and its audio track plays."""
    await page.wait_for_function(
        "() => document.querySelectorAll('.turn.bot').length >= 2", timeout=90_000
    )
    track = await page.evaluate(
        "document.getElementById('bot-audio').srcObject?.getAudioTracks()[0]?.readyState"
    )
    assert track == "live"


async def voice_session(page: Page) -> None:
    """Check the microphone, talk to Lena, end, read the report and the progress."""
    await choose_lena(page)
    # The microphone check: the meter hears the recording (each capture plays it anew).
    await page.click("#mic-check")
    await page.wait_for_function(
        "() => document.getElementById('mic-status').textContent.includes('hören')",
        timeout=40_000,
    )
    assert not await page.is_checked("#text-mode")
    await scan(page, "voice-start")
    await page.click("#start")
    await page.wait_for_selector(".turn.bot", timeout=90_000)  # the greeting
    await page.wait_for_selector(".turn.learner", timeout=90_000)
    await correction_shown(page)
    learner = await page.locator(".turn.learner").first.inner_text()
    assert "jeden Tag" in learner and "Bus" in learner, learner
    await answered_out_loud(page)
    await scan(page, "voice-session")
    await end_and_report(page, "voice")
    await progress_charted(page, "voice")


async def text_session(page: Page, served: Served) -> None:
    """Denied microphone: text mode; type to Lena, end, report, progress; then more.

    A crashed session is replaced by a new one, and an expired link is said to be expired.
    """
    await choose_lena(page)
    await page.click("#mic-check")
    await page.wait_for_function(
        "() => document.getElementById('mic-status').textContent.includes('gesperrt')"
    )
    assert await page.is_checked("#text-mode")  # switched to typing, not a dead end
    await scan(page, "text-start")
    await page.click("#start")
    await page.wait_for_selector(".page.session .banner")  # "text mode", and why
    await page.wait_for_selector(".turn.bot", timeout=90_000)  # the greeting
    await page.fill("#say-text", PLANTED)
    await page.press("#say-text", "Enter")
    await correction_shown(page)
    await answered_out_loud(page)
    await scan(page, "text-session")
    await end_and_report(page, "text")
    await progress_charted(page, "text")
    # The session's process dies: the page starts a new session with the same choices.
    await page.click("a[data-page=start]")
    await page.click("#start")
    await page.wait_for_selector(".turn.bot", timeout=90_000)  # the greeting
    await served.crash_session("Text Learner")
    await page.wait_for_selector(".turn.notice", timeout=60_000)
    assert "neue Sitzung" in await page.inner_text(".turn.notice")
    await page.wait_for_function(
        "() => document.querySelectorAll('.turn.bot').length >= 2", timeout=90_000
    )  # the new session's greeting
    await page.wait_for_selector("#session-status:text('Verbunden')")
    await scan(page, "text-reconnected")
    await page.click("#end")
    await page.wait_for_selector("#session-after a[href^='#/history/']", timeout=60_000)
    # A token the server no longer accepts: the page says to ask the app for a new link.
    await page.evaluate("localStorage.setItem('voxtutor-learner-token', 'expired')")
    await page.reload()
    await page.wait_for_selector(".page.message.expired_title")
    assert "abgelaufen" in await page.inner_text("h1")  # in the language last used
    await scan(page, "expired")


async def test_learner_talks_by_voice_then_reads_report_and_progress(served, german_mic):
    link = await served.learner_link("Voice Learner")
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *CHROMIUM_ARGS,
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={german_mic}%noloop",
            ],
        )
        await as_learner(browser, link, {"width": 1024, "height": 900}, "voice", voice_session)
        await browser.close()


async def test_learner_without_microphone_types_in_text_mode(served):
    link = await served.learner_link("Text Learner")
    async with async_playwright() as p:
        # A microphone, but no fake-UI flag: the permission prompt is answered "deny", as by
        # a learner who said no.
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *CHROMIUM_ARGS,
                "--use-fake-device-for-media-stream",
                "--deny-permission-prompts",
            ],
        )
        await as_learner(browser, link, PHONE, "text", lambda page: text_session(page, served))
        await browser.close()


# -- a pilot, with the learner API answered by the test ------------------------------------

PILOT = {"id": "L-pilot", "name": "Pat", "target_language": "en", "cefr_level": "B2"}
PERSONAS = [
    {"id": "german-tutor", "name": "Lena", "language": "de", "role": "tutor"},
    {"id": "czech-tutor", "name": "Honzík", "language": "cs", "role": "tutor"},
    {"id": "aviation-examiner", "name": "Examiner Walker", "language": "en", "role": "examiner"},
]


def tier(name: str, allowed: bool, sessions_left: int | None = None) -> dict:
    """A tier as ``GET /api/v1/me`` lists it."""
    return {
        "name": name,
        "title": name.replace("_", " ").title(),
        "allowed": allowed,
        "reason": None if allowed else "not in your plan (Ground School); DPE Live has it",
        "sessions_left": sessions_left,
        "tts_chars_left": 190_000 if sessions_left is not None else None,
    }


def pilot_api() -> dict[str, object]:
    """The learner API's answers for a pilot with three exam sessions (the real ACS bank)."""
    at = "2026-05-0{}T10:00:00+00:00"
    grades = [("PA.I.A", "satisfactory"), ("PA.I.B", "probe"), ("PA.III.A", "unsatisfactory")]
    results = [
        SimpleNamespace(
            task=t,
            grade=g,
            id=i,
            question_id=f"{t}.1",
            created_at=datetime(2026, 5, i + 1, tzinfo=UTC),
        )
        for i, (t, g) in enumerate(grades)
    ]
    sessions = [
        {
            "session_id": f"s{i}",
            "started_at": at.format(i + 1),
            "persona": "aviation-examiner",
            "mode": "conversation",
            "minutes": 5.0,
            "learner_turns": 3,
            "mistakes": {},
            "acs": {g: 1},
            "acs_tasks_covered": i + 1,
            "review_items": 0,
            "review_items_learned": 0,
        }
        for i, (_, g) in enumerate(grades)
    ]
    progress = {
        "learner": PILOT,
        "level": {"cefr": "B2", "source": "created", "evidence": {}, "history": []},
        "weaknesses": [],
        "mistakes": 0,
        "sessions": 3,
        "minutes": 15.0,
        "last_session": None,
        "review": {"total": 0, "due": 0, "learned": 0},
        "due_items": [],
        "acs": acs_mastery(results),  # type: ignore[arg-type]  # the fields it reads
        "series": {
            "sessions": sessions,
            "reviews_per_day": [],
            "level": [{"cefr": "B2", "at": at.format(1)}],
        },
    }
    turns = [
        ("bot", "What documents must you carry as pilot in command?"),
        ("learner", "My pilot certificate and a photo ID."),
        ("bot", "That's part of it. What else?"),
    ]
    detail = {
        "id": "s2",
        "learner_id": PILOT["id"],
        "persona": "aviation-examiner",
        "tier": "local",
        "transport": "webrtc",
        "status": "ended",
        "created_at": at.format(3),
        "ready_at": at.format(3),
        "ended_at": "2026-05-03T10:05:00+00:00",
        "end_reason": "client",
        "mode": "conversation",
        "turns": [
            {"index": i, "role": r, "text": x, "interrupted": False, "latency_ms": None}
            for i, (r, x) in enumerate(turns)
        ],
        "latency": {},
        "events": [],
        "mistakes": [],
        "acs": [{"turn_index": 1, "area": "I", "task": "PA.I.A", "grade": "probe"}],
    }
    report = {
        "status": "done",
        "attempts": 1,
        "report": {
            "summary": "You knew the pilot certificate; the medical certificate was missing.",
            "strengths": ["quick answers"],
            "corrections": [],
            "practise": [],
            "level": {"before": "B2", "estimate": "B2", "evidence": {}},
            "acs": [
                {
                    "task": "PA.I.A",
                    "title": "Pilot Qualifications",
                    "grade": "probe",
                    "answers": 1,
                    "missing": ["medical certificate"],
                    "references": [],
                }
            ],
            "review": {"answered": 0, "right": 0},
            "minutes": 5.0,
            "learner_turns": 1,
        },
    }
    me = {
        "learner": {**PILOT, "plan": "ground_school", "interests": []},
        "tiers": [tier("local", True), tier("ground_school", True, 3), tier("dpe_live", False)],
        "personas": PERSONAS,
        "expires_at": "2026-05-04T10:00:00+00:00",
    }
    return {
        "/api/v1/me": me,
        "/api/v1/me/progress": progress,
        "/api/v1/me/sessions": {"items": [], "total": 0, "limit": 20, "offset": 0},
        "/api/v1/me/sessions/s2": detail,
        "/api/v1/me/sessions/s2/report": report,
    }


@pytest_asyncio.fixture(loop_scope="module")
async def static_app(installed) -> AsyncIterator[str]:
    """``web/`` served with the server's security headers (its CSP); the API is the test's."""
    port = free_port()
    app = SecurityHeadersMiddleware(StaticFiles(directory=WEB_DIR, html=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def test_pilot_pages_grid_chips_start_errors_and_languages(static_app):
    answers = pilot_api()
    starts = iter(
        [
            (
                402,
                {
                    "error": "quota_exceeded",
                    "message": "no sessions left",
                    "upgrade_url": "https://example.com/up",
                },
                {},
            ),
            (429, {"error": "at_capacity", "message": "busy"}, {"Retry-After": "12"}),
        ]
    )

    async def api(route: Route) -> None:
        request = route.request
        path = request.url.split("?")[0].removeprefix(static_app)
        assert request.headers.get("authorization") == "Bearer pilot-token"
        if request.method == "POST" and path == "/api/v1/me/sessions":
            status, body, headers = next(starts)
            await route.fulfill(status=status, json=body, headers=headers)
        elif path in answers:
            await route.fulfill(json=answers[path])
        else:
            await route.fulfill(status=404, json={"error": "not_found", "message": path})

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport=PHONE)
        watch = Watch(page)
        await page.route("**/api/v1/**", api)
        # Without a link: say where to get one (no API-key field, no dead form).
        await page.goto(static_app + "/")
        await page.wait_for_selector(".page.message.no_link_title")
        assert not await page.locator("input").count()
        await scan(page, "no-link")
        # The link opened in the same tab: the page starts over with its token.
        await page.goto(static_app + "/#token=pilot-token")
        await page.wait_for_selector("#start")
        assert page.url.endswith("#/start")
        assert await page.inner_text("h1") == "Hello, Pat!"  # the examiner speaks English
        assert not await page.locator("#level").count()  # no CEFR level for the checkride
        assert await page.is_disabled("#tier-dpe_live")
        assert "not in your plan" in await page.inner_text("#tier-dpe_live-d")
        assert "3 sessions left" in await page.inner_text("#tier-ground_school-d")
        await page.check("#tier-ground_school")
        await page.check("#text-mode")
        await page.click("#start")
        await page.wait_for_selector("#start-error a[href='https://example.com/up']")
        await page.click("#start")
        await page.wait_for_function(
            "() => document.getElementById('start-error').textContent.includes('12 seconds')"
        )
        await scan(page, "pilot-start-errors")
        # The switch overrides the persona's language; "automatic" follows it again.
        await page.select_option("#lang", "cs")
        await page.wait_for_function(
            "() => document.querySelector('h1').textContent === 'Ahoj, Pat!'"
        )
        assert await page.get_attribute("html", "lang") == "cs"
        await page.select_option("#lang", "auto")
        await page.wait_for_function(
            "() => document.querySelector('h1').textContent === 'Hello, Pat!'"
        )
        # A past exam session: the grade as a chip on the answer, the debrief in the report.
        await page.goto(static_app + "/#/history/s2")
        await page.wait_for_selector("#report .report-body")
        chip = await page.inner_text(".turn.learner .chip")
        assert "PA.I.A" in chip and "partly" in chip
        assert "medical certificate" in await page.inner_text("#report .acs-debrief")
        await scan(page, "pilot-history-session")
        # Progress: ACS grades per session, and the area × task mastery grid.
        await page.click("a[data-page=progress]")
        await page.wait_for_selector(".acs-grid")
        await page.wait_for_function("() => Chart.getChart(document.getElementById('chart-acs'))")
        cell = page.locator(".acs-grid tbody tr").first.locator("td").first
        assert await cell.get_attribute("class") == "m5" and "5/5" in await cell.inner_text()
        assert "Pilot Qualifications" in await cell.locator(".sr-only").inner_text()
        assert "not asked yet" in await page.inner_text(".acs-grid")
        assert "Areas not covered yet:" in await page.inner_text(".acs")
        await scan(page, "pilot-progress")
        watch.check()
        await browser.close()
