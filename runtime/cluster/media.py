"""A phone call's media stream across machines: carrier socket on a replica, session on a host.

The carrier connects its WebSocket to whichever API replica its load balancer picks; the
session's process listens only on its host's loopback (:mod:`transports.phone`). The replica
asks the host (``voxtutor.session.<id>.media``) to open a relay; the host connects to the
session's socket and the two pass each text frame as one NATS message on
``voxtutor.relay.<relay id>.up`` (carrier → session) and ``.down`` (session → carrier); an
empty message closes the other side. Nothing on the host listens beyond loopback.

:func:`open_relay` gives the replica an object that behaves like the WebSocket client
:func:`api.phone_stream.relay` otherwise opens (``send``, ``async for``, ``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from loguru import logger
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from runtime.cluster.bus import decode, encode, relay_subject, session_subject

OPEN_TIMEOUT_S = 5.0
"""Longest wait for the host to open the session's socket, s."""
_relays: set[asyncio.Task[None]] = set()


async def serve_relay(nc: Client, session_url: str, relay_id: str) -> dict[str, Any]:
    """Host side: connect to the session's socket and relay it to ``relay_id``'s subjects.

    Returns once the socket is open and the ``up`` subject subscribed (the relay then runs in
    the background until either side closes).

    Raises:
        ValueError: a bad relay id.
        OSError, websockets.WebSocketException: the session's socket did not open.
    """
    up, down = relay_subject(relay_id, "up"), relay_subject(relay_id, "down")
    ws = await websockets.connect(session_url, open_timeout=OPEN_TIMEOUT_S, max_size=None)
    closed = asyncio.Event()

    async def from_carrier(msg: Msg) -> None:
        if not msg.data:
            closed.set()
            return
        try:
            await ws.send(msg.data.decode())
        except websockets.ConnectionClosed:
            closed.set()

    sub = await nc.subscribe(up, cb=from_carrier)

    async def pump() -> None:
        async def to_carrier() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for data in ws:
                    if isinstance(data, str):
                        await nc.publish(down, data.encode())

        sending = asyncio.create_task(to_carrier())
        closing = asyncio.create_task(closed.wait())
        try:
            await asyncio.wait({sending, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, closing):
                task.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await ws.close()
            with contextlib.suppress(Exception):
                await nc.publish(down, b"")

    task = asyncio.create_task(pump(), name=f"media-relay-{relay_id}")
    _relays.add(task)
    task.add_done_callback(_relays.discard)
    return {"relay": relay_id}


class RelaySocket:
    """Replica side of a relay: what :func:`api.phone_stream.relay` sends to and reads from."""

    def __init__(self, nc: Client, up: str):
        self._nc = nc
        self._up = up
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def send(self, text: str) -> None:
        """Pass one carrier text frame to the session."""
        await self._nc.publish(self._up, text.encode())

    async def __aiter__(self) -> AsyncIterator[str]:
        """The session's text frames, until it closes."""
        while data := await self.queue.get():
            yield data.decode()

    async def close(self) -> None:
        """Close the session's side (its socket closes; the session ends: caller gone)."""
        with contextlib.suppress(Exception):
            await self._nc.publish(self._up, b"")
            await self._nc.flush(timeout=2)


@asynccontextmanager
async def open_relay(nc: Client, session_id: str) -> AsyncIterator[RelaySocket]:
    """Open a relay to ``session_id``'s phone socket on whichever host runs it.

    Raises:
        ConnectionRefusedError: no host runs the session, or its socket did not open.
    """
    relay_id = uuid.uuid4().hex
    socket = RelaySocket(nc, relay_subject(relay_id, "up"))

    async def from_session(msg: Msg) -> None:
        socket.queue.put_nowait(msg.data)

    sub = await nc.subscribe(relay_subject(relay_id, "down"), cb=from_session)
    try:
        try:
            answer = await nc.request(
                session_subject(session_id, "media"),
                encode({"relay": relay_id}),
                timeout=OPEN_TIMEOUT_S + 1,
            )
        except (NoRespondersError, NatsTimeout) as e:
            raise ConnectionRefusedError(f"no host answers for session {session_id}") from e
        body = decode(answer.data)
        if not body.get("ok"):
            raise ConnectionRefusedError(str(body.get("error") or "relay refused"))
        logger.bind(session_id=session_id).info("phone media relayed over NATS")
        try:
            yield socket
        finally:
            await socket.close()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
