"""``/api/v1/sessions/{id}/offer``: WebRTC signalling between the browser and a session process.

Authenticated by the session's browser token (``Authorization: Bearer``, never the URL), not
by an API key: the browser holds only that token. ``POST`` carries the SDP offer (and ICE
restarts), ``PATCH`` trickles ICE candidates, as Pipecat's SmallWebRTC client does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from loguru import logger

from api.deps import AppContext, Ctx, SessionByToken
from api.errors import ApiError, error_responses
from api.ice import candidate_address, candidate_allowed, filter_offer
from api.runtime import Supervisor
from api.schemas import IceAccepted, IcePatch, SdpAnswer, SdpOffer
from runtime.protocol import SessionNotRunningError, SessionRequestError
from store import SessionInfo

router = APIRouter(tags=["webrtc"], responses=error_responses(500))


def _live_supervisor(ctx: AppContext, session: SessionInfo) -> Supervisor:
    if session.terminal:
        raise ApiError(409, "session_not_running", f"session {session.id} is {session.status}")
    if ctx.supervisor is None:
        raise ApiError(503, "runtime_unavailable", "session runtime not configured")
    return ctx.supervisor


def _not_running(session: SessionInfo) -> ApiError:
    return ApiError(409, "session_not_running", f"session {session.id} has no running process")


@router.post(
    "/sessions/{session_id}/offer",
    response_model=SdpAnswer,
    responses=error_responses(400, 401, 403, 409, 413, 422, 503),
    summary="Send the browser's SDP offer",
)
async def offer(body: SdpOffer, session: SessionByToken, ctx: Ctx) -> SdpAnswer:
    """Forward the SDP offer to the session process and return its answer.

    Wrong token → 403; ended or failed session → 409; SDP the process rejects → 400.
    """
    supervisor = _live_supervisor(ctx, session)
    log = logger.bind(session_id=session.id)
    sdp, dropped = filter_offer(body.sdp, ctx.settings.webrtc_private_candidates)
    if dropped:
        log.info("offer: {} candidate(s) left out (not public addresses)", dropped)
    request: dict[str, Any] = {
        "sdp": sdp,
        "type": body.type,
        "pc_id": body.pc_id,
        "restart_pc": bool(body.restart_pc),
    }
    try:
        answer = await supervisor.offer(session.id, request)
    except SessionNotRunningError:
        raise _not_running(session) from None
    except SessionRequestError as e:
        ctx.metrics.error("bad_offer")
        log.info("offer rejected: {}", e)
        raise ApiError(400, "bad_offer", str(e) or "the session rejected the offer") from None
    log.info("offer answered (pc_id={})", answer.get("pc_id"))
    return SdpAnswer.model_validate(answer)


@router.patch(
    "/sessions/{session_id}/offer",
    response_model=IceAccepted,
    responses=error_responses(400, 401, 403, 409, 413, 422, 503),
    summary="Trickle ICE candidates",
)
async def ice(body: IcePatch, session: SessionByToken, ctx: Ctx) -> IceAccepted:
    """Forward ICE candidates to the session process (same errors as the offer).

    A candidate that is not a public address (loopback, private, link-local, a hostname) is
    refused with 422 ``candidate_refused`` unless ``VOXTUTOR_WEBRTC_PRIVATE_CANDIDATES`` is
    set; an empty one (end of candidates) passes.
    """
    allow = ctx.settings.webrtc_private_candidates
    for c in body.candidates:
        if c.candidate.strip() and not candidate_allowed(c.candidate, allow):
            raise ApiError(
                422,
                "candidate_refused",
                f"ICE candidate refused: {candidate_address(c.candidate) or 'malformed'} is "
                "not a public address",
            )
    supervisor = _live_supervisor(ctx, session)
    try:
        await supervisor.ice(session.id, body.model_dump())
    except SessionNotRunningError:
        raise _not_running(session) from None
    except SessionRequestError as e:
        ctx.metrics.error("bad_offer")
        raise ApiError(400, "bad_ice", str(e) or "the session rejected the candidates") from None
    return IceAccepted()
