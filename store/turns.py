"""Turns and usage events: written one at a time as they happen, never batched at session end."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from contracts.turns import TurnRecord
from store.base import StoreBase, turn_info, usage_info
from store.models import TURN_ROLES, USAGE_SERVICES, Turn, UsageEvent
from store.records import LatencySummary, NotFoundError, TurnInfo, UsageEventInfo


def _opt_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be an integer or None, got {value!r}")
    return round(value)


def turn_values(turn: Mapping[str, Any] | TurnRecord) -> dict[str, Any]:
    """Validate a turn (a ``TurnRecord`` or its ``to_dict()``) into ``turns`` column values.

    Args:
        turn: The turn; extra keys are ignored.

    Raises:
        ValueError: If a field is missing or invalid (negative index, unknown role, …).
    """
    if isinstance(turn, Mapping):
        data = dict(turn)
    elif dataclasses.is_dataclass(turn) and not isinstance(turn, type):
        data = dataclasses.asdict(turn)
    else:
        raise ValueError(f"a turn is a TurnRecord or a mapping, got {type(turn).__name__}")
    try:
        index, role, text = data["index"], data["role"], data["text"]
    except KeyError as e:
        raise ValueError(f"turn lacks {e.args[0]!r}") from None
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"turn index must be a non-negative integer, got {index!r}")
    if role not in TURN_ROLES:
        raise ValueError(f"turn role must be one of {TURN_ROLES}, got {role!r}")
    if not isinstance(text, str):
        raise ValueError(f"turn text must be a string, got {type(text).__name__}")
    ttfb = data.get("ttfb_ms") or {}
    if not isinstance(ttfb, Mapping):
        raise ValueError(f"ttfb_ms must be a mapping, got {ttfb!r}")
    return {
        "index": index,
        "role": role,
        "text": text,
        "start_ms": _opt_int(data.get("start_ms"), "start_ms"),
        "end_ms": _opt_int(data.get("end_ms"), "end_ms"),
        "latency_ms": _opt_int(data.get("latency_ms"), "latency_ms"),
        "ttfb_ms": {str(k): _opt_int(v, f"ttfb_ms[{k!r}]") for k, v in ttfb.items()},
        "interrupted": bool(data.get("interrupted", False)),
    }


def summarize_latencies(latencies_ms: list[int]) -> LatencySummary:
    """Summarize voice-to-voice latencies (median, p95 as the benchmarks compute it, max).

    Args:
        latencies_ms: Latencies in ms, any order.
    """
    if not latencies_ms:
        return {"turns": 0, "median_ms": None, "p95_ms": None, "max_ms": None}
    lat = sorted(latencies_ms)
    p95 = (
        float(lat[0]) if len(lat) == 1 else statistics.quantiles(lat, n=20, method="inclusive")[18]
    )
    return {
        "turns": len(lat),
        "median_ms": float(statistics.median(lat)),
        "p95_ms": float(p95),
        "max_ms": lat[-1],
    }


class TurnStore(StoreBase):
    """Turn and usage-event persistence (mixed into :class:`store.Store`)."""

    async def add_turn(self, session_id: str, turn: Mapping[str, Any] | TurnRecord) -> bool:
        """Persist one completed turn in its own transaction (call it from ``on_turn``).

        Idempotent on ``(session_id, index)``: writing a turn again (a retry) keeps the first
        write and returns ``False``. Safe to call from concurrent tasks.

        Args:
            session_id: The session the turn belongs to.
            turn: A ``contracts.turns.TurnRecord`` or its ``to_dict()``.

        Returns:
            ``True`` if the turn was inserted, ``False`` if that index was already stored.

        Raises:
            ValueError: If the turn is malformed.
            NotFoundError: If the session does not exist.
        """
        values = {"session_id": session_id, **turn_values(turn)}
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(Turn)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["session_id", "index"])
        )
        try:
            async with self._tx() as s:
                result = await s.execute(stmt)
        except IntegrityError as e:  # the only constraint left: the session FK
            raise NotFoundError(f"no session {session_id!r}") from e
        return bool(getattr(result, "rowcount", 0))

    async def list_turns(self, session_id: str) -> list[TurnInfo]:
        """Return a session's stored turns in order (empty for an unknown session).

        Args:
            session_id: The session.
        """
        async with self._tx() as s:
            rows = await s.scalars(
                select(Turn).where(Turn.session_id == session_id).order_by(Turn.index)
            )
            return [turn_info(r) for r in rows]

    async def latency_summary(self, session_id: str) -> LatencySummary:
        """Summarize voice-to-voice latency over the session's bot turns that have one.

        Args:
            session_id: The session.

        Returns:
            ``{"turns", "median_ms", "p95_ms", "max_ms"}``; the numbers are ``None`` when no
            bot turn has a latency.
        """
        async with self._tx() as s:
            lat = await s.scalars(
                select(Turn.latency_ms).where(
                    Turn.session_id == session_id,
                    Turn.role == "bot",
                    Turn.latency_ms.is_not(None),
                )
            )
            values = [v for v in lat if v is not None]
        return summarize_latencies(values)

    async def add_usage_event(
        self,
        session_id: str,
        service: str,
        provider: str,
        model: str,
        metric: str,
        quantity: float,
        write_id: str | None = None,
    ) -> UsageEventInfo:
        """Record a metered quantity used by a session.

        Args:
            session_id: The session that consumed it.
            service: ``stt``, ``llm`` or ``tts``.
            provider: Provider name (``local``, ``openai``, …).
            model: Model name.
            metric: What is counted: ``characters``, ``prompt_tokens``,
                ``completion_tokens``, ``audio_seconds``, …
            quantity: The amount (finite).
            write_id: Unique id of this write (at most 36 characters): a retried write
                (:mod:`runtime.outbox`) returns the row the first one stored.

        Raises:
            ValueError: If the service is unknown, a name is empty or the quantity not finite.
            NotFoundError: If the session does not exist.
        """
        if service not in USAGE_SERVICES:
            raise ValueError(f"service must be one of {USAGE_SERVICES}, got {service!r}")
        if not (provider and model and metric):
            raise ValueError("provider, model and metric must be non-empty")
        quantity = float(quantity)
        if not math.isfinite(quantity):
            raise ValueError(f"quantity must be finite, got {quantity!r}")
        row = UsageEvent(
            session_id=session_id,
            service=service,
            provider=provider,
            model=model,
            metric=metric,
            quantity=quantity,
            write_id=write_id,
        )
        try:
            async with self._tx() as s:
                if write_id is not None and (
                    done := await s.scalar(
                        select(UsageEvent).where(UsageEvent.write_id == write_id)
                    )
                ):
                    return usage_info(done)  # a retried write: stored once
                s.add(row)
        except IntegrityError as e:
            raise NotFoundError(f"no session {session_id!r}") from e
        return usage_info(row)

    async def list_usage_events(self, session_id: str) -> list[UsageEventInfo]:
        """Return a session's usage events in the order they were recorded.

        Args:
            session_id: The session.
        """
        async with self._tx() as s:
            rows = await s.scalars(
                select(UsageEvent)
                .where(UsageEvent.session_id == session_id)
                .order_by(UsageEvent.id)
            )
            return [usage_info(r) for r in rows]

    async def usage_totals(self, session_id: str) -> dict[tuple[str, str, str, str], float]:
        """Sum a session's usage per ``(service, provider, model, metric)``.

        Args:
            session_id: The session.
        """
        key = (UsageEvent.service, UsageEvent.provider, UsageEvent.model, UsageEvent.metric)
        async with self._tx() as s:
            rows = await s.execute(
                select(*key, func.sum(UsageEvent.quantity))
                .where(UsageEvent.session_id == session_id)
                .group_by(*key)
            )
            return {(r[0], r[1], r[2], r[3]): float(r[4]) for r in rows}
