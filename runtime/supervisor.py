"""The server's side of session processes: spawn, relay signalling, cap, end, detect death.

Each session runs ``python -m runtime.session_process`` (its own process, as Pipecat
recommends). The supervisor caps how many run at once, relays the browser's SDP offer and
ICE candidates over the process's stdin/stdout (see :mod:`runtime.protocol`), asks it to end
politely, and marks the session ``failed`` in the store if the process dies without ending:
the server stays up and the turns the process already wrote stay stored. A session process
holds no database connection: its writes arrive as ``store`` lines
(:mod:`runtime.store_relay`), which the supervisor applies in order with its own store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from loguru import logger

from contracts.session_spec import SessionSpec
from runtime.memory_limit import MEMORY_LIMIT_ENV
from runtime.outbox import Outbox
from runtime.protocol import CapacityError, SessionNotRunningError, SessionRequestError
from runtime.session_env import session_env
from runtime.store_relay import RELAYED_CALLS
from services.llama_server import die_with_parent
from store import Store

READY_TIMEOUT_S = 90.0
"""Longest wait for a new process to load its models and report ready, seconds."""
REQUEST_TIMEOUT_S = 30.0
MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest control-channel line either side reads (16 MiB; a turn or an SDP is far less). A
session process that writes a longer one is ended, and its slot freed."""
"""Longest wait for a process to answer a relayed request (SDP offer, ICE), seconds."""
END_GRACE_S = 20.0
"""After an ``end`` request, seconds allowed for the goodbye before the process is killed."""

SPARE_KINDS = ("local", "cloud", "phone")
"""Kinds of warm spare process: ``local`` preloads Whisper base and a Piper voice (the local
tier's models, ~2 s to load); ``cloud`` only imports (a cloud tier loads no local model unless
a failover reaches one, so it should not carry ~150 MB of them); ``phone`` is ``cloud``
without the browser transports (aiortc, PyAV, daily-python: ~45 MB a call does not need)."""

PHONE_TRANSPORTS = frozenset({"twilio", "telnyx"})


def spare_kind(tier: str, transport: str = "webrtc") -> str:
    """The kind of spare (:data:`SPARE_KINDS`) that starts a session of ``tier`` fastest.

    ``local`` for a tier whose STT or TTS primary runs a local model (whatever the
    transport: its models dominate); else ``phone`` for a Twilio or Telnyx call, ``cloud``
    for the rest (speech-to-speech included, and names not in ``config/tiers.yaml``).
    """
    from config.tiers import load_tiers

    found = load_tiers().get(tier)
    if found is not None and found.kind == "pipeline" and found.stt and found.tts:
        if any(link.provider == "local" for link in (found.stt[0], found.tts[0])):
            return "local"
    return "phone" if transport in PHONE_TRANSPORTS else "cloud"


@dataclass
class _Spare:
    proc: asyncio.subprocess.Process
    log_path: Path
    ready: bool = False


@dataclass
class _Child:
    spec: SessionSpec
    proc: asyncio.subprocess.Process
    started_at: float
    ready: asyncio.Future[None]
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    ended: bool = False
    ready_info: dict[str, Any] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None


class SessionSupervisor:
    """Runs every session in a child process and keeps the store's status in step.

    Args:
        store: Where session statuses are written.
        max_sessions: Concurrent sessions; :meth:`spawn` raises :class:`CapacityError` beyond.
        log_dir: Each process's stderr goes to ``<log_dir>/<session_id>.log``.
        python: Interpreter for the session processes.
        spares: Kinds of warm spare process to keep, one each (:data:`SPARE_KINDS`): a
            process that has done the imports (and for ``local`` loaded the local models)
            waits for the next session of its kind (:func:`spare_kind`), so spawn-to-ready
            drops from ~3 s to a fraction of a second.
        on_turn: Called with (session id, turn dict) for each turn a session completes, once
            it is stored, e.g. to feed latency metrics.
        on_ready: Called with the spawn-to-ready time in seconds of each session started.
        on_ended: Awaited with the spec of each session that started (became ready) once its
            process has exited, however it ended (goodbye, idle, crash, kill, shutdown), e.g.
            to delete the session's Daily room. A :meth:`spawn` that raises calls nothing: the
            caller cleans up. Errors are logged, never raised.
        turn_url: The shared smart-turn service every session asks (set on each spec that
            names none), or ``None``: each session runs its own model.
        outbox: Where session writes wait while the database is unreachable
            (:mod:`runtime.outbox`); ``None`` → written directly, lost in an outage.
        memory_limit_mb: Address-space limit of each session process, MiB (``RLIMIT_AS``,
            set by the process on itself before it imports anything); ``None``: none.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_sessions: int,
        log_dir: Path,
        python: str = sys.executable,
        spares: Sequence[str] = (),
        on_turn: Callable[[str, dict[str, Any]], None] | None = None,
        on_ready: Callable[[float], None] | None = None,
        on_ended: Callable[[SessionSpec], Awaitable[object]] | None = None,
        turn_url: str | None = None,
        outbox: Outbox | None = None,
        memory_limit_mb: int | None = None,
    ):
        self.on_turn = on_turn
        self.outbox = outbox
        self.memory_limit_mb = memory_limit_mb
        self.on_ready = on_ready
        self.on_ended = on_ended
        self.turn_url = turn_url
        self.store = store
        unknown = set(spares) - set(SPARE_KINDS)
        if unknown:
            raise ValueError(f"unknown spare kinds {sorted(unknown)}; use {SPARE_KINDS}")
        self.spares = tuple(spares)
        self._spare: dict[str, _Spare] = {}
        self._spare_task: dict[str, asyncio.Task[None]] = {}
        self.max_sessions = max_sessions
        self.log_dir = Path(log_dir)
        self.python = python
        self.spawn_seconds: list[float] = []
        """Spawn-to-ready time of each session started, seconds (for metrics)."""
        self._children: dict[str, _Child] = {}
        self._starting: dict[str, str] = {}
        """Sessions (id → tier) whose :meth:`spawn` has begun; not a child process yet."""
        self._ids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()

    @property
    def active_count(self) -> int:
        """Session processes alive now (starting or running), spawns under way included."""
        return len(self._children.keys() | self._starting.keys())

    def active_tiers(self) -> list[str]:
        """The tier of each session counted in :attr:`active_count`."""
        tiers = {sid: child.spec.tier for sid, child in self._children.items()}
        return list({**self._starting, **tiers}.values())

    def active_ids(self) -> set[str]:
        """The ids of the sessions counted in :attr:`active_count`."""
        return set(self._children) | set(self._starting)

    def tier_of(self, session_id: str) -> str | None:
        """The tier of an active session, or ``None``."""
        child = self._children.get(session_id)
        return child.spec.tier if child else self._starting.get(session_id)

    def is_running(self, session_id: str) -> bool:
        """Whether ``session_id`` has a live process."""
        return session_id in self._children

    def ready_info(self, session_id: str) -> dict[str, Any]:
        """What the session's process reported with ``ready`` besides the event name.

        A phone call's process reports ``phone_url``, the loopback websocket its media
        stream is relayed to; ``{}`` for other sessions and sessions not running.
        """
        child = self._children.get(session_id)
        return dict(child.ready_info) if child else {}

    def pid(self, session_id: str) -> int | None:
        """PID of the session's process, or ``None``."""
        child = self._children.get(session_id)
        return child.proc.pid if child else None

    async def spawn(self, spec: SessionSpec) -> None:
        """Start the session's process and return once it is ready for an offer.

        The session counts in :attr:`active_count` from this coroutine's first step, before
        it first awaits: concurrent calls never start more than ``max_sessions`` processes.

        Raises:
            CapacityError: ``max_sessions`` processes are already running or starting.
            RuntimeError: The process exited or did not become ready in time; the session
                is marked ``failed`` with the reason.
        """
        if self.active_count >= self.max_sessions:
            raise CapacityError(f"all {self.max_sessions} session slots are in use")
        self._starting[spec.session_id] = spec.tier
        try:
            await self._spawn(spec)
        finally:
            self._starting.pop(spec.session_id, None)

    async def _spawn(self, spec: SessionSpec) -> None:
        if spec.turn_url is None and self.turn_url:
            spec = replace(spec, turn_url=self.turn_url)
        t0 = time.monotonic()
        kind = spare_kind(spec.tier, spec.transport)
        task = self._spare_task.get(kind)
        if task is not None and not task.done():
            # A spare that is still preloading is nearer to ready than a new process.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), READY_TIMEOUT_S)
        spare = self._spare.pop(kind, None)
        if spare is not None and spare.ready and spare.proc.returncode is None:
            proc = spare.proc
            assert proc.stdin is not None
            proc.stdin.write((json.dumps({"op": "start", "spec": spec.to_json()}) + "\n").encode())
            await proc.stdin.drain()
            with contextlib.suppress(OSError):
                spare.log_path.rename(self.log_dir / f"{spec.session_id}.log")
        else:
            if spare is not None:
                await self._retire(spare)
            # The spec goes on stdin, never on the command line (where `ps` shows it).
            proc = await self._start_process("--stdin", spec.session_id, kind)
            assert proc.stdin is not None
            proc.stdin.write((json.dumps({"op": "start", "spec": spec.to_json()}) + "\n").encode())
            await proc.stdin.drain()
        self.start_spare(kind)
        loop = asyncio.get_running_loop()
        child = _Child(spec, proc, t0, loop.create_future())
        self._children[spec.session_id] = child
        child.reader = asyncio.create_task(self._read(child))
        child.watcher = asyncio.create_task(self._watch(child))
        try:
            await asyncio.wait_for(asyncio.shield(child.ready), READY_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as e:
            reason = str(e) or f"not ready after {READY_TIMEOUT_S:.0f} s"
            await self._kill(child)
            await self.store.set_session_status(spec.session_id, "failed", reason)
            raise RuntimeError(f"session process failed to start: {reason}") from None
        took = time.monotonic() - child.started_at
        self.spawn_seconds.append(took)
        if self.on_ready is not None:
            self.on_ready(took)
        await self.store.set_session_status(spec.session_id, "ready")

    async def _start_process(
        self, arg: str, log_name: str, kind: str
    ) -> asyncio.subprocess.Process:
        """Start ``python -m runtime.session_process ARG`` with ``kind``'s environment."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{log_name}.log", "ab")  # noqa: ASYNC230
        try:
            return await asyncio.create_subprocess_exec(
                self.python, "-m", "runtime.session_process", arg,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                env=self._env(kind), limit=MAX_LINE_BYTES,
                # A server or host killed with -9 leaves no session talking on unrecorded.
                preexec_fn=partial(die_with_parent, signal.SIGKILL, os.getpid()),
            )  # fmt: skip
        finally:
            log.close()

    def _env(self, kind: str) -> dict[str, str]:
        env = session_env(kind)
        if self.memory_limit_mb is not None:
            env[MEMORY_LIMIT_ENV] = str(self.memory_limit_mb)
        return env

    def spare_pids(self) -> dict[str, int]:
        """PIDs of the spare processes that have finished preloading, by kind."""
        return {k: s.proc.pid for k, s in self._spare.items() if s.ready}

    async def wait_spares(self) -> None:
        """Wait until every spare process being started has preloaded (or failed to)."""
        tasks = [t for t in self._spare_task.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def start_spare(self, kind: str | None = None) -> None:
        """Start a spare process of ``kind`` (default: of every kept kind) where none is there.

        Kinds not in ``spares`` are ignored; the processes preload in the background.
        """
        for k in self.spares if kind is None else (kind,):
            if k not in self.spares or k in self._spare:
                continue
            task = self._spare_task.get(k)
            if task is not None and not task.done():
                continue
            self._spare_task[k] = asyncio.create_task(self._make_spare(k), name=f"spare-{k}")

    async def _make_spare(self, kind: str) -> None:
        name = f"spare-{kind}-{next(self._ids)}"
        proc = await self._start_process(f"--spare={kind}", name, kind)
        spare = _Spare(proc, self.log_dir / f"{name}.log")
        self._spare[kind] = spare
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        with contextlib.suppress(json.JSONDecodeError):
            spare.ready = bool(line) and json.loads(line).get("event") == "spare"
        if not spare.ready:
            logger.error(f"{kind} spare process failed to preload (see {spare.log_path})")
            if self._spare.get(kind) is spare:
                del self._spare[kind]
            await self._retire(spare)

    async def _retire(self, spare: _Spare) -> None:
        if spare.proc.stdin is not None:
            spare.proc.stdin.close()
        try:
            await asyncio.wait_for(spare.proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                spare.proc.kill()
            await spare.proc.wait()

    async def _read(self, child: _Child) -> None:
        assert child.proc.stdout is not None
        while True:
            try:
                line = await child.proc.stdout.readline()
            except ValueError:  # a line over MAX_LINE_BYTES: the channel can't be trusted
                logger.error(
                    f"session {child.spec.session_id}: control line over {MAX_LINE_BYTES} "
                    "bytes; ending the session"
                )
                await self._kill(child)
                return
            if not line:
                return
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                logger.warning(f"session {child.spec.session_id}: stray output {line[:80]!r}")
                continue
            event = msg.get("event")
            if event == "ready" and not child.ready.done():
                child.ready_info = {k: v for k, v in msg.items() if k != "event"}
                child.ready.set_result(None)
            elif event == "reply":
                fut = child.pending.pop(msg.get("id", -1), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif event == "store":
                await self._store_write(child, msg)
            elif event == "ended":
                child.ended = True

    async def _store_write(self, child: _Child, msg: dict[str, Any]) -> None:
        """Apply one of a session process's store writes (:mod:`runtime.store_relay`).

        Only :data:`~runtime.store_relay.RELAYED_CALLS`, only for the process's own session.
        A write the store refuses is logged; the session goes on.
        """
        sid = child.spec.session_id
        call, args = msg.get("call"), msg.get("args")
        if call not in RELAYED_CALLS or not isinstance(args, list) or args[:1] != [sid]:
            logger.warning(f"session {sid}: refused store write {str(msg)[:120]!r}")
            return
        # A usage row gets the write's id, so a retry from the outbox cannot count it twice.
        kwargs = {"write_id": str(uuid.uuid4())} if call == "add_usage_event" else {}
        try:
            if self.outbox is not None:
                await self.outbox.write(call, args, kwargs)
            else:
                await getattr(self.store, call)(*args, **kwargs)
        except Exception as e:  # a bad row must not stop the session's other writes
            logger.error(f"session {sid}: store {call} failed: {e!r}")
            return
        if call == "add_turn" and self.on_turn is not None:
            try:
                self.on_turn(sid, args[1] if len(args) > 1 and isinstance(args[1], dict) else {})
            except Exception as e:  # metrics must never break a session
                logger.warning(f"on_turn callback failed: {e}")

    async def _set_status(self, session_id: str, status: str, reason: str) -> None:
        """Write a session's terminal status behind its writes still queued in the outbox.

        So the report job never starts on a transcript the database has not got yet.
        """
        if self.outbox is not None:
            await self.outbox.write("set_session_status", [session_id, status, reason], {})
        else:
            await self.store.set_session_status(session_id, status, reason)

    async def _watch(self, child: _Child) -> None:
        code = await child.proc.wait()
        if child.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await child.reader
        sid = child.spec.session_id
        self._children.pop(sid, None)
        if not child.ready.done():
            child.ready.set_exception(RuntimeError(f"process exited with status {code}"))
        for fut in child.pending.values():
            if not fut.done():
                fut.set_exception(SessionNotRunningError(f"session {sid} ended"))
        if not child.ended:
            reason = f"session process died (exit status {code})"
            logger.error(f"session {sid}: {reason}")
            with contextlib.suppress(Exception):
                await self._set_status(sid, "failed", reason)
        started = child.ready.done() and child.ready.exception() is None
        if started and self.on_ended is not None:
            try:
                await self.on_ended(child.spec)
            except Exception as e:  # cleanup must never break the supervisor
                logger.warning(f"session {sid}: on_ended callback failed: {e}")

    async def _request(self, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        child = self._children.get(session_id)
        if child is None or child.proc.stdin is None:
            raise SessionNotRunningError(f"session {session_id} is not running")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        child.pending[rid] = fut
        try:
            child.proc.stdin.write((json.dumps({**message, "id": rid}) + "\n").encode())
            await child.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            child.pending.pop(rid, None)
            raise SessionNotRunningError(f"session {session_id} is not running") from e
        try:
            reply = await asyncio.wait_for(fut, REQUEST_TIMEOUT_S)
        except TimeoutError:
            child.pending.pop(rid, None)
            raise SessionRequestError("the session did not answer in time") from None
        if not reply.get("ok"):
            raise SessionRequestError(str(reply.get("error", "request refused")))
        data: dict[str, Any] = reply.get("data") or {}
        return data

    async def offer(self, session_id: str, offer: dict[str, Any]) -> dict[str, Any]:
        """Relay a browser's SDP offer; return the answer ``{sdp, type, pc_id}``.

        Raises:
            SessionNotRunningError: No live process for the session.
            SessionRequestError: The process refused the offer (e.g. malformed SDP).
        """
        return await self._request(session_id, {"op": "offer", **offer})

    async def ice(self, session_id: str, patch: dict[str, Any]) -> None:
        """Relay trickled ICE candidates ``{pc_id, candidates: [...]}``.

        Raises:
            SessionNotRunningError: No live process for the session.
            SessionRequestError: The process refused the candidates.
        """
        await self._request(session_id, {"op": "ice", **patch})

    async def end(self, session_id: str, reason: str = "ended by client") -> None:
        """Ask the session to say goodbye and stop; kill it after ``END_GRACE_S`` seconds.

        Raises:
            SessionNotRunningError: No live process for the session.
        """
        child = self._children.get(session_id)
        if child is None:
            raise SessionNotRunningError(f"session {session_id} is not running")
        with contextlib.suppress(SessionRequestError, SessionNotRunningError):
            await self._request(session_id, {"op": "end", "reason": reason})
        task = asyncio.create_task(self._reap_after(child, END_GRACE_S))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_after(self, child: _Child, grace_s: float) -> None:
        try:
            await asyncio.wait_for(child.proc.wait(), grace_s)
        except TimeoutError:
            await self._kill(child)
            await self._set_status(child.spec.session_id, "ended", "ended (forced)")

    async def _kill(self, child: _Child) -> None:
        if child.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            await child.proc.wait()

    async def retire_spares(self) -> None:
        """Stop keeping warm spares and end the idle ones (a draining host needs none)."""
        self.spares = ()
        # Taken before any await: a second call (a drain, then shutdown) finds nothing left.
        tasks, spares = list(self._spare_task.values()), list(self._spare.values())
        self._spare_task.clear()
        self._spare.clear()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A spare that finished preloading while its task was cancelled registered itself.
        spares += [s for s in self._spare.values() if s not in spares]
        self._spare.clear()
        for spare in spares:
            await self._retire(spare)

    async def shutdown(self) -> None:
        """Stop every session process (closing stdin ends idle ones; the rest are killed)."""
        await self.retire_spares()
        children = list(self._children.values())
        for child in children:
            if child.proc.stdin is not None:
                child.proc.stdin.close()
        for child in children:
            try:
                await asyncio.wait_for(child.proc.wait(), 5)
            except TimeoutError:
                await self._kill(child)
            if child.watcher is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await child.watcher
