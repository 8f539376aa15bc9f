"""``/api/v1/sessions``: start, inspect, list and end tutoring sessions.

Starting one goes through :func:`api.launch.launch` (slot, quotas, store row, Daily room,
spawn), which returns once the process is ready for the browser's SDP offer; the supervisor
keeps the status current after that.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from loguru import logger

from api.deps import ApiKey, AppContext, Ctx, is_uuid
from api.errors import ApiError, error_responses
from api.launch import LaunchRequest, check_tier, find_persona, launch
from api.schemas import (
    AcsGrade,
    Connect,
    Latency,
    Mistake,
    SessionCreate,
    SessionCreated,
    SessionDetail,
    SessionEnding,
    SessionEvent,
    SessionOut,
    SessionPage,
    SessionReportOut,
    SessionStatus,
    Turn,
    TurnAssessment,
)
from runtime.protocol import SessionNotRunningError
from store import ApiKeyInfo, LearnerInfo, SessionInfo
from transports.daily import DAILY_KEY_ENV, DailyRoom, create_session_room, daily_api_key

router = APIRouter(tags=["sessions"], responses=error_responses(429, 500))


def _offer_url(request: Request, session_id: str) -> str:
    return f"{request.scope.get('root_path', '')}/api/v1/sessions/{session_id}/offer"


async def owned_session(ctx: AppContext, key: ApiKeyInfo, session_id: str) -> SessionInfo:
    """Return one of the key's sessions.

    Raises:
        ApiError: 404 ``session_not_found`` for unknown sessions and other keys' sessions.
    """
    info = await ctx.store.get_session(session_id, key.id) if is_uuid(session_id) else None
    if info is None:
        raise ApiError(404, "session_not_found", f"no session {session_id!r}")
    return info


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionCreated,
    responses=error_responses(401, 402, 403, 404, 409, 413, 422, 429, 503),
    summary="Start a session",
)
async def create_session(
    body: SessionCreate, key: ApiKey, ctx: Ctx, request: Request, response: Response
) -> SessionCreated:
    """Start a session; the response's ``connect`` tells the client how to connect.

    ``webrtc``: where to POST the SDP offer, with the session's browser token. ``daily``: the
    session's private Daily room and the learner's meeting token (the room is created here and
    deleted when the session ends).

    Unknown persona or tier → 422; unknown learner → 404; a monthly quota of the tier used
    up → 402 ``quota_exceeded`` (``quota``, ``limit``, ``used``, ``upgrade_url``); all slots
    busy → 429 with ``Retry-After``; a tier outside the learner's plan → 403
    ``tier_not_entitled`` (``plan``, ``tiers``, ``upgrade_url``); a review session with no
    review item due → 409 ``nothing_due``; Daily without ``DAILY_API_KEY`` or Daily failing
    (``transport_unavailable``), no session runtime, or a process that failed to start → 503.
    """
    learner = (
        await ctx.store.get_learner(body.learner_id, key.id) if is_uuid(body.learner_id) else None
    )
    if learner is None:
        find_persona(body.persona)  # 422 for a bad persona or tier before 404
        check_tier(body.tier)
        raise ApiError(404, "learner_not_found", f"no learner {body.learner_id!r}")
    return await start_session(ctx, learner, body, request, response)


async def start_session(
    ctx: AppContext,
    learner: LearnerInfo,
    body: SessionCreate,
    request: Request,
    response: Response,
    *,
    location: str = "/api/v1/sessions",
) -> SessionCreated:
    """Start ``learner``'s session as ``body`` asks (``body.learner_id`` is not read again).

    Raises:
        ApiError: as :func:`create_session` documents.
    """
    persona = find_persona(body.persona)
    check_tier(body.tier)
    if body.transport == "daily" and daily_api_key() is None:
        raise ApiError(
            503, "transport_unavailable", f"the daily transport needs {DAILY_KEY_ENV} to be set"
        )

    async def make_room(session_id: str) -> DailyRoom:
        return await create_session_room(
            session_id,
            api_url=ctx.settings.daily_api_url,
            api_key=daily_api_key() or "",
            bot_name=persona.name,
        )

    started = await launch(
        ctx,
        LaunchRequest(
            learner=learner,
            persona=persona,
            tier=body.tier,
            transport=body.transport,
            make_room=make_room if body.transport == "daily" else None,
            mode=body.mode,
        ),
    )
    sid = started.session.id
    response.headers["Location"] = f"{location}/{sid}"
    connect = (
        Connect(room_url=started.room.url, token=started.room.client_token)
        if isinstance(started.room, DailyRoom)
        else Connect(offer_url=_offer_url(request, sid), token=started.token)
    )
    return SessionCreated(
        session_id=sid,
        status=started.session.status,  # type: ignore[arg-type]  # a SESSION_STATUSES value
        connect=connect,
    )


@router.get(
    "/sessions",
    response_model=SessionPage,
    responses=error_responses(401, 422),
    summary="List sessions",
)
async def list_sessions(
    key: ApiKey,
    ctx: Ctx,
    learner_id: Annotated[str | None, Query(max_length=100)] = None,
    status: SessionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SessionPage:
    """The calling key's sessions, newest first, filtered by learner and status."""
    if learner_id is not None and not is_uuid(learner_id):
        return SessionPage(items=[], total=0, limit=limit, offset=offset)
    rows, total = await ctx.store.list_sessions(key.id, learner_id, status, limit, offset)
    items = [SessionOut(**SessionOut.fields_of(r)) for r in rows]
    return SessionPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/sessions/{session_id}",
    response_model=SessionDetail,
    responses=error_responses(401, 404, 422),
    summary="Get a session",
)
async def get_session(session_id: str, key: ApiKey, ctx: Ctx) -> SessionDetail:
    """A session with its turns, voice-to-voice latency summary and events (switches, tools)."""
    return await session_detail(ctx, await owned_session(ctx, key, session_id))


async def session_detail(ctx: AppContext, info: SessionInfo) -> SessionDetail:
    """``info`` with its turns (and their assessments), latency summary and events."""
    assessments = await _assessments(ctx, info.id)
    turns = [
        Turn(**t.to_dict(), assessment=assessments.get(t.index) if t.role == "learner" else None)
        for t in await ctx.store.list_turns(info.id)
    ]
    latency = await ctx.store.latency_summary(info.id)
    events = [
        SessionEvent(kind=e.kind, at=e.created_at, data=e.data)
        for e in await ctx.store.list_session_events(info.id)
    ]
    return SessionDetail(
        **SessionOut.fields_of(info), turns=turns, latency=Latency(**latency), events=events
    )


async def _assessments(ctx: AppContext, session_id: str) -> dict[int, TurnAssessment]:
    """The session's stored assessments by learner turn index."""
    out: dict[int, TurnAssessment] = {}
    for m in await ctx.store.list_mistakes(session_id):
        if m.turn_index is not None:
            found = out.setdefault(m.turn_index, TurnAssessment(corrected=m.corrected_sentence))
            found.mistakes.append(
                Mistake(
                    original=m.original,
                    corrected=m.corrected,
                    rule=m.rule,
                    category=m.category,
                    spoken=m.spoken,
                )
            )
    for r in await ctx.store.list_acs_results(session_id):
        if r.turn_index is not None:
            out.setdefault(r.turn_index, TurnAssessment()).acs.append(
                AcsGrade(
                    question_id=r.question_id,
                    task=r.task,
                    grade=r.grade,  # type: ignore[arg-type]  # checked by the table
                    missing=r.missing,
                )
            )
    return out


@router.delete(
    "/sessions/{session_id}",
    status_code=202,
    response_model=SessionEnding,
    responses=error_responses(401, 404, 409, 422),
    summary="End a session",
)
async def end_session(session_id: str, key: ApiKey, ctx: Ctx) -> SessionEnding:
    """Ask the bot to say goodbye and end the session (409 if it already ended or failed).

    A live session without a process (its process is gone) is marked ``ended`` at once.
    """
    return await end_owned_session(ctx, await owned_session(ctx, key, session_id))


async def end_owned_session(ctx: AppContext, info: SessionInfo) -> SessionEnding:
    """End ``info`` (the caller checked it may): goodbye if its process runs, else at once.

    Raises:
        ApiError: 409 ``session_not_running`` if it already ended or failed.
    """
    log = logger.bind(session_id=info.id)
    supervisor = ctx.supervisor
    if supervisor is not None and supervisor.is_running(info.id):
        try:
            await supervisor.end(info.id, "ended by client")
        except SessionNotRunningError:
            pass  # exited meanwhile; settle it below
        else:
            log.info("session ending (client request)")
            return SessionEnding(status="ending")
    if await ctx.store.set_session_status(info.id, "ended", "ended by client"):
        log.info("session ended (client request, no process)")
        return SessionEnding(status="ended")
    current = await ctx.store.get_session(info.id)
    state = current.status if current is not None else "ended"
    raise ApiError(409, "session_not_running", f"session {info.id} already {state}")


@router.get(
    "/sessions/{session_id}/report",
    response_model=SessionReportOut,
    responses=error_responses(401, 404, 409, 422),
    summary="A session's report",
)
async def get_report(session_id: str, key: ApiKey, ctx: Ctx) -> SessionReportOut:
    """The report written after the session ended (``report`` is ``null`` until ``done``).

    409 ``session_not_ended`` while the session runs: the report job starts when it ends.
    """
    return await session_report(ctx, await owned_session(ctx, key, session_id))


async def session_report(ctx: AppContext, session: SessionInfo) -> SessionReportOut:
    """The report job of ``session`` (the caller checked it may read it).

    Raises:
        ApiError: 409 ``session_not_ended`` while it runs.
    """
    job = await ctx.store.get_report_job(session.id)
    if job is None:
        raise ApiError(
            409, "session_not_ended", f"session {session.id} has not ended; no report yet"
        )
    return SessionReportOut(
        session_id=job.session_id,
        status=job.status,  # type: ignore[arg-type]  # a REPORT_STATUSES value
        attempts=job.attempts,
        report=job.report,
        error=job.error,
    )
