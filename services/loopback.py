"""An in-process uvicorn server on a loopback port.

For the small HTTP/websocket endpoints a process serves next to its main work: a phone
call's media socket, the shared smart-turn service.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the hosting process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class LoopbackServer:
    """A started server: its port, and how to stop it.

    Attributes:
        port: The TCP port on 127.0.0.1 it listens on.
    """

    port: int
    _server: uvicorn.Server
    _task: asyncio.Task[None]

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the server to exit and wait up to ``timeout_s`` seconds for it."""
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, timeout_s)


async def serve_loopback(app: Any, name: str, port: int = 0) -> LoopbackServer:
    """Serve the ASGI ``app`` on ``127.0.0.1:port`` (0: a free port) in this event loop.

    Raises:
        OSError: the port cannot be bound.
        RuntimeError: the server did not start within 10 s (or its task failed: re-raised).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    bound = sock.getsockname()[1]
    # No permessage-deflate: a call's media socket carries 50 base64 audio messages a second
    # each way, which barely compress; deflating them cost ~2 % of a call's CPU, for nothing
    # on loopback.
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws_per_message_deflate=False)
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=name)
    for _ in range(1000):
        if server.started:
            return LoopbackServer(bound, server, task)
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    server.should_exit = True
    raise RuntimeError(f"{name} did not start")
