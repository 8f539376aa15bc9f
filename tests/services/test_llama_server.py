"""The llama.cpp server supervisor, on the real Qwen2.5-Coder 0.5B GGUF (loads in ~2 s)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio

from services.llama_server import (
    MODEL_ALIAS,
    LlamaServer,
    LLMServerError,
    free_port,
    warm_up,
)
from weights.registry import model_path

MODEL = "qwen2.5-coder-0.5b"
READY_TIMEOUT_S = 60.0
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello."},
]
module_loop = pytest.mark.asyncio(loop_scope="module")


def gguf() -> Path:
    return model_path(MODEL)


def new_server(tmp_path: Path, model: Path | None = None, **kwargs) -> LlamaServer:
    kwargs.setdefault("ready_timeout_s", READY_TIMEOUT_S)
    return LlamaServer(model or gguf(), log_path=tmp_path / "llama-server.log", **kwargs)


def server_pids(port: int) -> list[int]:
    """PIDs of live ``llama_cpp.server`` processes started with ``--port <port>``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"llama_cpp.server" in args and b"--port" in args:
            if args[args.index(b"--port") + 1] == str(port).encode():
                pids.append(int(entry.name))
    return pids


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_replacement(server: LlamaServer, old_pid: int, timeout_s: float) -> int:
    """Wait until a process other than ``old_pid`` serves; return its pid."""
    async with asyncio.timeout(timeout_s):
        while True:
            pid = server.pid
            if pid not in (None, old_pid) and await server.is_ready():
                return pid
            await asyncio.sleep(0.1)


async def until(condition, timeout_s: float) -> None:
    """Poll ``condition`` every 50 ms until it holds (TimeoutError after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory):
    srv = new_server(tmp_path_factory.mktemp("llama"))
    await srv.start()
    yield srv
    await srv.stop()


# -- a running server -------------------------------------------------------------------------


@module_loop
async def test_models_endpoint_answers_with_the_tutor_alias(server):
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.get(f"{server.base_url}/models")

    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == [MODEL_ALIAS]


@module_loop
async def test_running_server_is_ready_on_loopback_with_one_process(server):
    assert await server.is_ready()
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.pid is not None and process_exists(server.pid)
    assert server_pids(server.port) == [server.pid]
    assert server.restarts == 0


@module_loop
async def test_chat_completion_through_the_openai_sdk_returns_text(server):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x")
    try:
        reply = await client.chat.completions.create(
            model=MODEL_ALIAS, messages=MESSAGES, max_tokens=8, temperature=0
        )
    finally:
        await client.close()

    text = reply.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    assert 0 < reply.usage.completion_tokens <= 8


@module_loop
async def test_a_second_sessions_request_does_not_cut_a_streaming_reply_short(server):
    """llama-cpp-python's default ends a stream when another request waits; ours queues it."""
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x")

    async def count_to_twenty() -> tuple[str, str | None]:
        stream = await client.chat.completions.create(
            model=MODEL_ALIAS,
            messages=[{"role": "user", "content": "Count from 1 to 20, separated by spaces."}],
            max_tokens=60,
            temperature=0,
            stream=True,
        )
        text, finish = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        return text, finish

    try:
        first = asyncio.create_task(count_to_twenty())
        await asyncio.sleep(0.3)  # the first is streaming when the second arrives
        (text1, finish1), (text2, finish2) = await asyncio.gather(first, count_to_twenty())
    finally:
        await client.close()

    # Both streams ran to their own end: the model stopped (or hit the cap), not the server.
    assert finish1 in ("stop", "length") and finish2 in ("stop", "length")
    # Same prompt, temperature 0: the same whole reply both times.
    assert text1.strip() and text1 == text2


@module_loop
async def test_warm_up_returns_the_seconds_the_request_took(server):
    t0 = time.perf_counter()
    took = await warm_up(server.base_url, MESSAGES)
    elapsed = time.perf_counter() - t0

    assert isinstance(took, float)
    assert 0 < took <= elapsed


async def test_warm_up_against_no_server_raises_an_http_error():
    with pytest.raises(httpx.HTTPError):
        await warm_up(f"http://127.0.0.1:{free_port()}/v1", MESSAGES, timeout_s=5)


# -- supervision ------------------------------------------------------------------------------


async def test_killed_server_is_restarted_by_the_watchdog_and_stop_ends_the_new_one(tmp_path):
    async with new_server(tmp_path) as srv:
        old_pid = srv.pid
        assert old_pid is not None

        os.kill(old_pid, signal.SIGKILL)
        new_pid = await wait_for_replacement(srv, old_pid, timeout_s=READY_TIMEOUT_S)

        assert srv.restarts == 1
        assert not process_exists(old_pid)
        assert server_pids(srv.port) == [new_pid]
        assert await warm_up(srv.base_url, MESSAGES) > 0  # the replacement serves requests

    assert srv.pid is None
    assert not process_exists(new_pid)
    assert server_pids(srv.port) == []


async def test_stop_leaves_no_process_and_nothing_listening(tmp_path):
    srv = new_server(tmp_path)
    await srv.start()
    pid = srv.pid
    assert pid is not None

    await srv.stop()

    assert srv.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert server_pids(srv.port) == []
    assert not await srv.is_ready()


async def test_watchdog_stops_restarting_after_max_restarts(tmp_path):
    srv = new_server(tmp_path, max_restarts=0)
    await srv.start()
    try:
        pid = srv.pid
        os.kill(pid, signal.SIGKILL)
        await until(lambda: not process_exists(pid) and srv.pid is None, timeout_s=10)
        await asyncio.sleep(1.0)  # a restart, if any, would have spawned a process by now

        assert srv.pid is None
        assert srv.restarts == 0
        assert server_pids(srv.port) == []
    finally:
        await srv.stop()


# -- failures ---------------------------------------------------------------------------------


async def test_missing_model_file_names_the_install_command(tmp_path):
    missing = tmp_path / "models" / "absent.gguf"
    srv = new_server(tmp_path, model=missing)

    with pytest.raises(LLMServerError) as exc:
        await srv.start()

    assert str(missing) in str(exc.value)
    assert "voxtutor models install" in str(exc.value)
    assert srv.pid is None
    assert server_pids(srv.port) == []


async def test_garbage_model_fails_fast_quoting_the_server_log(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(os.urandom(64 * 1024))
    srv = new_server(tmp_path, model=bad, ready_timeout_s=30)

    t0 = time.monotonic()
    with pytest.raises(LLMServerError) as exc:
        await srv.start()
    elapsed = time.monotonic() - t0

    message = str(exc.value)
    assert elapsed < 15, "a server that died at start was waited on until the timeout"
    assert message.startswith("LLM server exited during start:")
    log_lines = srv.log_path.read_text(errors="replace").splitlines()
    assert log_lines, "the server wrote nothing to its log"
    assert log_lines[-1] in message  # the reason (llama.cpp could not load the file)
    assert str(bad) in message
    assert server_pids(srv.port) == []


async def test_server_not_ready_in_time_is_terminated_and_the_error_names_the_timeout(tmp_path):
    srv = new_server(tmp_path, ready_timeout_s=0.3)

    with pytest.raises(LLMServerError) as exc:
        await srv.start()

    assert str(exc.value).startswith("LLM server not ready after 0.3 s")
    assert srv.pid is None
    assert server_pids(srv.port) == []
