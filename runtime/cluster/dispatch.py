"""An API replica's session runtime: sessions run on hosts found in the NATS registry.

:class:`ClusterSupervisor` does for an API replica what ``runtime.supervisor`` does in the
single-process default, over NATS (:mod:`runtime.cluster.bus`):

- **dispatch**: :meth:`~ClusterSupervisor.spawn` asks the best host
  (:func:`runtime.cluster.registry.rank`: a warm spare of the session's kind, then the
  least loaded) to start the session, and on a refusal the next, at most
  :data:`MAX_HOSTS_TRIED`;
- **signalling**: offers, ICE candidates and end requests go to the session's own subject,
  answered by whichever host runs it, so any replica can serve any session;
- **host death**: every ``host_heartbeat_s`` it reads the registry; a session whose host
  has left it (no heartbeat within ``host_ttl_s``) is marked ``failed``. The entry is
  deleted at its last revision first, so of several replicas exactly one marks it.

Losing a replica loses no session: :meth:`~ClusterSupervisor.shutdown` only disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from loguru import logger
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import (
    BadRequestError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from config.settings import Settings
from contracts.session_spec import SessionSpec
from runtime.cluster import media
from runtime.cluster.bus import (
    EPHEMERAL_BUCKET,
    EPHEMERAL_TTL_S,
    HOSTS_BUCKET,
    SESSIONS_BUCKET,
    bucket,
    connect,
    decode,
    encode,
    host_subject,
    session_subject,
)
from runtime.cluster.registry import HostRecord, rank, read_hosts
from runtime.protocol import CapacityError, SessionNotRunningError, SessionRequestError
from runtime.supervisor import END_GRACE_S, READY_TIMEOUT_S, REQUEST_TIMEOUT_S, spare_kind
from store import Store

HOST_LLM = "host://llm"
"""The ``llm_base_url`` an API replica puts in a spec: each host replaces it with its own."""
PURGE_EVERY_S = 600.0
"""How often a replica removes the sessions bucket's delete markers older than this, s."""
MAX_HOSTS_TRIED = 3
"""Hosts asked in turn before a spawn is refused with 429 ``at_capacity``."""


class ClusterSupervisor:
    """The API's :class:`api.runtime.Supervisor` for sessions on ``voxtutor host`` processes.

    Args:
        settings: ``nats_url``, ``host_heartbeat_s``, ``host_ttl_s``, ``max_local_sessions``.
        store: Where a dead host's sessions are marked ``failed``.
        on_ready: Called with each session's spawn-to-ready time through the dispatcher, s.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        on_ready: Callable[[float], None] | None = None,
    ):
        if not settings.nats_url:
            raise ValueError("ClusterSupervisor needs settings.nats_url")
        self.settings = settings
        self.store = store
        self.on_ready = on_ready
        self._records: dict[str, tuple[HostRecord, float]] = {}
        """Host id → (its latest record, when this replica got it, monotonic s)."""
        self._where: dict[str, str] = {}
        """Session id → host id, from the sessions bucket (and each spawn's answer)."""
        self._phone: set[str] = set()
        self._starting: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.spawn_seconds: list[float] = []
        """Spawn-to-ready time of each session this replica started, s."""

    async def start(self) -> None:
        """Connect, open the buckets, read the registry once and keep reading it.

        Raises:
            nats.errors.NoServersError: no NATS server answered.
        """
        assert self.settings.nats_url
        self.nc = await connect(self.settings.nats_url, "voxtutor-api")
        js = self.nc.jetstream()
        self.hosts_kv = await bucket(js, HOSTS_BUCKET, self.settings.host_ttl_s)
        self.sessions_kv = await bucket(js, SESSIONS_BUCKET)
        self.ephemeral = await bucket(js, EPHEMERAL_BUCKET, EPHEMERAL_TTL_S)
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._poll(), name="registry-poll"),
            asyncio.create_task(self._watch(self.hosts_kv, self._on_host, "hosts")),
            asyncio.create_task(self._watch(self.sessions_kv, self._on_session, "sessions")),
        ]

    # --- what the API reads -------------------------------------------------------------

    def hosts(self) -> list[HostRecord]:
        """The registered hosts: those whose record this replica got within the host TTL.

        Records arrive through a watch of the registry (every heartbeat of every host) and
        a listing each heartbeat; the receipt time, not the host's clock, ages them.
        """
        now = time.monotonic()
        ttl = self.settings.host_ttl_s
        return [r for r, at in self._records.values() if now - at <= ttl]

    @property
    def max_sessions(self) -> int:
        """Sessions the hosts that take sessions run at most, together."""
        return sum(h.max_sessions for h in self.hosts() if not h.draining)

    @property
    def max_local_sessions(self) -> int:
        """Local-tier sessions the hosts' LLM servers serve at most, together."""
        return self.settings.max_local_sessions * sum(1 for h in self.hosts() if not h.draining)

    @property
    def active_count(self) -> int:
        """Sessions on the hosts that take sessions, plus those this replica is starting.

        A draining host's sessions are left out as its slots are (:attr:`max_sessions`).
        """
        return sum(h.active for h in self.hosts() if not h.draining) + len(self._starting)

    def active_tiers(self) -> list[str]:
        """The tier of each session counted in :attr:`active_count`."""
        taking = [h for h in self.hosts() if not h.draining]
        return [t for h in taking for t in h.tiers] + list(self._starting.values())

    def is_running(self, session_id: str) -> bool:
        """``True``: a replica cannot know at once whether some host runs the session.

        Its copy of the sessions bucket may lag a spawn made through another replica by a
        few milliseconds; the request itself finds out (NATS answers "no responders" at once
        when no host runs it: :class:`SessionNotRunningError`).
        """
        return True

    def host_of(self, session_id: str) -> str | None:
        """The host that runs ``session_id`` as this replica last heard, or ``None``."""
        return self._where.get(session_id)

    def ready_info(self, session_id: str) -> dict[str, Any]:
        """``{"phone_url": "nats:<id>"}`` for a phone session, else ``{}``.

        A phone session's media goes over NATS (:meth:`open_media`).
        """
        return {"phone_url": f"nats:{session_id}"} if session_id in self._phone else {}

    def open_media(self, session_id: str) -> AbstractAsyncContextManager[media.RelaySocket]:
        """A relay to the phone session's media socket on its host (:mod:`.media`)."""
        return media.open_relay(self.nc, session_id)

    # --- dispatch -----------------------------------------------------------------------

    async def spawn(self, spec: SessionSpec) -> None:
        """Start the session on the best host that takes it; return once it is ready.

        Counted in :attr:`active_count` from the first step.

        Raises:
            CapacityError: no host took it (none registered, all full, draining or loaded).
            RuntimeError: the host's process did not start (the host marked it ``failed``),
                or the host did not answer within the ready timeout.
        """
        sid = spec.session_id
        self._starting[sid] = spec.tier
        try:
            await self._spawn(spec)
        finally:
            self._starting.pop(sid, None)

    async def _spawn(self, spec: SessionSpec) -> None:
        t0 = time.monotonic()
        kind = spare_kind(spec.tier, spec.transport)
        tried: set[str] = set()
        refusals: list[str] = []
        payload = encode({"spec": spec.to_json()})
        for attempt in range(MAX_HOSTS_TRIED):
            if attempt:
                await self.refresh()  # a refusal means the last read was stale
            able = [h for h in rank(self.hosts(), kind) if h.host_id not in tried]
            if not able:
                break
            host = able[0].host_id
            tried.add(host)
            try:
                answer = await self.nc.request(
                    host_subject(host, "spawn"), payload, timeout=READY_TIMEOUT_S + 10
                )
            except NoRespondersError:
                refusals.append(f"{host}: gone")
                continue
            except NatsTimeout:
                # It may still start there: ask it to end rather than run unconnected.
                with contextlib.suppress(Exception):
                    await self.end(spec.session_id, "the start took too long")
                raise RuntimeError(f"host {host} did not answer in time") from None
            body = decode(answer.data)
            if body.get("ok"):
                data = body.get("data") or {}
                self._where[spec.session_id] = host
                if data.get("phone"):
                    self._phone.add(spec.session_id)
                took = time.monotonic() - t0
                self.spawn_seconds.append(took)
                if self.on_ready is not None:
                    self.on_ready(took)
                logger.bind(session_id=spec.session_id).info(
                    f"session started on host {host} in {took * 1000:.0f} ms"
                )
                return
            if body.get("code") != "capacity":
                raise RuntimeError(str(body.get("error") or "the host failed to start it"))
            refusals.append(f"{host}: {body.get('error')}")
        detail = "; ".join(refusals) or "no session host is registered with a free slot"
        raise CapacityError(f"no session host took the session ({detail})", retry_after_s=10)

    # --- signalling ---------------------------------------------------------------------

    async def _request(
        self, session_id: str, op: str, body: dict[str, Any], wait_s: float
    ) -> dict[str, Any]:
        try:
            answer = await self.nc.request(
                session_subject(session_id, op), encode(body), timeout=wait_s
            )
        except ValueError:  # not a session id we could have issued
            raise SessionNotRunningError(f"session {session_id} is not running") from None
        except NoRespondersError:
            raise SessionNotRunningError(f"session {session_id} is not running") from None
        except NatsTimeout:
            raise SessionRequestError("the session did not answer in time") from None
        reply = decode(answer.data)
        if reply.get("ok"):
            data: dict[str, Any] = reply.get("data") or {}
            return data
        if reply.get("code") == "not_running":
            raise SessionNotRunningError(str(reply.get("error")))
        raise SessionRequestError(str(reply.get("error") or "request refused"))

    async def offer(self, session_id: str, offer: dict[str, Any]) -> dict[str, Any]:
        """Relay a browser's SDP offer to the session's host; return the answer.

        Raises:
            SessionNotRunningError: no host runs the session.
            SessionRequestError: the session refused the offer, or did not answer.
        """
        return await self._request(session_id, "offer", offer, REQUEST_TIMEOUT_S + 2)

    async def ice(self, session_id: str, patch: dict[str, Any]) -> None:
        """Relay trickled ICE candidates (errors as :meth:`offer`)."""
        await self._request(session_id, "ice", patch, REQUEST_TIMEOUT_S + 2)

    async def end(self, session_id: str, reason: str = "ended by client") -> None:
        """Ask the session to say goodbye and stop (its host kills it after the grace).

        Raises:
            SessionNotRunningError: no host runs the session.
        """
        with contextlib.suppress(SessionRequestError):
            await self._request(session_id, "end", {"reason": reason}, END_GRACE_S)

    # --- the registry -------------------------------------------------------------------

    async def refresh(self) -> None:
        """List the registry now, on top of what the watch delivered.

        A listing can miss a key that a heartbeat is replacing at that moment, so what it
        returns only adds to or refreshes the watched records, never removes one.
        """
        now = time.monotonic()
        for record in await read_hosts(self.hosts_kv, self.settings.host_ttl_s):
            self._records[record.host_id] = (record, now)
        for host_id, (_, at) in list(self._records.items()):  # long gone: forget
            if now - at > 10 * self.settings.host_ttl_s:
                del self._records[host_id]

    async def _poll(self) -> None:
        last_purge = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.host_heartbeat_s)
            try:
                await self.refresh()
                await self.reap()
                if time.monotonic() - last_purge > PURGE_EVERY_S:
                    # Ended sessions leave delete markers; without this the bucket (and each
                    # listing of it) grows with every session ever run.
                    last_purge = time.monotonic()
                    await self.sessions_kv.purge_deletes(olderthan=int(PURGE_EVERY_S))
            except Exception as e:  # NATS reconnecting: read again next time
                logger.debug(f"registry read failed: {e!r}")

    async def reap(self) -> int:
        """Mark ``failed`` the sessions of hosts no longer in the registry; return how many.

        Reads the sessions bucket itself (not the watched copy), so it also finds sessions
        left by hosts that died while no replica ran. A host counts as gone when its record
        has lapsed and it does not answer a ping either. The status is written before the
        entry is deleted, so a database error leaves the entry for the next pass.
        """
        try:
            keys = await self.sessions_kv.keys()
        except NoKeysError:
            return 0
        alive: dict[str, bool] = {}
        reaped = 0
        for sid in keys:
            with contextlib.suppress(Exception):
                entry = await self.sessions_kv.get(sid)
                host = str(decode(entry.value or b"").get("host"))
                if host not in alive:
                    alive[host] = await self._registered(host) or await self._answers(host)
                if alive[host]:
                    continue
                try:  # only the replica whose delete lands marks it
                    await self.sessions_kv.delete(sid, last=entry.revision)
                except (KeyWrongLastSequenceError, BadRequestError):
                    continue  # another replica's delete landed first (nats-py: 10071)
                self._where.pop(sid, None)
                reason = f"session host {host} stopped answering"
                try:
                    await self.store.set_session_status(sid, "failed", reason)
                except Exception:  # the database is down: leave it for the next pass
                    await self.sessions_kv.put(sid, entry.value or b"")
                    raise
                logger.bind(session_id=sid).error(f"session failed: {reason}")
                reaped += 1
        return reaped

    async def _registered(self, host_id: str) -> bool:
        """Whether ``host_id`` has a record in the registry now (read by key).

        By key, not from a listing: a listing (``keys()``) races the hosts' heartbeats and
        can miss a key that is being replaced, which would fail a live host's sessions. A
        record older than twice the TTL by its own ``updated`` counts as gone.
        """
        try:
            entry = await self.hosts_kv.get(host_id)
        except (KeyNotFoundError, KeyDeletedError):
            return False
        record = HostRecord.from_bytes(entry.value or b"")
        # Also by the record's age (the host's clock): a bucket whose max_age was set
        # otherwise, or not at all, must not keep a dead host alive.
        return record is not None and time.time() - record.updated <= 2 * self.settings.host_ttl_s

    async def _answers(self, host_id: str) -> bool:
        """Whether ``host_id`` answers a ping within the host TTL.

        Asked before its sessions are failed: a host whose record lapsed because NATS
        restarted, or because it stalled for a moment, still answers and keeps them.
        """
        try:
            subject = host_subject(host_id, "ping")
            await self.nc.request(subject, b"{}", timeout=self.settings.host_ttl_s)
        except (NoRespondersError, NatsTimeout):
            return False
        except ValueError:  # not a host id a subject may carry: nobody can answer
            return False
        return True

    def _on_host(self, entry: KeyValue.Entry) -> None:
        """A registry change: a host's new record, or its deletion (it left)."""
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self._records.pop(entry.key, None)
        elif (record := HostRecord.from_bytes(entry.value)) is not None:
            self._records[entry.key] = (record, time.monotonic())

    def _on_session(self, entry: KeyValue.Entry) -> None:
        """A sessions-bucket change: where a session runs, or that it ended."""
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self._where.pop(entry.key, None)
            self._phone.discard(entry.key)
        elif isinstance(host := decode(entry.value).get("host"), str):
            self._where[entry.key] = host

    async def _watch(
        self, kv: KeyValue, on_entry: Callable[[KeyValue.Entry], None], name: str
    ) -> None:
        """Feed every value of ``kv``, then every change, to ``on_entry``; reconnects."""
        while True:
            watcher = None
            try:
                watcher = await kv.watchall()
                async for entry in _updates(watcher):
                    on_entry(entry)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.debug(f"watch of the {name} bucket restarting: {e!r}")
                await asyncio.sleep(1)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()

    async def shutdown(self) -> None:
        """Stop reading and disconnect; the sessions go on on their hosts."""
        await self.close()

    async def close(self) -> None:
        """As :meth:`shutdown` (idempotent)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        nc = getattr(self, "nc", None)
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.drain()


async def _updates(watcher: KeyValue.KeyWatcher) -> AsyncIterator[KeyValue.Entry]:
    """Entries from a KV watcher (the initial values, then every change), forever."""
    while True:
        try:
            entry = await watcher.updates(timeout=60)
        except NatsTimeout:
            continue
        if entry is not None:  # None marks the end of the initial values
            yield entry
