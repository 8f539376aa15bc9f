"""A session process's writes to the store, relayed to the server over the control channel.

A session process does not open the database. Each write (a completed turn, a status
change, a session event, a usage row) is one JSON line on its stdout, written and flushed
before the call returns::

    {"event": "store", "call": "add_turn", "args": ["<session id>", {...turn...}]}

The server's :class:`runtime.supervisor.SessionSupervisor` applies the lines in order with
its own store, and reads every line a process wrote before it died before it marks the
session failed: a crash loses no write that returned, as when the process wrote to the
database itself. The process may write only its own session's rows (the supervisor checks
the session id) and only through :data:`RELAYED_CALLS`.

Why: SQLAlchemy, the database drivers and the store's models cost a session process about
22 MB of its ~240 MB (``bench/README.md``), and the database URL, which may carry a
password, no longer reaches the session's command line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from contracts.turns import TurnRecord

RELAYED_CALLS = frozenset(
    {
        "add_turn",
        "set_session_status",
        "add_session_event",
        "add_usage_event",
        "add_assessment",
        "review_item",
    }
)
"""The store methods a session process may call (``store.Store``'s, same arguments)."""


class StoreRelay:
    """The store as a session process sees it: each write becomes a line to the server.

    A :class:`contracts.writer.SessionWriter`.

    The methods take ``store.Store``'s arguments and return once the line is flushed; what
    the database makes of it (a duplicate turn index, an unknown session) is the server's
    to log. Nothing is read back.

    Args:
        send: Writes one message (a JSON object) to the server and flushes it; the
            session process's control channel.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self._send = send

    def _call(self, name: str, *args: Any) -> None:
        self._send({"event": "store", "call": name, "args": list(args)})

    async def add_turn(self, session_id: str, turn: Mapping[str, Any] | TurnRecord) -> None:
        """Store a completed turn (``TurnRecord`` or its ``to_dict()``)."""
        row = dict(turn) if isinstance(turn, Mapping) else turn.to_dict()
        self._call("add_turn", session_id, row)

    async def set_session_status(
        self, session_id: str, status: str, end_reason: str | None = None
    ) -> None:
        """Set the session's status (``active``, ``ended``, ...) and, if given, why it ended."""
        self._call("set_session_status", session_id, status, end_reason)

    async def add_session_event(
        self, session_id: str, kind: str, data: Mapping[str, Any] | None = None
    ) -> None:
        """Store a session event: ``kind`` (1 to 50 characters) with a JSON object."""
        self._call("add_session_event", session_id, kind, dict(data or {}))

    async def add_assessment(
        self, session_id: str, assessment: Mapping[str, Any], turn_index: int | None = None
    ) -> None:
        """Store a learner turn's assessment (``Assessment.to_dict()``)."""
        self._call("add_assessment", session_id, dict(assessment), turn_index)

    async def review_item(
        self, session_id: str, item_id: int, correct: bool, answer: str = ""
    ) -> None:
        """Record a review session's answer to an item (the store reschedules it)."""
        self._call("review_item", session_id, item_id, correct, answer)

    async def add_usage_event(
        self,
        session_id: str,
        service: str,
        provider: str,
        model: str,
        metric: str,
        quantity: float,
    ) -> None:
        """Store one metered quantity (e.g. ``tts``, ``cartesia``, ``sonic-3``, ``characters``)."""
        self._call("add_usage_event", session_id, service, provider, model, metric, quantity)
