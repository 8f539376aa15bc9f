"""Session processes hold no server secrets, take their spec on stdin, survive huge lines."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
import time
from pathlib import Path

import pytest

from contracts.session_spec import SessionSpec
from runtime import supervisor as supervisor_module
from runtime.protocol import SessionRequestError
from runtime.session_env import session_env
from runtime.supervisor import SessionSupervisor
from store import Store
from testkit.providers.openai_fake import OpenAIFake

pytestmark = [pytest.mark.e2e]

SECRETS = {
    "DATABASE_URL": "postgresql://voxtutor:hunter2@db/voxtutor",
    "TWILIO_AUTH_TOKEN": "twilio-secret",
    "DAILY_DIALIN_HMAC": "hmac-secret",
    "VOXTUTOR_TELNYX_PUBLIC_KEY": "telnyx-key",
    "VOXTUTOR_NATS_URL": "nats://host:secret@nats:4222",  # it could spawn or end any session
}


def test_the_servers_dotenv_passes_the_same_filter(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "DATABASE_URL=postgresql://u:pw@db/v\nVOXTUTOR_HOME=/models\nTWILIO_AUTH_TOKEN=t\n"
        "VOXTUTOR_LIMITS_URL=async+redis://:pw@r:6379\nOPENAI_API_KEY=sk-file\n"
    )
    local = session_env("local", {"PATH": "/bin", "VOXTUTOR_HOME": "/env-wins"}, dotenv)
    assert local == {"PATH": "/bin", "VOXTUTOR_HOME": "/env-wins", "VOXTUTOR_DOTENV": "false"}
    cloud = session_env("cloud", {"PATH": "/bin"}, dotenv)
    assert cloud["VOXTUTOR_HOME"] == "/models" and cloud["OPENAI_API_KEY"] == "sk-file"
    assert not {"DATABASE_URL", "TWILIO_AUTH_TOKEN", "VOXTUTOR_LIMITS_URL"} & set(cloud)


def test_each_kind_gets_only_the_keys_its_tiers_need() -> None:
    server = {
        **SECRETS,
        "PATH": "/usr/bin",
        "VOXTUTOR_HOME": "/h",
        "OPENAI_API_KEY": "sk-1",
        "DAILY_API_KEY": "d-1",
        "AWS_SECRET_ACCESS_KEY": "aws",
    }
    local = session_env("local", server, dotenv=None)
    assert local == {"PATH": "/usr/bin", "VOXTUTOR_HOME": "/h", "VOXTUTOR_DOTENV": "false"}
    cloud = session_env("cloud", server, dotenv=None)
    assert cloud["OPENAI_API_KEY"] == "sk-1" and cloud["DAILY_API_KEY"] == "d-1"
    phone = session_env("phone", server, dotenv=None)
    assert "OPENAI_API_KEY" in phone and "DAILY_API_KEY" not in phone
    for env in (local, cloud, phone):
        assert not set(SECRETS) & set(env) and "AWS_SECRET_ACCESS_KEY" not in env


async def _spawn(
    tmp_path: Path, llm_url: str, memory_limit_mb: int | None = None
) -> tuple[Store, SessionSupervisor, str]:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    key, _ = await store.create_api_key("test")
    learner = await store.create_learner(key.id, "Pat", "de")
    sup = SessionSupervisor(
        store, max_sessions=1, log_dir=tmp_path / "logs", memory_limit_mb=memory_limit_mb
    )
    info, _ = await store.create_session(learner.id, key.id, "german-tutor", "local", "webrtc")
    spec = SessionSpec(
        session_id=info.id,
        persona="german-tutor",
        tier="local",
        transport="webrtc",
        llm_base_url=llm_url,
        learner_name="Pat",
    )
    await sup.spawn(spec)
    return store, sup, info.id


async def test_a_session_process_has_no_server_secret_and_no_spec_on_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-local")
    async with OpenAIFake(reply="Gut.") as llm:
        store, sup, sid = await _spawn(tmp_path, llm.base_url)
        try:
            pid = sup.pid(sid)
            assert pid is not None
            environ = (await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)).split(
                b"\0"
            )
            names = {e.split(b"=", 1)[0].decode() for e in environ if e}
            assert not set(SECRETS) & names and "OPENAI_API_KEY" not in names
            assert "PATH" in names
            cmdline = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
            assert sid.encode() not in cmdline and b"Pat" not in cmdline
            assert b"--stdin" in cmdline
        finally:
            await sup.shutdown()
            await store.close()


def _address_space_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return int(line.split()[3])  # soft limit, bytes
    raise AssertionError("no address space line")


async def test_a_session_process_runs_under_its_memory_limit(tmp_path: Path) -> None:
    async with OpenAIFake(reply="Gut.") as llm:
        store, sup, sid = await _spawn(tmp_path, llm.base_url, memory_limit_mb=8192)
        try:
            pid = sup.pid(sid)
            assert pid is not None
            assert await asyncio.to_thread(_address_space_limit, pid) == 8192 << 20
        finally:
            await sup.shutdown()
            await store.close()


async def test_a_session_process_over_its_memory_limit_fails_and_frees_its_slot(
    tmp_path: Path,
) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    key, _ = await store.create_api_key("test")
    learner = await store.create_learner(key.id, "Pat", "de")
    # 160 MiB of address space is less than a session's imports reserve (~270 MiB for the
    # lightest kind, bench/README.md): the process cannot start.
    sup = SessionSupervisor(store, max_sessions=1, log_dir=tmp_path / "logs", memory_limit_mb=160)
    try:
        info, _ = await store.create_session(learner.id, key.id, "german-tutor", "local", "webrtc")
        spec = SessionSpec(info.id, "german-tutor", "local", "webrtc", "http://127.0.0.1:9/v1")
        with pytest.raises(RuntimeError, match="failed to start"):
            await sup.spawn(spec)
        assert sup.active_count == 0
        session = await store.get_session(info.id)
        assert session is not None and session.status == "failed"
        log = (tmp_path / "logs" / f"{info.id}.log").read_text()
        assert "MemoryError" in log or "memory" in log.lower(), log[-2000:]
    finally:
        await sup.shutdown()
        await store.close()


async def test_a_100_kb_offer_is_refused_and_the_session_still_ends_on_request(
    tmp_path: Path,
) -> None:
    async with OpenAIFake(reply="Gut.") as llm:
        store, sup, sid = await _spawn(tmp_path, llm.base_url)
        try:
            # 100 KB of multi-byte text: ~600 KB as a JSON line (\\u escapes), once fatal.
            sdp = "v=0\r\n" + "ž" * 100_000
            with contextlib.suppress(SessionRequestError):  # refused, or answered: either way
                await sup.offer(sid, {"sdp": sdp, "type": "offer", "pc_id": None})
            await sup.end(sid, "test done")
            deadline = time.monotonic() + 30
            while sup.is_running(sid) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            assert not sup.is_running(sid)
            session = await store.get_session(sid)
            assert session is not None and session.status == "ended"
        finally:
            await sup.shutdown()
            await store.close()


HUGE_LINE = """\
#!{python}
# A session process that writes one control line over the supervisor's limit.
import json, sys
sys.stdin.readline()
print(json.dumps({{"event": "ready"}}), flush=True)
print("x" * 200_000, flush=True)
sys.stdin.read()
"""


async def test_a_control_line_over_the_limit_ends_that_session_and_frees_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = tmp_path / "session-process"
    exe.write_text(textwrap.dedent(HUGE_LINE.format(python=sys.executable)))
    exe.chmod(0o755)
    monkeypatch.setattr(supervisor_module, "MAX_LINE_BYTES", 64 * 1024)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    key, _ = await store.create_api_key("test")
    learner = await store.create_learner(key.id, "Pat", "de")
    sup = SessionSupervisor(store, max_sessions=1, log_dir=tmp_path / "logs", python=str(exe))
    try:
        info, _ = await store.create_session(learner.id, key.id, "german-tutor", "local", "webrtc")
        spec = SessionSpec(info.id, "german-tutor", "local", "webrtc", "http://127.0.0.1:9/v1")
        await sup.spawn(spec)
        deadline = time.monotonic() + 15
        session = await store.get_session(info.id)
        while time.monotonic() < deadline and (sup.active_count or session.status != "failed"):  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
            session = await store.get_session(info.id)
        assert sup.active_count == 0  # the slot is free again
        assert session is not None and session.status == "failed"
    finally:
        await sup.shutdown()
        await store.close()
