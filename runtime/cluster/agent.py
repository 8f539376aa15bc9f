"""A session host on NATS: registers, takes sessions, answers their signalling, drains.

``voxtutor host`` runs one :class:`HostAgent` around a local
:class:`runtime.supervisor.SessionSupervisor`. Every ``host_heartbeat_s`` it writes its
:class:`~runtime.cluster.registry.HostRecord` (free slots, warm spares, CPU load, memory)
to the ``voxtutor_hosts`` bucket, whose ``max_age`` is the host TTL: a host that dies
drops out of the registry within it, and the API replicas mark its sessions ``failed``
(:mod:`runtime.cluster.dispatch`). It answers ``voxtutor.host.<id>.spawn`` (start a session
here) and, for each session it runs, ``voxtutor.session.<id>.{offer,ice,end,media}``.

It refuses a spawn (``code: "capacity"``) while draining, at ``max_sessions``, at or above
``host_load_threshold`` or, for a local-tier session, at ``max_local_sessions`` (the sessions
its one llama.cpp server serves): the dispatcher then tries the next host. Draining (a
``drain`` request or SIGTERM) takes it out of dispatch at once, and :meth:`HostAgent.run`
returns once its last session has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from typing import Any

from loguru import logger
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NoKeysError

from config.settings import Settings
from config.tiers import load_tiers
from contracts.session_spec import SessionSpec
from runtime.cluster import media
from runtime.cluster.bus import (
    HOSTS_BUCKET,
    SESSIONS_BUCKET,
    bucket,
    decode,
    encode,
    host_subject,
    redact,
    reply,
    session_subject,
)
from runtime.cluster.registry import HostRecord, machine_load
from runtime.protocol import CapacityError, SessionNotRunningError, SessionRequestError
from runtime.supervisor import SPARE_KINDS, SessionSupervisor


def uses_local_llm(tier: str) -> bool:
    """Whether ``tier``'s LLM is served first by the host's llama.cpp server."""
    found = load_tiers().get(tier)
    return found is not None and bool(found.llm) and found.llm[0].provider == "local"


class HostAgent:
    """One session host's presence on NATS.

    Args:
        settings: ``host_heartbeat_s``, ``host_ttl_s``, ``host_load_threshold``,
            ``max_local_sessions``.
        supervisor: Runs the session processes.
        nc: A connected NATS client.
        host_id: This host's registry name (1-64 of ``[A-Za-z0-9_-]``).
        llm_base_url: This host's LLM server; replaces every spec's ``llm_base_url``.
    """

    def __init__(
        self,
        settings: Settings,
        supervisor: SessionSupervisor,
        nc: Client,
        host_id: str,
        llm_base_url: str,
    ):
        self.settings = settings
        self.supervisor = supervisor
        self.nc = nc
        self.host_id = host_id
        self.llm_base_url = llm_base_url
        self.draining = False
        self.drained = asyncio.Event()
        self._subs: list[Subscription] = []
        self._session_subs: dict[str, list[Subscription]] = {}
        self._starting: set[str] = set()
        self._local_starting: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._beat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the buckets, answer spawn and drain requests, start the heartbeat.

        The first registry entry is written before this returns.
        """
        js = self.nc.jetstream()
        self._hosts = await bucket(js, HOSTS_BUCKET, self.settings.host_ttl_s)
        self._sessions = await bucket(js, SESSIONS_BUCKET)
        self._subs.append(
            await self.nc.subscribe(host_subject(self.host_id, "spawn"), cb=self._on_spawn)
        )
        await self._claim_id()
        self._subs.append(
            await self.nc.subscribe(host_subject(self.host_id, "drain"), cb=self._on_drain)
        )
        self._subs.append(
            await self.nc.subscribe(host_subject(self.host_id, "ping"), cb=self._on_ping)
        )
        await self._fail_left_behind()
        await self.publish()
        self._beat = asyncio.create_task(self._heartbeat(), name="host-heartbeat")
        where = redact(self.settings.nats_url or "")
        logger.info(f"session host {self.host_id} registered on {where}")

    async def _claim_id(self) -> None:
        """Make sure no other live host uses this id (both would take every spawn).

        A record of this id younger than the TTL is either a predecessor that just died
        (it ages out within the TTL) or another live host (it keeps being refreshed).

        Raises:
            RuntimeError: another host has kept this id's record fresh for over a TTL.
        """
        ttl = self.settings.host_ttl_s
        deadline = time.monotonic() + 1.5 * ttl
        while True:
            try:
                entry = await self._hosts.get(self.host_id)
            except (KeyNotFoundError, KeyDeletedError):
                return
            record = HostRecord.from_bytes(entry.value or b"")
            if record is None or time.time() - record.updated > ttl:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"another session host is running as {self.host_id!r}: give each host its "
                    "own VOXTUTOR_HOST_ID"
                )
            await asyncio.sleep(self.settings.host_heartbeat_s)

    async def _on_ping(self, msg: Msg) -> None:
        await msg.respond(reply(True, {"host": self.host_id, "active": self._active()}))

    async def _fail_left_behind(self) -> None:
        """Mark ``failed`` the sessions a previous process with this host id left listed.

        A host restarted under the same id within the TTL never left the registry, so no
        replica would find its predecessor's sessions dead.
        """
        with contextlib.suppress(NoKeysError):
            for sid in await self._sessions.keys():
                with contextlib.suppress(Exception):
                    entry = await self._sessions.get(sid)
                    if decode(entry.value or b"").get("host") != self.host_id:
                        continue
                    await self._sessions.delete(sid)
                    reason = f"session host {self.host_id} restarted"
                    await self.supervisor.store.set_session_status(sid, "failed", reason)
                    logger.bind(session_id=sid).warning(f"session failed: {reason}")

    def record(self) -> HostRecord:
        """What this host is now, as the registry will hold it."""
        sup = self.supervisor
        load, memory = machine_load()
        active = self._active()
        closed = self.draining or load >= self.settings.host_load_threshold
        free = 0 if closed else max(0, sup.max_sessions - active)
        local_free = free
        if free:
            local_used = sum(map(uses_local_llm, sup.active_tiers()))
            local_free = min(free, max(0, self.settings.max_local_sessions - local_used))
        return HostRecord(
            host_id=self.host_id,
            max_sessions=sup.max_sessions,
            active=active,
            free={k: (local_free if k == "local" else free) for k in SPARE_KINDS},
            warm=sorted(sup.spare_pids()),
            tiers=sup.active_tiers(),
            load=load,
            memory_available_mb=memory,
            draining=self.draining,
            updated=time.time(),
        )

    def _active(self) -> int:
        """Sessions running or starting here (a spawn counts from its request)."""
        return len(self.supervisor.active_ids() | self._starting)

    async def publish(self) -> None:
        """Write :meth:`record` to the registry now."""
        await self._hosts.put(self.host_id, self.record().to_bytes())

    async def _heartbeat(self) -> None:
        every = self.settings.host_heartbeat_s
        last = time.monotonic()
        while True:
            await asyncio.sleep(every)
            try:
                await self._forget_ended()
                await self.publish()
            except Exception as e:  # NATS reconnecting: the next beat retries
                logger.warning(f"session host {self.host_id}: heartbeat failed: {e!r}")
            now = time.monotonic()
            if now - last > every + self.settings.host_ttl_s / 2:
                logger.warning(
                    f"session host {self.host_id}: heartbeat {now - last:.1f} s after the "
                    f"last (TTL {self.settings.host_ttl_s:.0f} s)"
                )
            last = now
            if self.draining and self.supervisor.active_count == 0 and not self._starting:
                self.drained.set()

    async def _forget_ended(self) -> None:
        """Drop the subjects and registry entries of sessions whose process has exited.

        A running session whose entry is gone was taken for dead by a replica (this host
        missed heartbeats) and is already ``failed`` in the store: it is ended, so no
        session runs that the store calls failed.
        """
        for sid in list(self._session_subs):
            if sid in self._starting:
                continue
            if self.supervisor.is_running(sid):
                try:
                    await self._sessions.get(sid)
                except (KeyNotFoundError, KeyDeletedError):
                    logger.bind(session_id=sid).error("session was failed by a replica; ending it")
                    with contextlib.suppress(Exception):
                        await self.supervisor.end(sid, "session host lost its registration")
                continue
            for sub in self._session_subs.pop(sid, []):
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self._sessions.delete(sid)

    def _spawn_refusal(self, spec: SessionSpec) -> str | None:
        """Why this host will not take ``spec`` now, or ``None``."""
        if self.draining:
            return f"host {self.host_id} is draining"
        sup = self.supervisor
        if self._active() >= sup.max_sessions:
            return f"all {sup.max_sessions} session slots of host {self.host_id} are in use"
        load = machine_load()[0]
        if load >= self.settings.host_load_threshold:
            return f"host {self.host_id} is loaded ({load:.2f} per core)"
        if uses_local_llm(spec.tier):
            running = {sid for sid in sup.active_ids() if sid not in self._local_starting}
            used = len(self._local_starting) + sum(
                uses_local_llm(sup.tier_of(sid) or "") for sid in running
            )
            if used >= self.settings.max_local_sessions:
                return f"host {self.host_id}'s LLM server serves {used} sessions already"
        return None

    async def _on_spawn(self, msg: Msg) -> None:
        # Each spawn runs in its own task: this callback must not hold up the next request.
        task = asyncio.create_task(self._spawn(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self, msg: Msg) -> None:
        try:
            spec = SessionSpec(**(decode(msg.data).get("spec") or {}))
        except Exception as e:
            await msg.respond(reply(False, code="bad_request", error=f"bad spec: {e}"))
            return
        sid = spec.session_id
        refusal = self._spawn_refusal(spec)
        if refusal is not None:
            await msg.respond(reply(False, code="capacity", error=refusal))
            return
        self._starting.add(sid)
        if uses_local_llm(spec.tier):
            self._local_starting.add(sid)
        try:
            await self._start(msg, spec)
        except Exception as e:  # never leave the replica waiting for its timeout
            logger.bind(session_id=sid).exception("spawn failed")
            with contextlib.suppress(Exception):
                await self.supervisor.store.set_session_status(sid, "failed", f"host error: {e!r}")
                await msg.respond(reply(False, code="failed", error=type(e).__name__))
        finally:
            self._starting.discard(sid)
            self._local_starting.discard(sid)
            with contextlib.suppress(Exception):
                await self._forget_ended()
                await self.publish()

    async def _start(self, msg: Msg, spec: SessionSpec) -> None:
        """Register the session's subjects and entry, spawn it, answer the replica."""
        sid = spec.session_id
        await self._sessions.put(sid, encode({"host": self.host_id}))
        self._session_subs[sid] = [
            await self.nc.subscribe(session_subject(sid, op), cb=self._session_handler(op))
            for op in ("offer", "ice", "end", "media")
        ]
        await self.publish()  # the slot is taken: dispatchers see it before the next beat
        try:
            await self.supervisor.spawn(replace(spec, llm_base_url=self.llm_base_url))
        except CapacityError as e:
            await msg.respond(reply(False, code="capacity", error=str(e)))
            return
        except RuntimeError as e:  # the supervisor marked the session failed
            await msg.respond(reply(False, code="failed", error=str(e)))
            return
        logger.bind(session_id=sid).info(f"session started on host {self.host_id}")
        data: dict[str, Any] = {"host": self.host_id}
        if self.supervisor.ready_info(sid).get("phone_url"):
            data["phone"] = True
        await msg.respond(reply(True, data))

    def _session_handler(self, op: str) -> Any:
        async def handle(msg: Msg) -> None:
            task = asyncio.create_task(self._session_request(op, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return handle

    async def _session_request(self, op: str, msg: Msg) -> None:
        sid = msg.subject.split(".")[2]
        body = decode(msg.data)
        try:
            if op == "offer":
                data = await self.supervisor.offer(sid, body)
            elif op == "ice":
                await self.supervisor.ice(sid, body)
                data = {}
            elif op == "end":
                await self.supervisor.end(sid, str(body.get("reason") or "ended by client"))
                data = {}
            else:
                url = self.supervisor.ready_info(sid).get("phone_url")
                if not url:
                    raise SessionRequestError("the session serves no phone socket")
                data = await media.serve_relay(self.nc, url, str(body.get("relay") or ""))
        except SessionNotRunningError as e:
            await msg.respond(reply(False, code="not_running", error=str(e)))
        except SessionRequestError as e:
            await msg.respond(reply(False, code="refused", error=str(e)))
        except Exception as e:  # never leave a replica waiting for its timeout
            logger.exception(f"session {sid}: {op} failed")
            await msg.respond(reply(False, code="refused", error=type(e).__name__))
        else:
            await msg.respond(reply(True, data))

    async def _on_drain(self, msg: Msg) -> None:
        await self.drain()
        await msg.respond(reply(True, {"host": self.host_id, "active": self.record().active}))

    async def drain(self) -> None:
        """Stop taking sessions; :meth:`run` returns once the last one has ended.

        The registry shows it draining at once (no dispatcher sends it more); warm spares
        are retired.
        """
        if self.draining:
            return
        self.draining = True
        logger.info(f"session host {self.host_id} draining: {self.supervisor.active_count} left")
        with contextlib.suppress(Exception):
            await self.publish()
        await self.supervisor.retire_spares()

    async def run(self) -> None:
        """Serve until drained (:meth:`drain`) and every session has ended."""
        await self.drained.wait()

    async def close(self) -> None:
        """Leave the registry at once and stop answering (the supervisor is the caller's)."""
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        for sub in self._subs + [s for subs in self._session_subs.values() for s in subs]:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for sid in list(self._session_subs):
            with contextlib.suppress(Exception):
                await self._sessions.delete(sid)
        self._session_subs.clear()
        with contextlib.suppress(Exception):
            await self._hosts.delete(self.host_id)
        for task in list(self._tasks):
            task.cancel()
