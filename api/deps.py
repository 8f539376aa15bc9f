"""Request dependencies: the app context and the two kinds of credentials.

* API keys (``Authorization: Bearer <key>`` or ``X-API-Key: <key>``) guard every ``/api/v1``
  route except the WebRTC signalling ones. Missing, unknown and revoked keys all answer 401:
  a revoked key is indistinguishable from one that never existed.
* The per-session token (``Authorization: Bearer <token>``; never in a URL, where access logs
  would keep it) guards
  ``/api/v1/sessions/{id}/offer``; the browser holds only that token. Missing → 401; wrong
  token or unknown session → 403 (the two are indistinguishable).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.billing import StripeBilling
from api.errors import ApiError
from api.limits import ApiLimits
from api.metrics import Metrics
from api.runtime import SessionSlots, Supervisor
from config.settings import Settings
from store import ApiKeyInfo, SessionInfo, Store
from store.access import AccessExpiredError, LearnerAccess

SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{8,256}$")
"""Shape of API keys and session tokens (``secrets.token_urlsafe``); others are not looked up."""


@dataclass
class AppContext:
    """Everything a request handler needs, set up by the app's lifespan.

    Attributes:
        settings: Process settings.
        store: The open store.
        metrics: The app's metrics.
        supervisor: Runs session processes, or ``None`` when not configured.
        llm_base_url: The local tier's LLM server, or ``None``.
        slots: Session slots reserved by launches in progress (:mod:`api.launch`).
        limits: Request and session-start rate limits (:mod:`api.limits`), or ``None``.
        billing: Stripe calls (:mod:`api.billing`), or ``None`` without ``STRIPE_SECRET_KEY``.
    """

    settings: Settings
    store: Store
    metrics: Metrics
    supervisor: Supervisor | None
    llm_base_url: str | None
    slots: SessionSlots = field(default_factory=SessionSlots)
    limits: ApiLimits | None = None
    billing: StripeBilling | None = None


def get_ctx(request: Request) -> AppContext:
    """Return the app context.

    Raises:
        ApiError: 503 while the app has not started (lifespan not run).
    """
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise ApiError(503, "starting", "the service is starting")
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


def is_uuid(value: str) -> bool:
    """Whether ``value`` has the shape of the store's ids (a canonical UUID string)."""
    if len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKeyBearer",
    description="API key as `Authorization: Bearer <key>` (`voxtutor keys create`).",
)
_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="API key as `X-API-Key: <key>`.",
)
_session_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SessionTokenBearer",
    description="The session's browser token as `Authorization: Bearer <token>`.",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def require_api_key(
    ctx: Ctx,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> ApiKeyInfo:
    """Return the calling key, counting the request against its rate limit.

    Raises:
        ApiError: 401 if no key is given, or it is unknown or revoked; 429 ``rate_limited``
            over the key's request rate (:mod:`api.limits`).
    """
    presented = bearer.credentials if bearer is not None else header
    if not presented:
        raise ApiError(
            401,
            "unauthorized",
            "an API key is required: Authorization: Bearer <key> or X-API-Key: <key>",
            _CHALLENGE,
        )
    key = await ctx.store.authenticate(presented) if SECRET_RE.match(presented) else None
    if key is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key", _CHALLENGE)
    if ctx.limits is not None:
        await ctx.limits.request(key.id)
    return key


ApiKey = Annotated[ApiKeyInfo, Depends(require_api_key)]


_learner_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="LearnerTokenBearer",
    description="A learner's access token as `Authorization: Bearer <token>` "
    "(`POST /api/v1/learners/{id}/access`).",
)


async def require_learner_token(
    ctx: Ctx,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_learner_bearer)],
) -> LearnerAccess:
    """Return the learner (and the token's expiry) whose access token was presented.

    Counted against the owning key's request rate, like the key's own calls.

    Raises:
        ApiError: 401 ``unauthorized`` without a token or for an unknown one, 401
            ``token_expired`` for an expired one; 429 ``rate_limited`` (:mod:`api.limits`).
    """
    presented = bearer.credentials if bearer is not None else None
    if not presented:
        raise ApiError(401, "unauthorized", "a learner access token is required", _CHALLENGE)
    try:
        access = await ctx.store.learner_access(presented) if SECRET_RE.match(presented) else None
    except AccessExpiredError as e:
        raise ApiError(
            401, "token_expired", f"{e}; ask your app for a new one", _CHALLENGE
        ) from None
    if access is None:
        raise ApiError(401, "unauthorized", "unknown access token", _CHALLENGE)
    if ctx.limits is not None:
        await ctx.limits.request(access.learner.owner_key_id)
    return access


Learner = Annotated[LearnerAccess, Depends(require_learner_token)]


async def require_session_token(
    ctx: Ctx,
    session_id: Annotated[str, Path(description="The session id.")],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_session_bearer)],
) -> SessionInfo:
    """Return the session whose browser token was presented.

    Raises:
        ApiError: 401 without a token; 403 for a wrong token or an unknown session.
    """
    presented = bearer.credentials if bearer is not None else None
    if not presented:
        raise ApiError(
            401,
            "unauthorized",
            "the session token is required: Authorization: Bearer <token> (never in the URL)",
            _CHALLENGE,
        )
    valid = SECRET_RE.match(presented) is not None and is_uuid(session_id)
    if not valid or not await ctx.store.check_session_token(session_id, presented):
        raise ApiError(403, "forbidden", "invalid session token")
    session = await ctx.store.get_session(session_id)
    if session is None:  # deleted between the two reads
        raise ApiError(403, "forbidden", "invalid session token")
    return session


SessionByToken = Annotated[SessionInfo, Depends(require_session_token)]
