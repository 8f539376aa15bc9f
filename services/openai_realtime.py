"""OpenAI Realtime speech-to-speech whose dead connection ends the session with an error.

Pipecat 1.14's ``OpenAIRealtimeLLMService`` connects once and never reconnects. What it does
when the provider fails (read from ``pipecat/services/openai/realtime/llm.py``, and observed
with the plain service against ``testkit/providers/openai_realtime_fake.py``):

- Handshake refused (401, 429, 5xx): one ``ErrorFrame`` ("Error connecting"), then the service
  sends nothing (no websocket) and the session goes on silent.
- Connection accepted but never answered: no error at all; the greeting and every learner turn
  wait for ``session.updated`` forever.
- Connection dropped mid-stream, or a frame that is not a Realtime event: the receive task logs
  the exception and ends, with no ``ErrorFrame``; after a drop, every audio frame sent then
  pushes an ``ErrorFrame`` ("Error sending client event"), 50 a second.
- In-band ``error`` event: one ``ErrorFrame``, and the receive loop stops reading ("errors are
  fatal to this connection").

:class:`RealtimeLLMService` keeps all of that and adds one rule: once the connection can no
longer carry the conversation (refused, not ready within ``ready_timeout_s``, dropped,
unreadable, or stopped after an error) it reports one permanent ``ErrorFrame``, so the
pipeline worker's ``ProcessorUnusablePolicy.END`` ends the session instead of leaving the
learner in silence. It overrides private methods of the pinned 1.14 service.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService

DEFAULT_READY_TIMEOUT_S = 10.0
"""Seconds from connecting to ``session.updated`` before the connection is given up."""


class RealtimeLLMService(OpenAIRealtimeLLMService):
    """``OpenAIRealtimeLLMService`` that reports a dead connection as permanent (module doc).

    Args:
        ready_timeout_s: Seconds the server may take from the handshake to answering the
            first ``session.update`` with ``session.updated``.
        **kwargs: Passed to ``OpenAIRealtimeLLMService`` (``api_key``, ``base_url``,
            ``settings``, ...).
    """

    def __init__(self, *, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S, **kwargs: Any):
        super().__init__(**kwargs)
        self._ready_timeout_s = ready_timeout_s
        self._watchdog: asyncio.Task[None] | None = None
        self._given_up = False

    async def _connect(self) -> None:
        await super()._connect()
        if self._websocket is None:
            await self._give_up("OpenAI Realtime: no connection (handshake refused or failed)")
        elif self._watchdog is None:
            self._watchdog = self.create_task(self._await_ready(), name=f"{self}::ready")

    async def _disconnect(self) -> None:
        if self._watchdog is not None:
            await self.cancel_task(self._watchdog)
            self._watchdog = None
        await super()._disconnect()

    async def _await_ready(self) -> None:
        await asyncio.sleep(self._ready_timeout_s)
        if not self._api_session_ready:
            await self._give_up(
                f"OpenAI Realtime: no session.updated within {self._ready_timeout_s:g} s"
            )

    async def _receive_task_handler(self) -> None:
        try:
            await super()._receive_task_handler()
        except Exception as e:  # a drop (ConnectionClosedError) or a frame that does not parse
            await self._give_up(f"OpenAI Realtime connection lost: {e}", e)
            return
        await self._give_up("OpenAI Realtime stopped: the server closed or sent an error")

    async def _give_up(self, message: str, exception: Exception | None = None) -> None:
        """Report once that the connection is dead, unless the session is closing it."""
        if self._disconnecting or self._given_up:
            return
        self._given_up = True
        # Stop writing to the dead socket: Pipecat would report every audio frame as an error.
        websocket, self._websocket = self._websocket, None
        if websocket is not None:
            await websocket.close()
        await self.push_error(message, exception=exception, force_treat_as_permanent=True)
