"""What a session writes to the store while it runs, whoever carries the writes.

In the server the :class:`store.Store` takes the writes itself; in a session process a
relay (:class:`runtime.store_relay.StoreRelay`) sends each one to the server as a line.
Observers and pipelines take a :class:`SessionWriter` and work with either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from contracts.turns import TurnRecord


class SessionWriter(Protocol):
    """The store writes a running session makes; return values, if any, are not used."""

    async def add_turn(self, session_id: str, turn: Mapping[str, Any] | TurnRecord) -> object:
        """Store a completed turn (a :class:`TurnRecord` or its ``to_dict()``)."""
        ...

    async def set_session_status(
        self, session_id: str, status: str, end_reason: str | None = None
    ) -> object:
        """Set the session's status (``active``, ``ended``, ...) and, if given, why it ended."""
        ...

    async def add_session_event(
        self, session_id: str, kind: str, data: Mapping[str, Any] | None = None
    ) -> object:
        """Store a session event (:mod:`contracts.events`) with a JSON object of details."""
        ...

    async def add_assessment(
        self, session_id: str, assessment: Mapping[str, Any], turn_index: int | None = None
    ) -> object:
        """Store a learner turn's assessment (``contracts.assessment.Assessment.to_dict()``)."""
        ...

    async def review_item(
        self, session_id: str, item_id: int, correct: bool, answer: str = ""
    ) -> object:
        """Record an answer to a review item in a review session; FSRS reschedules it."""
        ...

    async def add_usage_event(
        self,
        session_id: str,
        service: str,
        provider: str,
        model: str,
        metric: str,
        quantity: float,
    ) -> object:
        """Store one metered quantity (e.g. ``tts``, ``cartesia``, ``sonic-3``, ``characters``)."""
        ...
