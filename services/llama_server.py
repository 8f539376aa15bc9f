"""Supervisor of the local llama.cpp OpenAI-compatible server (``llama-cpp-python[server]``).

One server process runs on loopback and is shared by every session of this voxtutor process;
sessions reach it through Pipecat's ``OpenAILLMService(base_url=...)``, the same code path that
serves any OpenAI-compatible server (vLLM, Ollama, a GPU box). The supervisor starts it, waits
for its readiness check before any session starts, restarts it if it dies, and stops it
cleanly on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from loguru import logger

MODEL_ALIAS = "tutor"
"""Model name sessions send; the server maps it to whichever GGUF it loaded."""


PROMPT_CACHE_BYTES = 64 << 20
"""``--cache_size`` of the server's prompt cache, bytes (64 MiB). llama-cpp-python counts only
the model state (~29 KB per token for Qwen2.5 1.5B) against it, but each cached entry also
keeps a copy of the logits buffer (up to 512 x 151,936 floats, ~300 MB); at the default 2 GiB
the server grew by ~180 MB per distinct prompt until the kernel killed it (measured: 4.3 GB
after 10 assessment prompts, 9.6 GB after 40). 64 MiB keeps a handful of prompts (a
session's conversation, the assessment prompt) and the server at ~3.7 GB after 40."""


PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h)."""


def _libc_prctl() -> Any:
    """Libc's ``prctl``, resolved in the parent (a child must not ``dlopen`` after fork)."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Have the calling (just forked) process get ``sig`` when its parent dies (Linux).

    For ``preexec_fn``, as ``partial(die_with_parent, sig, os.getpid())`` made in the
    parent: a server or session process whose parent was killed (``kill -9``, an OOM kill)
    exits instead of living on unowned. ``prctl(PR_SET_PDEATHSIG)``,
    https://man7.org/linux/man-pages/man2/prctl.2.html; elsewhere it does nothing.

    Args:
        sig: The signal the child gets.
        parent: The parent's PID; when it is no longer the child's parent (it died between
            fork and ``prctl``), the child signals itself at once.
    """
    if _PRCTL is None:
        return
    _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


class LLMServerError(RuntimeError):
    """The local LLM server could not be started or did not become ready."""


async def warm_up(base_url: str, messages: list[dict[str, str]], timeout_s: float = 120.0) -> float:
    """Evaluate ``messages`` once so the session's first turn reuses the evaluated prefix.

    llama.cpp keeps the tokens of the last prompt and only processes what follows the common
    prefix; on 2 cores a ~500-token system prompt otherwise costs ~5 s on the first turn.

    Args:
        base_url: OpenAI-compatible base URL.
        messages: The opening context exactly as the session will send it (system prompt,
            few-shot turns, greeting).
        timeout_s: Request timeout in seconds.

    Returns:
        Seconds the warm-up request took.

    Raises:
        httpx.HTTPError: The server did not answer or answered with an error.
    """
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        r = await client.post(
            f"{base_url}/chat/completions",
            json={"model": MODEL_ALIAS, "messages": messages, "max_tokens": 1},
            # llama.cpp ignores the key; another OpenAI-compatible server may require one.
            headers={"Authorization": "Bearer local"},
        )
        r.raise_for_status()
    return time.perf_counter() - t0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """Runs and supervises ``python -m llama_cpp.server`` as a child process.

    Args:
        model_path: The GGUF file to serve.
        log_path: File receiving the server's stdout and stderr (appended).
        host: Loopback address to bind.
        port: TCP port; 0 picks a free one at start.
        threads: CPU threads for decoding and prompt processing.
        context_tokens: Context window in tokens (``n_ctx``).
        ready_timeout_s: Seconds to wait for ``GET /v1/models`` to answer 200.
        max_restarts: Restarts allowed within ``restart_window_s`` before giving up.
        restart_window_s: Window in seconds for counting restarts.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        log_path: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 2,
        context_tokens: int = 4096,
        ready_timeout_s: float = 120.0,
        max_restarts: int = 3,
        restart_window_s: float = 300.0,
    ):
        self.model_path = Path(model_path)
        self.log_path = Path(log_path)
        self.host = host
        self.port = port or free_port(host)
        self.threads = threads
        self.context_tokens = context_tokens
        self.ready_timeout_s = ready_timeout_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._restart_times: list[float] = []

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:39123/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """PID of the running server process, or ``None``."""
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", MODEL_ALIAS,
            "--host", self.host,
            "--port", str(self.port),
            "--n_threads", str(self.threads),
            "--n_threads_batch", str(self.threads),
            "--n_ctx", str(self.context_tokens),
            # Keep each conversation's evaluated prefix across requests: a new turn then only
            # processes the new tokens instead of the whole system prompt again.
            "--cache", "true",
            "--cache_size", str(PROMPT_CACHE_BYTES),
            # llama-cpp-python's default ends a streaming reply with [DONE] as soon as another
            # request waits: a second session's turn (or a warm-up) would cut this session's
            # reply short. Requests wait their turn instead (served one at a time, FIFO).
            "--interrupt_requests", "false",
            "--verbose", "false",
        ]  # fmt: skip

    async def start(self) -> None:
        """Start the server and wait until it answers; start the restart watchdog.

        Raises:
            LLMServerError: The model file is missing, the process exits, or it does not answer
                within ``ready_timeout_s`` seconds (the message quotes the log's tail).
        """
        if not self.model_path.is_file():
            raise LLMServerError(
                f"LLM model {self.model_path} not found. Run: voxtutor models install"
            )
        self._stopping = False
        await self._spawn()
        self._watch_task = asyncio.create_task(self._watch(), name="llama-server-watch")

    async def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Opened once per server start, before sessions run; handed to the child, closed below.
        log = open(self.log_path, "ab")  # noqa: ASYNC230
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._command(),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the child
                # A host killed with -9 leaves no server behind.
                preexec_fn=partial(die_with_parent, signal.SIGTERM, os.getpid()),
            )
        finally:
            log.close()
        logger.info(f"llama.cpp server pid {self._proc.pid} starting on {self.base_url}")
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.returncode is not None:
                    raise LLMServerError(f"LLM server exited during start:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"{self.base_url}/models")
                    if r.status_code == 200:
                        logger.info(f"llama.cpp server ready on {self.base_url}")
                        return
                await asyncio.sleep(0.2)
        await self._terminate()
        raise LLMServerError(
            f"LLM server not ready after {self.ready_timeout_s:g} s:\n{self.log_tail()}"
        )

    async def is_ready(self) -> bool:
        """Return True if the server answers its readiness check now (2 s timeout)."""
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(f"{self.base_url}/models")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _watch(self) -> None:
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            code = await proc.wait()
            if self._stopping:
                return
            now = time.monotonic()
            self._restart_times = [
                t for t in self._restart_times if now - t < self.restart_window_s
            ]
            if len(self._restart_times) >= self.max_restarts:
                logger.error(f"LLM server died (exit {code}) too often; not restarting")
                return
            self._restart_times.append(now)
            self.restarts += 1
            logger.warning(f"LLM server died (exit {code}); restarting ({self.restarts})")
            try:
                await self._spawn()
            except LLMServerError as e:
                logger.error(f"LLM server restart failed: {e}")

    async def _terminate(self, grace_s: float = 5.0) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def stop(self) -> None:
        """Stop the watchdog and the server (SIGTERM, then SIGKILL after 5 s)."""
        self._stopping = True
        if self._watch_task:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        await self._terminate()
        logger.info("llama.cpp server stopped")

    def log_tail(self, lines: int = 20) -> str:
        """Return the last ``lines`` lines of the server log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def __aenter__(self) -> LlamaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
