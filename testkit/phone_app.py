"""The real server for phone tests: uvicorn on loopback, the local tier, a Twilio REST fake.

One app per test module (sessions spawn real worker processes on the 0.5B LLM). The carriers'
secrets are set in the environment too, because session processes read their settings
(the REST hang-up credentials) from it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from config.settings import Settings
from server import create_app
from services.llama_server import LlamaServer
from store import LearnerInfo, Store
from testkit.phone_support import form, telnyx_headers, twilio_signature
from testkit.providers.base import free_port
from testkit.providers.twilio_fake import TwilioFake
from weights.registry import model_path

TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "test-twilio-auth-token"
LINE = "+15550001000"
"""A dialled number configured for the checkride examiner."""
OTHER_LINE = "+15550003000"
"""A dialled number without configuration."""
KNOWN_CALLER = "+15550002000"
"""The caller id of the test learner (a known caller)."""


@dataclass
class PhoneApp:
    """The running app as :func:`phone_app` yields it.

    Attributes:
        base: The app's base URL (``http://127.0.0.1:<port>``).
        http: A client for ``base``.
        store: The app's database.
        key: The API key of the test learner's owner.
        learner: The test learner, whose phone number is :data:`KNOWN_CALLER`.
        telnyx_key: The private key whose public half the app checks Telnyx webhooks with.
        twilio: The Twilio REST fake the sessions hang up through.
    """

    base: str
    http: httpx.AsyncClient
    store: Store
    key: str
    learner: LearnerInfo
    telnyx_key: Ed25519PrivateKey
    twilio: TwilioFake

    async def twilio_webhook(
        self, path: str, params: dict[str, str], signature: str | None = None
    ) -> httpx.Response:
        """Post a Twilio webhook form to ``path``.

        Args:
            path: The webhook route.
            params: The form fields.
            signature: ``X-Twilio-Signature`` to send instead of the valid one (``""``: none).
        """
        sig = (
            signature
            if signature is not None
            else twilio_signature(self.base + path, params, TWILIO_TOKEN)
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sig:
            headers["X-Twilio-Signature"] = sig
        return await self.http.post(path, content=form(params), headers=headers)

    async def telnyx_webhook(
        self, path: str, params: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """Post a Telnyx webhook form to ``path``; Ed25519-signed unless ``headers`` are given."""
        body = form(params)
        signed = telnyx_headers(body, self.telnyx_key) if headers is None else headers
        return await self.http.post(
            path,
            content=body,
            headers={**signed, "Content-Type": "application/x-www-form-urlencoded"},
        )

    async def newest_session(self, learner: LearnerInfo) -> str:
        """The id of the learner's newest session (a call's session)."""
        rows, _ = await self.store.list_sessions(learner.owner_key_id, learner.id, None, 1, 0)
        assert rows, f"no session for learner {learner.id}"
        return rows[0].id


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    """Poll ``predicate`` every 0.2 s until it is true.

    Raises:
        AssertionError: It is still false after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout_s} s")


@contextlib.asynccontextmanager
async def phone_app(tmp: Path, **overrides: object) -> AsyncIterator[PhoneApp]:
    """Serve the real app with the phone settings of these tests (see module doc)."""
    telnyx_key = Ed25519PrivateKey.generate()
    public = telnyx_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    db = f"sqlite+aiosqlite:///{tmp / 'vox.db'}"
    async with await Store.open(db) as seed:
        key_info, key = await seed.create_api_key("phone tests")
        learner = await seed.create_learner(key_info.id, "Pat", "en", "B2", phone=KNOWN_CALLER)
    server = LlamaServer(
        model_path("qwen2.5-coder-0.5b", Settings().home), log_path=tmp / "llm.log"
    )
    async with server, TwilioFake(TWILIO_SID, TWILIO_TOKEN) as twilio:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("TWILIO_ACCOUNT_SID", TWILIO_SID)
            env.setenv("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
            env.setenv("VOXTUTOR_TWILIO_API_BASE_URL", twilio.http_url)
            options: dict[str, object] = {
                "home": Settings().home,  # the installed models
                "database_url": db,
                "llm_base_url": server.base_url,
                "max_sessions": 3,
                "telnyx_public_key": base64.b64encode(public).decode(),
                "phone_lines": {LINE: {"persona": "aviation-examiner", "tier": "local"}},
            }
            settings = Settings(**{**options, **overrides})  # type: ignore[arg-type]
            port = free_port()
            config = uvicorn.Config(
                create_app(settings), host="127.0.0.1", port=port, log_level="warning"
            )
            app_server = uvicorn.Server(config)
            task = asyncio.create_task(app_server.serve())
            base = f"http://127.0.0.1:{port}"
            try:
                for _ in range(1200):
                    if app_server.started:
                        break
                    assert not task.done(), "the app did not start"
                    await asyncio.sleep(0.05)
                async with (
                    httpx.AsyncClient(base_url=base, timeout=60) as http,
                    await Store.open(db, migrate=False) as store,
                ):
                    yield PhoneApp(base, http, store, key, learner, telnyx_key, twilio)
            finally:
                app_server.should_exit = True
                await asyncio.wait_for(task, 60)
