"""Session reports and the durable job that writes each one.

The job is a ``session_reports`` row added ``pending`` in the transaction that ends the
session (:meth:`store.Store.set_session_status`), so no ended session is left without one and
ending a session waits for nothing but that insert. A worker (:mod:`runtime.report_jobs`)
claims a job with a lease; a worker that dies mid-job leaves its lease to run out and the
next claim takes the job again. Only the current claim can finish it, so a report is written
once even when a worker thought dead comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update

from store.base import StoreBase
from store.models import SessionReport, utcnow

MAX_ATTEMPTS = 5
"""Claims of one job before it is marked ``failed``."""


@dataclass(frozen=True, slots=True)
class ReportJobInfo:
    """A report job (see :class:`store.models.SessionReport`)."""

    session_id: str
    status: str
    attempts: int
    owner: str | None
    lease_until: datetime | None
    report: dict[str, Any] | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


def _held(session_id: str, owner: str) -> tuple[Any, ...]:
    """The job of ``session_id`` while ``owner``'s claim holds it."""
    return (
        SessionReport.session_id == session_id,
        SessionReport.status == "running",
        SessionReport.owner == owner,
    )


def _info(row: SessionReport) -> ReportJobInfo:
    return ReportJobInfo(
        row.session_id,
        row.status,
        row.attempts,
        row.owner,
        row.lease_until,
        row.report,
        row.error,
        row.created_at,
        row.finished_at,
    )


class ReportStore(StoreBase):
    """Report jobs and reports (mixed into :class:`store.Store`)."""

    async def get_report_job(self, session_id: str) -> ReportJobInfo | None:
        """The session's report job (with the report once ``done``), or ``None``."""
        async with self._tx() as s:
            row = await s.get(SessionReport, session_id)
            return _info(row) if row is not None else None

    async def enqueue_report(self, session_id: str) -> bool:
        """Add a ``pending`` job for the session unless it has one; ``True`` if added."""
        async with self._tx() as s:
            if await s.get(SessionReport, session_id) is not None:
                return False
            s.add(SessionReport(session_id=session_id, status="pending", attempts=0))
            return True

    async def claim_report(
        self, owner: str, lease_s: float, session_id: str | None = None
    ) -> str | None:
        """Claim the oldest claimable job (or ``session_id``'s); return its session id.

        Claimable: ``pending``, or ``running`` with its lease run out (its worker died).
        Claiming counts an attempt; a job over :data:`MAX_ATTEMPTS` becomes ``failed``.

        Args:
            owner: Who claims (host and process id); only this owner can finish the job.
            lease_s: Seconds the claim holds before another worker may take the job, s.
            session_id: Claim only this session's job.
        """
        now = utcnow()
        claimable = or_(
            SessionReport.status == "pending",
            (SessionReport.status == "running") & (SessionReport.lease_until < now),
        )
        async with self._tx() as s:
            stmt = select(SessionReport.session_id, SessionReport.attempts).where(claimable)
            if session_id is not None:
                stmt = stmt.where(SessionReport.session_id == session_id)
            found = (await s.execute(stmt.order_by(SessionReport.created_at).limit(1))).first()
            if found is None:
                return None
            sid, attempts = found
            if attempts >= MAX_ATTEMPTS:
                await s.execute(
                    update(SessionReport)
                    .where(SessionReport.session_id == sid, claimable)
                    .values(status="failed", finished_at=now, owner=None, lease_until=None)
                )
                return None
            result = await s.execute(
                update(SessionReport)
                .where(SessionReport.session_id == sid, claimable)
                .values(
                    status="running",
                    owner=owner[:100],
                    attempts=attempts + 1,
                    lease_until=now + timedelta(seconds=lease_s),
                )
            )
            # Another worker's claim won the race: nothing for this one.
            return sid if cast(CursorResult[Any], result).rowcount == 1 else None

    async def finish_report(self, session_id: str, owner: str, report: dict[str, Any]) -> bool:
        """Store the report if ``owner`` still holds the claim; ``True`` if stored."""
        async with self._tx() as s:
            result = await s.execute(
                update(SessionReport)
                .where(*_held(session_id, owner))
                .values(status="done", report=report, finished_at=utcnow(), error=None)
            )
            return cast(CursorResult[Any], result).rowcount == 1

    async def release_report(
        self, session_id: str, owner: str, error: str, retry_in_s: float = 30.0
    ) -> bool:
        """Give a claimed job back after a failure: it is retried after ``retry_in_s``, s."""
        async with self._tx() as s:
            result = await s.execute(
                update(SessionReport)
                .where(*_held(session_id, owner))
                .values(error=error[:500], lease_until=utcnow() + timedelta(seconds=retry_in_s))
            )
            return cast(CursorResult[Any], result).rowcount == 1
