"""Run a scaled-out deployment's processes for tests and benchmarks.

Starts and stops ``voxtutor serve`` (an API replica when ``VOXTUTOR_NATS_URL`` is set, the
embedded single process otherwise), ``voxtutor host`` and a private ``nats-server`` with
JetStream as subprocesses, each with an environment of its own, and waits for them to be
ready: ``/readyz`` for the API, the ``voxtutor_hosts`` registry for the hosts
(:class:`Registry`). Used by ``bench/cluster.py``.

Every process starts in a session (process group) of its own, so :meth:`Proc.stop` also
ends what it started (session processes, the smart-turn service, a llama.cpp server) and
nothing else. Output goes to a log file per process; :meth:`Proc.log_tail` reads it back for
error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

VOXTUTOR = str(Path(sys.executable).with_name("voxtutor"))
"""The ``voxtutor`` console script of this interpreter's environment (the venv's)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """One started subprocess and its log file.

    Attributes:
        name: A label for messages (``serve``, ``host bench-a``).
        proc: The process (leader of its own process group).
        log_path: Where its stdout and stderr go.
    """

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Whether it has not exited yet."""
        return self.proc.returncode is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of its log ('' when there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` to the process, wait up to ``timeout_s``, then kill its group.

        The group is killed in any case once the leader has exited (or was killed), so no
        child it started outlives it. Returns the exit status.
        """
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # leftovers of the group
        return await self.proc.wait()


async def start_proc(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    prefix: Sequence[str] = (),
) -> Proc:
    """Start ``prefix + argv`` in a new process group with ``env``, output to a log file.

    Args:
        name: Label; also names the log file (``<log_dir>/<name>.log``, spaces as ``-``).
        argv: The command.
        env: Its whole environment.
        log_dir: Created if missing.
        prefix: Run the command under this, e.g. ``["taskset", "-c", "0"]``.
    """
    log_path = log_dir / f"{name.replace(' ', '-')}.log"
    log = _open_log(log_path)
    try:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            *argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    return Proc(name, proc, log_path)


def _open_log(path: Path) -> Any:
    """Open ``path`` for appending, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


def nats_server_binary() -> str | None:
    """Path of a ``nats-server`` executable (``PATH`` or ``/usr/sbin``), or ``None``."""
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    return found


async def wait_tcp(host: str, port: int, timeout_s: float, proc: Proc | None = None) -> None:
    """Wait until ``host:port`` accepts a connection.

    Raises:
        RuntimeError: ``proc`` exited first, or nothing listened within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and not proc.running:
            raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}):\n{proc.log_tail()}")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


@asynccontextmanager
async def private_nats(root: Path) -> AsyncIterator[str]:
    """A ``nats-server -js`` of its own on a free loopback port; yields its URL.

    Its JetStream store is under ``root``. Buckets and subjects are then this caller's
    alone: no other test's or benchmark's host can take its sessions.

    Raises:
        FileNotFoundError: no ``nats-server`` executable.
    """
    binary = nats_server_binary()
    if binary is None:
        raise FileNotFoundError("nats-server is not installed")
    port = free_port()
    store = root / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
    proc = await start_proc("nats-server", argv, os.environ, root)
    try:
        await wait_tcp("127.0.0.1", port, 15, proc)
        yield f"nats://127.0.0.1:{port}"
    finally:
        await proc.stop(signal.SIGTERM, 10)


def process_home(root: Path, name: str, models: Path | None = None) -> Path:
    """A ``VOXTUTOR_HOME`` of its own for one process, sharing the installed models.

    Each process gets its own logs and store outbox (``store-outbox.sqlite3``, which two
    processes must not share); ``<home>/models`` links to ``models`` (default: the models
    under the default home, ``~/.cache/voxtutor/models``).
    """
    from config.settings import Settings

    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    link = home / "models"
    if not link.exists():
        target = models or Settings().home / "models"
        link.symlink_to(target, target_is_directory=True)
    return home


def vox_env(home: Path, database_url: str, **settings: Any) -> dict[str, str]:
    """The environment of a voxtutor process: this one's, without its voxtutor settings.

    ``VOXTUTOR_*`` and ``DATABASE_URL`` of the calling environment are dropped, so nothing
    leaks in from the caller; then ``VOXTUTOR_HOME``, ``DATABASE_URL`` and each of
    ``settings`` as ``VOXTUTOR_<NAME>`` (booleans as ``true``/``false``; ``None`` leaves it
    unset) are set.

    Example: ``vox_env(home, url, nats_url="nats://127.0.0.1:4222", host_id="a")``.
    """
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("VOXTUTOR_") and k != "DATABASE_URL"
    }
    env["VOXTUTOR_HOME"] = str(home)
    env["DATABASE_URL"] = database_url
    for key, value in settings.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"VOXTUTOR_{key.upper()}"] = text
    return env


async def start_serve(env: Mapping[str, str], log_dir: Path, name: str = "serve") -> Proc:
    """Start ``voxtutor serve`` with ``env`` (which names ``VOXTUTOR_PORT``).

    Wait for it with :func:`wait_ready`.
    """
    return await start_proc(name, [VOXTUTOR, "serve"], env, log_dir)


async def start_host(
    env: Mapping[str, str], log_dir: Path, name: str = "host", prefix: Sequence[str] = ()
) -> Proc:
    """Start ``voxtutor host`` with ``env`` (``VOXTUTOR_NATS_URL``, ``VOXTUTOR_HOST_ID``).

    ``prefix``: e.g. ``["taskset", "-c", "1"]``. Wait for it with
    :meth:`Registry.wait_hosts`.
    """
    return await start_proc(name, [VOXTUTOR, "host"], env, log_dir, prefix)


async def wait_ready(base_url: str, proc: Proc, timeout_s: float = 180.0) -> dict[str, Any]:
    """Poll ``GET /readyz`` until it answers 200; return its body.

    Raises:
        RuntimeError: the process exited, or it was not ready within ``timeout_s`` (the
            last answer and the log's tail in the message).
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        while time.monotonic() < deadline:
            if not proc.running:
                raise RuntimeError(
                    f"{proc.name} exited ({proc.proc.returncode}):\n{proc.log_tail()}"
                )
            try:
                r = await http.get("/readyz")
            except httpx.HTTPError as e:
                last = repr(e)
            else:
                if r.status_code == 200:
                    body: dict[str, Any] = r.json()
                    return body
                last = f"{r.status_code} {r.text}"
            await asyncio.sleep(0.25)
    raise RuntimeError(
        f"{proc.name} not ready after {timeout_s:.0f} s ({last}):\n{proc.log_tail()}"
    )


async def create_api_key(database_url: str, name: str = "bench") -> str:
    """Create an API key in the store at ``database_url`` (migrating it); return the key.

    Opening the store here, before any server starts, also runs the migrations once.
    """
    from store import Store

    async with await Store.open(database_url) as store:
        _, key = await store.create_api_key(name)
    return str(key)


class Registry:
    """A NATS connection that reads the session hosts' registry and the sessions bucket.

    Use as ``async with Registry(url) as reg:``.
    """

    def __init__(self, nats_url: str):
        self.nats_url = nats_url

    async def __aenter__(self) -> Registry:
        """Connect (the buckets are opened when read)."""
        from runtime.cluster.bus import connect

        self.nc = await connect(self.nats_url, "voxtutor-testkit")
        return self

    async def _open(self, name: str) -> Any:
        """The bucket ``name`` if a host or replica has created it, else ``None``.

        Never created here: the first creator sets its ``max_age`` (the hosts' TTL).
        """
        from nats.js.errors import BucketNotFoundError

        try:
            return await self.nc.jetstream().key_value(name)
        except BucketNotFoundError:
            return None

    async def __aexit__(self, *exc: object) -> None:
        """Disconnect."""
        with contextlib.suppress(Exception):
            await self.nc.drain()

    async def hosts(self) -> list[Any]:
        """The registered hosts (``runtime.cluster.registry.HostRecord``), by id."""
        from runtime.cluster.bus import HOSTS_BUCKET
        from runtime.cluster.registry import read_hosts

        kv = await self._open(HOSTS_BUCKET)
        return [] if kv is None else await read_hosts(kv)

    async def wait_hosts(
        self,
        host_ids: Iterable[str],
        warm: str | None = None,
        timeout_s: float = 180.0,
        procs: Iterable[Proc] = (),
    ) -> list[Any]:
        """Wait until every host of ``host_ids`` is registered; return their records.

        With ``warm``, each must also have a preloaded spare of that kind and no session.

        Raises:
            RuntimeError: one of ``procs`` exited, or the hosts were not there in time.
        """
        wanted = set(host_ids)
        procs = list(procs)
        deadline = time.monotonic() + timeout_s
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for p in procs:
                if not p.running:
                    raise RuntimeError(f"{p.name} exited ({p.proc.returncode}):\n{p.log_tail()}")
            seen = {h.host_id: h for h in await self.hosts()}
            ok = [
                h
                for hid, h in seen.items()
                if hid in wanted and (warm is None or (warm in h.warm and h.active == 0))
            ]
            if len(ok) == len(wanted):
                return sorted(ok, key=lambda h: h.host_id)
            await asyncio.sleep(0.2)
        state = {hid: (h.warm, h.active) for hid, h in seen.items()}
        raise RuntimeError(
            f"hosts {sorted(wanted)} not registered{' warm' if warm else ''} after "
            f"{timeout_s:.0f} s; registry (warm, active): {state}"
        )

    async def session_host(self, session_id: str) -> str | None:
        """The host that runs ``session_id`` now (sessions bucket), or ``None``."""
        from nats.js.errors import KeyNotFoundError

        from runtime.cluster.bus import SESSIONS_BUCKET, decode

        kv = await self._open(SESSIONS_BUCKET)
        if kv is None:
            return None
        try:
            entry = await kv.get(session_id)
        except KeyNotFoundError:
            return None
        host = decode(entry.value or b"").get("host")
        return host if isinstance(host, str) else None


def descendants(pid: int) -> list[int]:
    """Every live descendant of process ``pid`` (Linux ``/proc``), not ``pid`` itself."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def cmdline(pid: int) -> list[str]:
    """Process ``pid``'s command line ([] once it has gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def spare_pids(root: int, kind: str = "local") -> list[int]:
    """Warm spare processes of ``kind`` (``--spare=<kind>``) under process ``root``."""
    return [p for p in descendants(root) if f"--spare={kind}" in cmdline(p)]


def tree_cpu(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each of ``pids`` and their descendants."""
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for root in pids:
        for pid in [root, *descendants(root)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[pid] = (int(fields[11]) + int(fields[12])) / tick
    return used


async def wait_idle(
    pids: Iterable[int], idle_s: float = 1.0, max_cores: float = 0.1, timeout_s: float = 120.0
) -> bool:
    """Wait until ``pids`` and their descendants used under ``max_cores`` for ``idle_s``.

    What "warm" means where nothing else says it (a single-process server's spare): the
    preloading is over once its process tree stops using the CPU. A process that exits
    during a window is left out of it; one that appears counts with all its CPU. Returns
    ``False`` if the tree did not go quiet within ``timeout_s``.
    """
    pids = list(pids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = tree_cpu(pids)
        await asyncio.sleep(idle_s)
        after = tree_cpu(pids)
        if sum(t - before.get(p, 0.0) for p, t in after.items()) < max_cores * idle_s:
            return True
    return False
