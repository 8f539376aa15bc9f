"""Names and plumbing every process of a scaled-out deployment shares on NATS.

One place says which subjects and JetStream key-value buckets exist and what goes in them,
so an API replica and a session host cannot disagree:

``voxtutor.host.<host id>.spawn``
    request/reply: ``{"spec": SessionSpec JSON}`` → :func:`reply` (``data`` is the session
    process's ``ready`` info). Refusals say ``code: "capacity"`` (full, draining, loaded) or
    ``"failed"`` (the process did not start; the host marked the session ``failed``).
``voxtutor.host.<host id>.drain``
    request/reply: the host stops taking sessions and exits when its last one has ended.
``voxtutor.host.<host id>.ping``
    request/reply: the host is alive (asked before a replica fails its sessions).
``voxtutor.session.<session id>.<op>``
    request/reply, ``op`` one of ``offer``, ``ice``, ``end``, ``media``: whichever API replica
    got a browser's or carrier's request reaches the host that runs the session. No
    subscriber (the session is not running anywhere) → NATS's no-responders error at once.
``voxtutor.relay.<relay id>.up`` / ``.down``
    a phone call's media stream between the replica holding the carrier's socket and the
    host running the session: one NATS message per WebSocket text frame, in order; an empty
    message closes (:mod:`runtime.cluster.media`).
Bucket ``voxtutor_hosts`` (:data:`HOSTS_BUCKET`)
    host id → :class:`runtime.cluster.registry.HostRecord` JSON, refreshed every heartbeat;
    the bucket's ``max_age`` is the host TTL, so a host that stops refreshing drops out.
Bucket ``voxtutor_sessions`` (:data:`SESSIONS_BUCKET`)
    session id → ``{"host": host id}`` while the session's process runs.
Bucket ``voxtutor_ephemeral`` (:data:`EPHEMERAL_BUCKET`)
    short-lived state any replica must see: phone media-stream tokens and answered calls,
    Daily dial-in de-duplication (``max_age`` :data:`EPHEMERAL_TTL_S`).

Subjects and keys carry only ids the server generated (UUIDs, ``[A-Za-z0-9_-]`` host ids),
never text a caller chose. NATS: https://docs.nats.io/nats-concepts/core-nats/reqreply,
key-value stores: https://docs.nats.io/nats-concepts/jetstream/key-value-store.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoServersError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

PREFIX = "voxtutor"
HOSTS_BUCKET = "voxtutor_hosts"
SESSIONS_BUCKET = "voxtutor_sessions"
EPHEMERAL_BUCKET = "voxtutor_ephemeral"
EPHEMERAL_TTL_S = 900.0
"""Longest any ephemeral entry lives, s (a phone token is valid for far less; a replayed
call webhook is answered from it for 10 minutes)."""
SESSION_OPS = ("offer", "ice", "end", "media")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
FIRST_CONNECT_S = 10.0
"""Longest wait for the first connection to NATS, s (later drops are retried forever)."""


def host_subject(host_id: str, op: str) -> str:
    """``voxtutor.host.<host_id>.<op>`` (``op``: ``spawn`` or ``drain``).

    Raises:
        ValueError: ``host_id`` is not 1-64 of ``[A-Za-z0-9_-]``.
    """
    return f"{PREFIX}.host.{_checked(host_id)}.{op}"


def session_subject(session_id: str, op: str) -> str:
    """``voxtutor.session.<session_id>.<op>`` for one of :data:`SESSION_OPS`.

    Raises:
        ValueError: a session id that is not 1-64 of ``[A-Za-z0-9_-]``, or an unknown op.
    """
    if op not in SESSION_OPS:
        raise ValueError(f"unknown session op {op!r}")
    return f"{PREFIX}.session.{_checked(session_id)}.{op}"


def relay_subject(relay_id: str, direction: str) -> str:
    """``voxtutor.relay.<relay_id>.<direction>``: ``up`` carrier → session, ``down`` back.

    Raises:
        ValueError: a bad id or direction.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"unknown relay direction {direction!r}")
    return f"{PREFIX}.relay.{_checked(relay_id)}.{direction}"


def _checked(name: str) -> str:
    if not _ID.fullmatch(name):
        raise ValueError(f"not a valid id for a NATS subject: {name!r}")
    return name


async def connect(url: str, name: str) -> Client:
    """Connect to NATS at ``url``, trying the first connection for up to 10 s.

    Args:
        url: ``nats://host:4222`` (``VOXTUTOR_NATS_URL``).
        name: The client's name in the server's monitoring (e.g. ``voxtutor-host-a``).

    Raises:
        nats.errors.NoServersError: no server answered.
    """
    try:
        return await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,  # once connected, keep trying through a restart
                reconnect_time_wait=0.5,
            ),
            FIRST_CONNECT_S,
        )
    except TimeoutError:
        raise NoServersError(f"no NATS server answered at {redact(url)}") from None


def redact(url: str) -> str:
    """``url`` without its user and password (for log lines and error messages)."""
    return re.sub(r"//[^/@]*@", "//", url)


async def bucket(js: JetStreamContext, name: str, ttl_s: float | None = None) -> KeyValue:
    """The key-value bucket ``name``, created (one revision per key) if it does not exist.

    Args:
        js: A JetStream context.
        name: :data:`HOSTS_BUCKET`, :data:`SESSIONS_BUCKET` or :data:`EPHEMERAL_BUCKET`.
        ttl_s: The bucket's ``max_age`` when it is created here, s; ``None``: entries live
            until deleted. An existing bucket keeps its own.
    """
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        return await js.create_key_value(config=KeyValueConfig(bucket=name, history=1, ttl=ttl_s))


def encode(obj: dict[str, Any]) -> bytes:
    """``obj`` as compact JSON bytes (what every message and KV value carries)."""
    return json.dumps(obj, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any]:
    """A message or KV value back as a dict; ``{}`` for anything that is not a JSON object."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def reply(ok: bool, data: dict[str, Any] | None = None, code: str = "", error: str = "") -> bytes:
    """A request's answer: ``{"ok": true, "data": {...}}`` or ``{"ok": false, "code", "error"}``."""
    if ok:
        return encode({"ok": True, "data": data or {}})
    return encode({"ok": False, "code": code, "error": error})
