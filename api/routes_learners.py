"""``/api/v1/learners``: the people being tutored, each owned by the API key that created it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Response

from api.deps import ApiKey, Ctx, is_uuid
from api.errors import ApiError, error_responses
from api.schemas import LearnerCreate, LearnerOut, LearnerPatch, LearnerProgress, PlanOut
from config.plans import PlanError, get_plan, key_may_grant, load_plans
from store import ApiKeyInfo, ConflictError, LimitError, NotFoundError, SubscriptionActiveError

router = APIRouter(tags=["learners"], responses=error_responses(429, 500))


@contextmanager
def known_learner(learner_id: str) -> Iterator[None]:
    """Answer 404 ``learner_not_found`` for a bad id or a learner the store does not find.

    Raised for an id that is no UUID, and for the store's ``NotFoundError`` (unknown, or
    another key's learner) inside the block.
    """
    if not is_uuid(learner_id):
        raise ApiError(404, "learner_not_found", f"no learner {learner_id!r}")
    try:
        yield
    except NotFoundError:
        raise ApiError(404, "learner_not_found", f"no learner {learner_id!r}") from None


def grantable_plan(key: ApiKeyInfo, plan: str) -> str:
    """``plan`` if it exists and ``key`` may grant it.

    Raises:
        ApiError: 422 ``unknown_plan``; 403 ``plan_not_allowed``.
    """
    try:
        get_plan(plan)
    except PlanError as e:
        raise ApiError(422, "unknown_plan", str(e)) from None
    if not key_may_grant(key.plans, plan):
        raise ApiError(
            403,
            "plan_not_allowed",
            f"this key may not put learners on plan {plan!r} (it may grant: {key.plans})",
        )
    return plan


@router.get(
    "/plans",
    response_model=list[PlanOut],
    responses=error_responses(401),
    summary="The plans",
)
async def plans(key: ApiKey) -> list[PlanOut]:
    """Every plan with its tiers and monthly limits, and whether the calling key may grant it."""
    return [
        PlanOut(
            name=p.name,
            title=p.title,
            tiers=list(p.tiers),
            sessions_per_month=p.sessions_per_month,
            tts_chars_per_month=p.tts_chars_per_month,
            grantable=key_may_grant(key.plans, p.name),
        )
        for p in load_plans().values()
    ]


@router.post(
    "/learners",
    status_code=201,
    response_model=LearnerOut,
    responses=error_responses(401, 403, 413, 422),
    summary="Create a learner",
)
async def create_learner(
    body: LearnerCreate, key: ApiKey, ctx: Ctx, response: Response
) -> LearnerOut:
    """Create a learner owned by the calling key (a phone number is added and proved later).

    The plan must be one the key may grant (403 ``plan_not_allowed``); a key has at most
    ``VOXTUTOR_MAX_LEARNERS_PER_KEY`` learners (403 ``learner_limit``).
    """
    plan = grantable_plan(key, body.plan or ctx.settings.default_plan)
    try:
        learner = await ctx.store.create_learner(
            key.id,
            body.name,
            body.target_language,
            body.cefr_level,
            body.interests,
            plan=plan,
            max_per_key=ctx.settings.max_learners_per_key,
        )
    except LimitError as e:
        raise ApiError(403, "learner_limit", str(e)) from None
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


@router.patch(
    "/learners/{learner_id}",
    response_model=LearnerOut,
    responses=error_responses(401, 403, 404, 409, 413, 422),
    summary="Change a learner's name, level, interests or plan",
)
async def patch_learner(learner_id: str, body: LearnerPatch, key: ApiKey, ctx: Ctx) -> LearnerOut:
    """Set what a learner or app knows better than the store: name, CEFR level, interests.

    A level set here goes into the level history (source ``set``); the tutor speaks at it
    from the next session. A plan must be one the calling key may grant (403
    ``plan_not_allowed``), and cannot change while a Stripe subscription holds the learner's
    plan (409 ``plan_managed_by_billing``: the portal changes it). Fields left out are kept.
    """
    plan = grantable_plan(key, body.plan) if body.plan is not None else None
    try:
        with known_learner(learner_id):
            learner = await ctx.store.update_learner(
                learner_id,
                key.id,
                name=body.name,
                cefr_level=body.cefr_level,
                interests=body.interests,
                plan=plan,
            )
    except SubscriptionActiveError as e:
        raise ApiError(409, "plan_managed_by_billing", str(e)) from None
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    return LearnerOut.of(learner)


@router.get(
    "/learners/{learner_id}/progress",
    response_model=LearnerProgress,
    responses=error_responses(401, 404, 422),
    summary="A learner's model and progress",
)
async def learner_progress(learner_id: str, key: ApiKey, ctx: Ctx) -> LearnerProgress:
    """The learner model and its time series.

    Level with evidence, weaknesses, review items and ACS mastery, all counted from the
    stored sessions, mistakes, grades and reviews.
    """
    with known_learner(learner_id):
        model = await ctx.store.learner_model(learner_id, key.id)
    due = await ctx.store.due_review_items(learner_id, limit=10)
    return LearnerProgress(**model, due_items=[d.to_dict() for d in due])


@router.get(
    "/learners/{learner_id}/export",
    responses=error_responses(401, 404, 422),
    summary="Everything stored about a learner",
)
async def export_learner(learner_id: str, key: ApiKey, ctx: Ctx) -> dict[str, Any]:
    """Everything stored about the learner, as one JSON document.

    The learner, their level history, every session (turns, mistakes, ACS grades, events,
    usage, report) and their review items with every rating.
    """
    with known_learner(learner_id):
        return await ctx.store.export_learner(learner_id, key.id)


@router.delete(
    "/learners/{learner_id}",
    status_code=204,
    responses=error_responses(401, 404, 409, 422),
    summary="Erase a learner",
)
async def erase_learner(learner_id: str, key: ApiKey, ctx: Ctx) -> Response:
    """Erase the learner and everything about them (``store.erasure``).

    Their sessions' usage stays, without content, as anonymous totals for billing. 409
    ``learner_in_session`` while a session of theirs is live, ``subscription_active`` while a
    Stripe subscription pays for their plan (cancel it in the portal first).
    """
    try:
        with known_learner(learner_id):
            await ctx.store.erase_learner(learner_id, key.id)
    except SubscriptionActiveError as e:
        raise ApiError(409, "subscription_active", str(e)) from None
    except ConflictError as e:
        raise ApiError(409, "learner_in_session", str(e)) from None
    return Response(status_code=204)
