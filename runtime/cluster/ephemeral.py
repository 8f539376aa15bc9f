"""Short-lived state every API replica must see, in the ``voxtutor_ephemeral`` bucket.

A carrier's call webhook can reach replica A while its media-stream WebSocket (or a retried
webhook) reaches replica B, so the phone tokens, answered calls and Daily dial-in
de-duplication of a scaled-out deployment live in NATS JetStream KV
(:data:`runtime.cluster.bus.EPHEMERAL_BUCKET`), not in one process's memory.

Every entry of the bucket shares its ``max_age`` (:data:`~runtime.cluster.bus.EPHEMERAL_TTL_S`),
so each value carries its own expiry: ``{"until": <Unix time, s>, "value": {...}}``; an entry
past ``until`` reads as absent. Replicas compare ``until`` with their own clocks, so they
should be NTP-synchronised (a skew of a second or two only moves expiries by as much).

Keys are ``<kind>.<sha256 hex of the id>``: carrier call ids and tokens from URLs are text
others chose (``:`` and other characters NATS keys refuse), and hashing also keeps the
tokens themselves out of the bucket's keys. "Take once" and "create if absent" use the
bucket's per-key revisions (https://docs.nats.io/nats-concepts/jetstream/key-value-store),
so of several replicas exactly one wins.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from runtime.cluster.bus import EPHEMERAL_TTL_S, decode, encode

_KIND = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_WRONG_LAST = (10071, 10164)
"""JetStream error codes of a write whose expected last revision did not match
(``KeyValue.delete`` raises them as a plain :class:`APIError`)."""
_ATTEMPTS = 3
"""Tries of :meth:`Ephemeral.create` when the key changes under it."""


def key(kind: str, ident: str) -> str:
    """The bucket key of ``ident`` (any text) in ``kind``: ``<kind>.<sha256 hex>``.

    Args:
        kind: What the entry is, ``[a-z][a-z0-9-]*`` (e.g. ``phone-token``, ``dialin``).
        ident: The token, call id, … the entry is about.

    Raises:
        ValueError: ``kind`` is not a lowercase word.
    """
    if not _KIND.match(kind):
        raise ValueError(f"not a valid ephemeral key kind: {kind!r}")
    return f"{kind}.{hashlib.sha256(ident.encode()).hexdigest()}"


def _wrong_last(e: APIError) -> bool:
    return isinstance(e, KeyWrongLastSequenceError) or e.err_code in _WRONG_LAST


class Ephemeral:
    """JSON values with their own expiry over a key-value bucket (see the module doc).

    Args:
        kv: The ``voxtutor_ephemeral`` bucket (``ClusterSupervisor.ephemeral``), or any
            bucket with one revision per key (tests use their own).
    """

    def __init__(self, kv: KeyValue):
        self.kv = kv

    async def put(self, key: str, value: dict[str, Any], ttl_s: float) -> int:
        """Store ``value`` under ``key`` for ``ttl_s`` seconds; return the entry's revision.

        Args:
            key: A :func:`key`.
            value: A JSON object.
            ttl_s: How long it reads as present, s; at most the bucket's ``max_age``,
                :data:`~runtime.cluster.bus.EPHEMERAL_TTL_S` (a longer one is cut to it).

        Raises:
            ValueError: ``ttl_s`` is not positive.
        """
        return await self.kv.put(key, _wrap(value, ttl_s))

    async def get(self, key: str) -> dict[str, Any] | None:
        """The value under ``key``; ``None`` if absent, deleted or expired."""
        found = await self._entry(key)
        if found is None or found[2] < time.time():
            return None
        return found[0] or None

    async def take(self, key: str, expired_too: bool = False) -> dict[str, Any] | None:
        """Delete ``key``'s entry and return its value, once across all replicas.

        Args:
            key: A :func:`key`.
            expired_too: Also take an entry past its expiry (a timer cleaning up after it);
                otherwise an expired entry is left alone and ``None`` returned.

        Returns:
            The value, or ``None`` if absent, expired, or taken by someone else first.
        """
        found = await self._entry(key)
        if found is None:
            return None
        value, revision, until = found
        if value is None or (until < time.time() and not expired_too):
            return None
        try:
            await self.kv.delete(key, last=revision)
        except APIError as e:
            if _wrong_last(e):
                return None  # changed or taken since we read it
            raise
        return value

    async def create(self, key: str, value: dict[str, Any], ttl_s: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl_s`` s unless a live entry is there.

        An expired entry counts as absent and is replaced (at its revision, so of two
        replicas replacing it only one succeeds).

        Returns:
            Whether this call stored it (``False``: another live entry holds the key).
        """
        data = _wrap(value, ttl_s)
        for _ in range(_ATTEMPTS):
            try:
                await self.kv.create(key, data)
                return True
            except KeyWrongLastSequenceError:
                pass
            found = await self._entry(key)
            if found is None:
                continue  # deleted since: create again
            if found[2] >= time.time():
                return False
            try:
                await self.kv.update(key, data, last=found[1])
                return True
            except KeyWrongLastSequenceError:
                continue
        return False

    async def delete(self, key: str) -> None:
        """Remove ``key``'s entry (nothing if there is none)."""
        await self.kv.delete(key)

    async def _entry(self, key: str) -> tuple[dict[str, Any] | None, int, float] | None:
        """``(value, revision, until)`` of ``key``, expired or not; ``None`` if absent.

        A value not written by :class:`Ephemeral` reads as ``(None, revision, 0.0)``: expired.
        """
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:  # also a deleted key
            return None
        body = decode(entry.value or b"")
        value, until = body.get("value"), body.get("until")
        if not isinstance(value, dict) or not isinstance(until, int | float):
            return None, entry.revision or 0, 0.0
        return value, entry.revision or 0, float(until)


def _wrap(value: dict[str, Any], ttl_s: float) -> bytes:
    """``value`` with its expiry, ``ttl_s`` from now (at most the bucket's ``max_age``), s.

    Raises:
        ValueError: ``ttl_s`` is not positive.
    """
    if not ttl_s > 0:
        raise ValueError(f"an ephemeral entry must live a positive time, not {ttl_s} s")
    return encode({"until": time.time() + min(ttl_s, EPHEMERAL_TTL_S), "value": value})
