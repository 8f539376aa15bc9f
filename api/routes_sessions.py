"""``/api/v1/sessions``: start, inspect, list and end tutoring sessions.

A session is created in the store (``starting``), then the supervisor spawns its process and
returns once it is ready for the browser's SDP offer; the supervisor keeps the status current.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from loguru import logger

from api.deps import ApiKey, AppContext, Ctx, is_uuid
from api.errors import ApiError, error_responses
from api.quotas import check_quotas
from api.routes_catalog import check_tier, find_persona
from api.runtime import Supervisor
from api.schemas import (
    Connect,
    Latency,
    SessionCreate,
    SessionCreated,
    SessionDetail,
    SessionEnding,
    SessionEvent,
    SessionOut,
    SessionPage,
    SessionStatus,
    Turn,
)
from config.personas import Persona
from config.tiers import get_tier
from sessions.protocol import CapacityError, SessionNotRunningError, SessionSpec
from store import ApiKeyInfo, SessionInfo
from transports.daily import (
    DAILY_KEY_ENV,
    DailyError,
    DailyRoom,
    create_session_room,
    daily_api_key,
    release_session_room,
)

router = APIRouter(tags=["sessions"], responses=error_responses(500))


def _capacity(e: CapacityError) -> ApiError:
    return ApiError(429, "at_capacity", str(e), {"Retry-After": str(max(1, e.retry_after_s))})


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
    responses=error_responses(401, 402, 404, 413, 422, 429, 503),
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
    busy → 429 with ``Retry-After``; Daily without ``DAILY_API_KEY`` or Daily failing
    (``transport_unavailable``), no session runtime, or a process that failed to start → 503.
    """
    persona = find_persona(body.persona)
    check_tier(body.tier)
    if body.transport == "daily" and daily_api_key() is None:
        raise ApiError(
            503, "transport_unavailable", f"the daily transport needs {DAILY_KEY_ENV} to be set"
        )
    learner = (
        await ctx.store.get_learner(body.learner_id, key.id) if is_uuid(body.learner_id) else None
    )
    if learner is None:
        raise ApiError(404, "learner_not_found", f"no learner {body.learner_id!r}")
    grant = await check_quotas(ctx.store, get_tier(body.tier), learner.id, ctx.settings.upgrade_url)
    supervisor = ctx.supervisor
    if supervisor is None or not ctx.llm_base_url:
        what = "session runtime" if supervisor is None else "LLM server"
        raise ApiError(503, "runtime_unavailable", f"{what} not configured")
    if supervisor.active_count >= supervisor.max_sessions:
        ctx.metrics.error("capacity")
        raise _capacity(CapacityError(f"all {supervisor.max_sessions} session slots are busy"))

    info, token = await ctx.store.create_session(
        learner.id, key.id, persona.id, body.tier, body.transport
    )
    log = logger.bind(session_id=info.id)
    room = await _daily_room(ctx, info.id, persona) if body.transport == "daily" else None
    spec = SessionSpec(
        session_id=info.id,
        persona=persona.id,
        tier=body.tier,
        transport=body.transport,
        llm_base_url=ctx.llm_base_url,
        cefr_level=learner.cefr_level,
        learner_name=learner.name,
        idle_timeout_s=ctx.settings.session_idle_timeout_s,
        exchange_limit=grant.exchanges,
        tts_chars_left=grant.tts_characters,
        daily_room_url=room.url if room else None,
        daily_token=room.bot_token if room else None,
    )
    started = time.monotonic()
    try:
        await spawn_session(ctx, supervisor, spec)
    except Exception:
        # spawn() raising means no session process owns the room: delete it now.
        await release_session_room(spec, api_url=ctx.settings.daily_api_url)
        raise
    ctx.metrics.observe_spawn(time.monotonic() - started)
    current = await ctx.store.get_session(info.id)
    status = current.status if current is not None else info.status
    log.info("session started: persona={} tier={} status={}", persona.id, body.tier, status)
    response.headers["Location"] = f"/api/v1/sessions/{info.id}"
    connect = (
        Connect(room_url=room.url, token=room.client_token)
        if room is not None
        else Connect(offer_url=_offer_url(request, info.id), token=token)
    )
    return SessionCreated(
        session_id=info.id,
        status=status,  # type: ignore[arg-type]  # a SESSION_STATUSES value
        connect=connect,
    )


async def _daily_room(ctx: AppContext, session_id: str, persona: Persona) -> DailyRoom:
    """Create the session's Daily room and tokens.

    Raises:
        ApiError: 503 ``transport_unavailable`` when Daily fails (the session is ``failed``).
    """
    try:
        return await create_session_room(
            session_id,
            api_url=ctx.settings.daily_api_url,
            api_key=daily_api_key() or "",
            bot_name=persona.name,
        )
    except DailyError as e:
        raise await daily_failed(ctx, session_id, e) from None


async def daily_failed(ctx: AppContext, session_id: str, e: DailyError) -> ApiError:
    """Mark the session ``failed`` because Daily failed; return the 503 to raise."""
    await ctx.store.set_session_status(session_id, "failed", f"failed to start: {e}")
    ctx.metrics.error("daily")
    logger.bind(session_id=session_id).error("Daily room not created: {}", e)
    return ApiError(
        503, "transport_unavailable", f"Daily is unavailable: {e} (session {session_id})"
    )


async def spawn_session(ctx: AppContext, supervisor: Supervisor, spec: SessionSpec) -> None:
    """Start the session's process, mapping failures to API errors.

    Raises:
        ApiError: 429 ``at_capacity`` or 503 ``session_start_failed`` (session ``failed``).
    """
    sid, log = spec.session_id, logger.bind(session_id=spec.session_id)
    try:
        await supervisor.spawn(spec)
    except CapacityError as e:
        await ctx.store.set_session_status(sid, "failed", "rejected: all slots busy")
        ctx.metrics.error("capacity")
        log.warning("session rejected: {}", e)
        raise _capacity(e) from None
    except RuntimeError as e:
        await ctx.store.set_session_status(sid, "failed", f"failed to start: {e}")
        ctx.metrics.error("spawn_failed")
        log.error("session process failed to start: {}", e)
        raise ApiError(
            503, "session_start_failed", f"the session process failed to start (session {sid})"
        ) from None
    except Exception:
        await ctx.store.set_session_status(sid, "failed", "failed to start: internal error")
        ctx.metrics.error("spawn_failed")
        raise


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
    info = await owned_session(ctx, key, session_id)
    turns = [Turn(**t.to_dict()) for t in await ctx.store.list_turns(info.id)]
    latency = await ctx.store.latency_summary(info.id)
    events = [
        SessionEvent(kind=e.kind, at=e.created_at, data=e.data)
        for e in await ctx.store.list_session_events(info.id)
    ]
    return SessionDetail(
        **SessionOut.fields_of(info), turns=turns, latency=Latency(**latency), events=events
    )


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
    info = await owned_session(ctx, key, session_id)
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
