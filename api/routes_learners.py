"""``/api/v1/learners``: the people being tutored, each owned by the API key that created it."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ApiKey, Ctx, is_uuid
from api.errors import ApiError, error_responses
from api.schemas import LearnerCreate, LearnerOut
from store import ConflictError

router = APIRouter(tags=["learners"], responses=error_responses(500))


@router.post(
    "/learners",
    status_code=201,
    response_model=LearnerOut,
    responses=error_responses(401, 409, 413, 422),
    summary="Create a learner",
)
async def create_learner(
    body: LearnerCreate, key: ApiKey, ctx: Ctx, response: Response
) -> LearnerOut:
    """Create a learner owned by the calling key (409 if the phone number is taken)."""
    try:
        learner = await ctx.store.create_learner(
            key.id,
            body.name,
            body.target_language,
            body.cefr_level,
            body.interests,
            body.phone,
        )
    except ConflictError as e:
        raise ApiError(409, "phone_in_use", str(e)) from None
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    response.headers["Location"] = f"/api/v1/learners/{learner.id}"
    return LearnerOut.of(learner)


@router.get(
    "/learners/{learner_id}",
    response_model=LearnerOut,
    responses=error_responses(401, 404, 422),
    summary="Get a learner",
)
async def get_learner(learner_id: str, key: ApiKey, ctx: Ctx) -> LearnerOut:
    """Return one of the calling key's learners (404 for others' and unknown ones)."""
    learner = await ctx.store.get_learner(learner_id, key.id) if is_uuid(learner_id) else None
    if learner is None:
        raise ApiError(404, "learner_not_found", f"no learner {learner_id!r}")
    return LearnerOut.of(learner)
