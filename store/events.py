"""Session events: things worth keeping about a session as they happen (provider switches).

One row per event, written in its own transaction the moment it happens (a session process
calls :meth:`EventStore.add_session_event` from the failover group's ``on_switch``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from contracts.events import EVENT_KIND_MAX, PROVIDER_SWITCH, TOOL_CALL
from store.base import StoreBase
from store.models import SessionEvent
from store.records import NotFoundError

__all__ = ["EVENT_KIND_MAX", "PROVIDER_SWITCH", "TOOL_CALL", "EventStore", "SessionEventInfo"]


@dataclass(frozen=True, slots=True)
class SessionEventInfo:
    """A stored session event.

    Attributes:
        id: Row id (increasing in the order events were stored).
        session_id: The session it happened in.
        created_at: When it was stored (UTC).
        kind: What happened, e.g. ``provider_switch``.
        data: Its details (JSON object).
    """

    id: int
    session_id: str
    created_at: datetime
    kind: str
    data: dict[str, Any]


def _event_info(row: SessionEvent) -> SessionEventInfo:
    return SessionEventInfo(
        id=row.id,
        session_id=row.session_id,
        created_at=row.created_at,
        kind=row.kind,
        data=dict(row.data or {}),
    )


def _json_object(data: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``data`` is a JSON object of finite values; return a plain copy.

    Raises:
        ValueError: not a mapping with string keys, or not JSON-serializable (NaN included).
    """
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise ValueError("event data must be a mapping with string keys")

    def finite(value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"event data holds a non-finite number {value!r}")
        return value

    try:
        text = json.dumps(dict(data), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"event data is not JSON: {e}") from None
    result: dict[str, Any] = json.loads(text, parse_float=lambda s: finite(float(s)))
    return result


class EventStore(StoreBase):
    """Session-event persistence (mixed into :class:`store.Store`)."""

    async def add_session_event(
        self, session_id: str, kind: str, data: Mapping[str, Any] | None = None
    ) -> SessionEventInfo:
        """Store one event of a session in its own transaction.

        Args:
            session_id: The session it happened in.
            kind: What happened (1 to 50 characters), e.g. :data:`PROVIDER_SWITCH`.
            data: Details, a JSON object (default empty).

        Raises:
            ValueError: empty or too long ``kind``, or ``data`` that is not a JSON object.
            NotFoundError: the session does not exist.
        """
        if not isinstance(kind, str) or not kind.strip() or len(kind) > EVENT_KIND_MAX:
            raise ValueError(f"event kind must be 1-{EVENT_KIND_MAX} characters, got {kind!r}")
        row = SessionEvent(session_id=session_id, kind=kind, data=_json_object(data or {}))
        try:
            async with self._tx() as s:
                s.add(row)
        except IntegrityError as e:  # the only constraint: the session FK
            raise NotFoundError(f"no session {session_id!r}") from e
        return _event_info(row)

    async def list_session_events(
        self, session_id: str, kind: str | None = None
    ) -> list[SessionEventInfo]:
        """Return a session's events in the order they were stored (empty if none or unknown).

        Args:
            session_id: The session.
            kind: Only events of this kind (default: all).
        """
        query = select(SessionEvent).where(SessionEvent.session_id == session_id)
        if kind is not None:
            query = query.where(SessionEvent.kind == kind)
        async with self._tx() as s:
            rows = await s.scalars(query.order_by(SessionEvent.id))
            return [_event_info(r) for r in rows]
