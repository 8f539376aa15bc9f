"""A scaled-out deployment on this machine: a private NATS, two API replicas, session hosts.

Everything is a real process: ``nats-server -js`` on a free port (a broker of the tests' own,
so nothing else registered on the machine's shared NATS can take their sessions), a fresh
PostgreSQL database, ``voxtutor serve`` twice with ``VOXTUTOR_NATS_URL`` (the API replicas)
and ``voxtutor host`` twice (the session hosts, local tier on one shared 0.5B llama.cpp
server). The replicas and hosts share nothing but NATS and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest_asyncio

from config.settings import Settings
from services.llama_server import LlamaServer
from store import LearnerInfo, Store
from testkit.cluster_procs import (
    VOXTUTOR,
    Proc,
    Registry,
    private_nats,
    process_home,
    start_proc,
    vox_env,
    wait_ready,
)
from testkit.phone_app import KNOWN_CALLER, LINE, TWILIO_SID, TWILIO_TOKEN
from testkit.providers.base import free_port
from testkit.providers.twilio_fake import TwilioFake
from tests.conftest import fresh_postgres
from weights.registry import model_path

EXAMINER_LINE = {"persona": "aviation-examiner", "tier": "local"}
HOST_TTL_S = 5.0
"""The hosts' registry TTL in these tests, s (heartbeat every 0.5 s)."""


@dataclass
class Cluster:
    """The running deployment.

    Attributes:
        nats_url: The private broker.
        env: The environment every replica and host gets.
        apis: Base URLs of the API replicas (``http://127.0.0.1:<port>``).
        hosts: The running hosts by id.
        key: An API key; ``learner``: its learner (phone :data:`KNOWN_CALLER`).
        store: The shared database.
    """

    nats_url: str
    env: dict[str, str]
    tmp: Path
    store: Store
    key: str
    learner: LearnerInfo
    twilio: TwilioFake
    apis: list[str] = field(default_factory=list)
    api_procs: list[Proc] = field(default_factory=list)
    hosts: dict[str, Proc] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """The API key's headers."""
        return {"Authorization": f"Bearer {self.key}"}

    async def start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        """Start ``voxtutor ARGS`` with ``env`` and a ``VOXTUTOR_HOME`` of its own."""
        home = process_home(self.tmp, name)
        full = {**vox_env(home, env["DATABASE_URL"]), **env, "VOXTUTOR_HOME": str(home)}
        return await start_proc(name, [VOXTUTOR, *args], full, self.tmp)

    async def voxtutor(self, *args: str) -> tuple[int, str]:
        """Run ``voxtutor ARGS`` to the end with the deployment's env; (exit status, stdout)."""
        proc = await asyncio.create_subprocess_exec(
            VOXTUTOR, *args, env={**vox_env(self.tmp, self.env["DATABASE_URL"]), **self.env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(errors="replace")

    async def start_host(self, host_id: str) -> Proc:
        """Start a session host and wait until it has registered with a warm local spare."""
        proc = await self.start(host_id, ["host"], {**self.env, "VOXTUTOR_HOST_ID": host_id})
        self.hosts[host_id] = proc
        await self.wait_hosts(lambda hosts: host_id in hosts and "local" in hosts[host_id].warm,
                              120, proc)  # fmt: skip
        return proc

    async def start_api(self) -> str:
        """Start an API replica; return its base URL once ``/readyz`` answers 200."""
        port = free_port()
        proc = await self.start(f"api-{port}", ["serve"], {**self.env, "VOXTUTOR_PORT": str(port)})
        self.api_procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, proc, 90)
        self.apis.append(base)
        return base

    async def registry(self) -> dict:
        """The registered hosts by id (:class:`runtime.cluster.registry.HostRecord`)."""
        async with Registry(self.nats_url) as registry:
            return {h.host_id: h for h in await registry.hosts()}

    async def wait_hosts(self, ok, timeout_s: float, proc: Proc | None = None) -> dict:
        """Poll the registry until ``ok(hosts)``; return the hosts."""
        deadline = time.monotonic() + timeout_s
        hosts: dict = {}
        while time.monotonic() < deadline:
            if proc is not None:
                assert proc.running, f"{proc.name} exited:\n{proc.log_tail()}"
            with contextlib.suppress(Exception):
                hosts = await self.registry()
                if ok(hosts):
                    return hosts
            await asyncio.sleep(0.3)
        raise AssertionError(f"registry never as expected: {hosts}")

    async def host_of(self, session_id: str) -> str | None:
        """The host the sessions bucket says runs ``session_id``."""
        async with Registry(self.nats_url) as registry:
            return await registry.session_host(session_id)

    async def wait_gone(self, session_id: str, timeout_s: float) -> None:
        """Wait until no host is listed for ``session_id`` in the sessions bucket."""
        deadline = time.monotonic() + timeout_s
        while (host := await self.host_of(session_id)) is not None:
            assert time.monotonic() < deadline, f"session {session_id} still on {host}"
            await asyncio.sleep(0.2)

    async def create_session(self, api: str, persona: str = "aviation-examiner") -> dict:
        """``POST /api/v1/sessions`` (local tier, WebRTC) through replica ``api``."""
        async with httpx.AsyncClient(base_url=api, timeout=120) as http:
            r = await http.post(
                "/api/v1/sessions",
                json={
                    "persona": persona,
                    "tier": "local",
                    "transport": "webrtc",
                    "learner_id": self.learner.id,
                },
                headers=self.headers,
            )
        assert r.status_code == 201, r.text
        return r.json()

    async def end_session(self, api: str, session_id: str) -> None:
        """``DELETE /api/v1/sessions/{id}`` through ``api`` and wait until it has ended."""
        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            r = await http.delete(f"/api/v1/sessions/{session_id}", headers=self.headers)
            assert r.status_code == 202, r.text
        await self.wait_status(session_id, {"ended"}, 60)

    async def wait_status(self, session_id: str, statuses: set[str], timeout_s: float) -> str:
        """Poll the store until the session's status is one of ``statuses``; return it."""
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            info = await self.store.get_session(session_id)
            status = info.status if info else None
            if status in statuses:
                return status
            await asyncio.sleep(0.2)
        raise AssertionError(f"session {session_id} is {status}, not {statuses}")


def base_env(db_url: str, llm_url: str, twilio: TwilioFake) -> dict[str, str]:
    """The settings every replica and host gets (each has a home of its own besides)."""
    return {
        "DATABASE_URL": db_url,
        "VOXTUTOR_LLM_BASE_URL": llm_url,
        "VOXTUTOR_LLM_MODEL": "qwen2.5-coder-0.5b",
        "VOXTUTOR_LLM_WARM_UP": "false",
        "VOXTUTOR_REPORTS": "false",
        "VOXTUTOR_MAX_SESSIONS": "3",
        "VOXTUTOR_MAX_LOCAL_SESSIONS": "3",
        "VOXTUTOR_HOST_HEARTBEAT_S": "0.5",
        "VOXTUTOR_HOST_TTL_S": str(HOST_TTL_S),
        "VOXTUTOR_HOST_LOAD_THRESHOLD": "1000",  # the test machine is busy by design
        "VOXTUTOR_WEBRTC_PRIVATE_CANDIDATES": "true",  # aiortc on loopback
        "VOXTUTOR_OPS_PUBLIC": "true",
        "VOXTUTOR_LIMITS_URL": "async+redis://127.0.0.1:6379",  # shared by the replicas
        "VOXTUTOR_LOG_LEVEL": "INFO",
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "VOXTUTOR_TWILIO_API_BASE_URL": twilio.http_url,
        "VOXTUTOR_PHONE_LINES": json.dumps({LINE: EXAMINER_LINE}),
    }


@contextlib.asynccontextmanager
async def deployment(tmp: Path, *, scaled_out: bool) -> AsyncIterator[Cluster]:
    """Two API replicas and two hosts on a private NATS, or the single-process default.

    Args:
        tmp: Logs, the hosts' home, the broker's store.
        scaled_out: ``False``: one ``voxtutor serve`` without ``VOXTUTOR_NATS_URL`` and no
            broker at all.
    """
    server = LlamaServer(
        model_path("qwen2.5-coder-0.5b", Settings().home), log_path=tmp / "llm.log"
    )
    async with (
        server,
        TwilioFake(TWILIO_SID, TWILIO_TOKEN) as twilio,
        fresh_postgres("voxtutor_cluster") as db_url,
        contextlib.AsyncExitStack() as stack,
    ):
        # Migrated once here: the four processes then find the schema current.
        store = await stack.enter_async_context(await Store.open(db_url))
        key_info, key = await store.create_api_key("cluster tests")
        learner = await store.create_learner(key_info.id, "Pat", "en", "B2", phone=KNOWN_CALLER)
        env = base_env(db_url, server.base_url, twilio)
        nats_url = ""
        if scaled_out:
            nats_url = await stack.enter_async_context(private_nats(tmp))
            env["VOXTUTOR_NATS_URL"] = nats_url
        cluster = Cluster(nats_url, env, tmp, store, key, learner, twilio)
        try:
            if scaled_out:
                await asyncio.gather(cluster.start_host("host-a"), cluster.start_host("host-b"))
                await cluster.start_api()
                await cluster.start_api()
            else:
                await cluster.start_api()
            yield cluster
        finally:
            procs = list(cluster.api_procs) + list(cluster.hosts.values())
            await asyncio.gather(*(p.stop(signal.SIGINT, 60) for p in procs))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory) -> AsyncIterator[Cluster]:
    """The scaled-out deployment (see module doc)."""
    async with deployment(tmp_path_factory.mktemp("cluster"), scaled_out=True) as c:
        yield c
