"""``/api/v1/me``: the learner's own app, opened with a learner access token.

The operator's API key reads every learner's data, so a learner's browser never holds it: the
app that owns a learner mints a short-lived token (``POST /api/v1/learners/{id}/access``,
:mod:`store.access`) and hands the learner a link. With it the learner may start sessions
within their plan, and read their own sessions, reports and progress; nothing else. Sessions
go through the same :func:`api.launch.launch` as the operator's (slot, plan, quotas).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from api.deps import ApiKey, AppContext, Ctx, Learner, is_uuid
from api.errors import ApiError, error_responses
from api.launch import check_tier, find_persona
from api.routes_learners import known_learner
from api.routes_sessions import end_owned_session, session_detail, session_report, start_session
from api.schemas import (
    CefrLevel,
    SessionCreate,
    SessionCreated,
    SessionDetail,
    SessionEnding,
    SessionOut,
    SessionPage,
    SessionReportOut,
    Text,
    _Request,
)
from config.personas import list_personas, load_persona
from config.plans import get_plan, load_plans
from config.tiers import load_tiers
from pipelines.notices import acs_area
from store import SessionInfo
from store.access import LearnerAccess

router = APIRouter(tags=["learner app"], responses=error_responses(401, 429, 500))

DEFAULT_TTL_MINUTES = 24 * 60


class AccessRequest(_Request):
    """How long the learner's link works."""

    ttl_minutes: int = Field(default=DEFAULT_TTL_MINUTES, ge=1, le=7 * 24 * 60)


class AccessOut(BaseModel):
    """A learner's link: open ``url`` in a browser (the token rides in its fragment)."""

    url: str
    token: str
    expires_at: datetime


class TierChoice(BaseModel):
    """A tier as the learner sees it: whether their plan has it, and what is left."""

    name: str
    title: str
    allowed: bool
    reason: str | None
    sessions_left: int | None = Field(description="This month, over all tiers; null: no limit.")
    tts_chars_left: int | None = Field(description="Spoken characters left this month.")


class PersonaChoice(BaseModel):
    """A persona the learner may talk to."""

    id: str
    name: str
    language: str
    role: str


class Me(BaseModel):
    """The learner, the tiers and personas they may choose, and when their link expires."""

    learner: dict[str, Any]
    tiers: list[TierChoice]
    personas: list[PersonaChoice]
    expires_at: datetime


class MySessionCreate(_Request):
    """A session the learner starts (always WebRTC from the browser)."""

    persona: Text = Field(max_length=100)
    tier: Text = Field(max_length=50)
    cefr_level: CefrLevel | None = Field(
        default=None, description="Speak at this level from now on (kept in the level history)."
    )
    mode: Literal["conversation", "review"] = "conversation"


class Correction(BaseModel):
    """One corrected mistake of a learner turn."""

    turn_index: int
    original: str
    corrected: str
    category: str
    rule: str


class AcsMark(BaseModel):
    """The examiner's grade of a learner turn (ACS area from the task code, e.g. ``I``)."""

    turn_index: int
    area: str
    task: str
    grade: str


class MySessionDetail(SessionDetail):
    """A session with its turns, and its corrections and ACS grades as flat lists."""

    mistakes: list[Correction]
    acs: list[AcsMark]


@router.post(
    "/learners/{learner_id}/access",
    status_code=201,
    response_model=AccessOut,
    responses=error_responses(404, 413, 422),
    summary="A link for the learner's own app",
    tags=["learners"],
)
async def mint_access(
    learner_id: str, body: AccessRequest, key: ApiKey, ctx: Ctx, request: Request
) -> AccessOut:
    """Mint a learner access token (shown once) and the link that opens the learner's app.

    The token is in the URL's fragment (``#token=``), which browsers never send to a server
    or in a ``Referer``; the page moves it to session storage and drops it from the address.
    """
    with known_learner(learner_id):
        token, expires = await ctx.store.mint_access(
            learner_id, key.id, timedelta(minutes=body.ttl_minutes)
        )
    base = (ctx.settings.phone_public_url or str(request.base_url)).rstrip("/")
    return AccessOut(url=f"{base}/#token={token}", token=token, expires_at=expires)


@router.delete(
    "/learners/{learner_id}/access",
    status_code=204,
    responses=error_responses(404, 422),
    summary="Revoke the learner's links",
    tags=["learners"],
)
async def revoke_access(learner_id: str, key: ApiKey, ctx: Ctx) -> Response:
    """Every link minted for the learner stops working at once (401 from then on)."""
    with known_learner(learner_id):
        await ctx.store.revoke_access(learner_id, key.id)
    return Response(status_code=204)


@router.get("/me", response_model=Me, summary="The learner and what they may choose")
async def me(access: Learner, ctx: Ctx) -> Me:
    """The learner, every tier (allowed or not, and why) with what is left this month."""
    learner = access.learner
    plan = get_plan(learner.plan)
    used = await ctx.store.plan_usage(learner.id)
    sessions_left = (
        None if plan.sessions_per_month is None else max(0, plan.sessions_per_month - used[0])
    )
    chars_left = (
        None if plan.tts_chars_per_month is None else max(0, plan.tts_chars_per_month - used[1])
    )
    offering = [p for p in load_plans().values() if set(p.tiers) - set(plan.tiers)]
    tiers = []
    for name, tier in load_tiers().items():
        allowed = name in plan.tiers
        upgrade = next((p.title for p in offering if name in p.tiers), None)
        reason = (
            None
            if allowed
            else f"not in your plan ({plan.title})" + (f"; {upgrade} has it" if upgrade else "")
        )
        tiers.append(
            TierChoice(
                name=name,
                title=tier.title,
                allowed=allowed,
                reason=reason,
                sessions_left=sessions_left,
                tts_chars_left=chars_left,
            )
        )
    personas = []
    for pid in list_personas():
        p = load_persona(pid)
        personas.append(PersonaChoice(id=p.id, name=p.name, language=p.language, role=p.role))
    info = {
        "id": learner.id,
        "name": learner.name,
        "target_language": learner.target_language,
        "cefr_level": learner.cefr_level,
        "plan": learner.plan,
        "interests": list(learner.interests),
    }
    return Me(learner=info, tiers=tiers, personas=personas, expires_at=access.expires_at)


@router.post(
    "/me/sessions",
    status_code=201,
    response_model=SessionCreated,
    responses=error_responses(402, 403, 409, 413, 422, 503),
    summary="Start one of my sessions",
)
async def start_my_session(
    body: MySessionCreate, access: Learner, ctx: Ctx, request: Request, response: Response
) -> SessionCreated:
    """Start a WebRTC session for the token's learner, within their plan (403 outside it)."""
    learner = access.learner
    find_persona(body.persona)  # a bad choice changes nothing (422 first)
    check_tier(body.tier)
    if body.cefr_level is not None and body.cefr_level != learner.cefr_level:
        learner = await ctx.store.update_learner(
            learner.id, learner.owner_key_id, cefr_level=body.cefr_level
        )
    create = SessionCreate(
        persona=body.persona,
        tier=body.tier,
        transport="webrtc",
        learner_id=learner.id,
        mode=body.mode,
    )
    return await start_session(
        ctx, learner, create, request, response, location="/api/v1/me/sessions"
    )


@router.get("/me/sessions", response_model=SessionPage, summary="My sessions")
async def my_sessions(
    access: Learner,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SessionPage:
    """The learner's sessions, newest first."""
    learner = access.learner
    rows, total = await ctx.store.list_sessions(
        learner.owner_key_id, learner.id, None, limit, offset
    )
    items = [SessionOut(**SessionOut.fields_of(r)) for r in rows]
    return SessionPage(items=items, total=total, limit=limit, offset=offset)


async def _mine(ctx: AppContext, access: LearnerAccess, session_id: str) -> SessionInfo:
    """One of the token's learner's sessions.

    Raises:
        ApiError: 404 ``session_not_found`` for an unknown id; 403 ``forbidden`` for another
            learner's session.
    """
    info = await ctx.store.get_session(session_id) if is_uuid(session_id) else None
    if info is None:
        raise ApiError(404, "session_not_found", f"no session {session_id!r}")
    if info.learner_id != access.learner.id:
        raise ApiError(403, "forbidden", "this session is not yours")
    return info


@router.get(
    "/me/sessions/{session_id}",
    response_model=MySessionDetail,
    responses=error_responses(403, 404, 422),
    summary="One of my sessions",
)
async def my_session(session_id: str, access: Learner, ctx: Ctx) -> MySessionDetail:
    """A session with its turns, each learner turn's corrections and ACS grades."""
    detail = await session_detail(ctx, await _mine(ctx, access, session_id))
    mistakes, acs = [], []
    for turn in detail.turns:
        if turn.assessment is None:
            continue
        for m in turn.assessment.mistakes:
            mistakes.append(
                Correction(
                    turn_index=turn.index,
                    original=m.original,
                    corrected=m.corrected,
                    category=m.category,
                    rule=m.rule,
                )
            )
        for g in turn.assessment.acs:
            acs.append(
                AcsMark(turn_index=turn.index, area=acs_area(g.task), task=g.task, grade=g.grade)
            )
    return MySessionDetail(**detail.model_dump(), mistakes=mistakes, acs=acs)


@router.get(
    "/me/sessions/{session_id}/report",
    response_model=SessionReportOut,
    responses=error_responses(403, 404, 409, 422),
    summary="My session's report",
)
async def my_report(session_id: str, access: Learner, ctx: Ctx) -> SessionReportOut:
    """The session's report once it has ended (409 ``session_not_ended`` before)."""
    return await session_report(ctx, await _mine(ctx, access, session_id))


@router.delete(
    "/me/sessions/{session_id}",
    status_code=202,
    response_model=SessionEnding,
    responses=error_responses(403, 404, 409, 422),
    summary="End my session",
)
async def end_my_session(session_id: str, access: Learner, ctx: Ctx) -> SessionEnding:
    """The tutor says goodbye and the session ends."""
    return await end_owned_session(ctx, await _mine(ctx, access, session_id))


@router.get("/me/progress", summary="My progress")
async def my_progress(access: Learner, ctx: Ctx) -> dict[str, Any]:
    """The learner model and its time series (as ``GET /api/v1/learners/{id}/progress``)."""
    learner = access.learner
    model = await ctx.store.learner_model(learner.id, learner.owner_key_id)
    due = await ctx.store.due_review_items(learner.id, limit=10)
    return {**model, "due_items": [d.to_dict() for d in due]}
