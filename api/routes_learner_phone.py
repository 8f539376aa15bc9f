"""``/api/v1/learners/{id}/phone``: proving a phone number before calls from it reach a learner.

A number is a learner's identity on calls (their memory, their quota, their transcripts), so
typing it is not enough: the server calls it and reads a code (:mod:`api.phone_code_call`),
and the app sends back what the learner heard (:mod:`store.phone_identity` has the rules).
Every request for a code gets the same answer whether or not the number is known anywhere,
and every wrong, expired or spent code the same ``invalid_code``, so nothing tells a caller
whether a number belongs to somebody.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.deps import ApiKey, Ctx
from api.errors import ApiError, error_responses
from api.phone_code_call import CallFailedError, call_with_code, caller_number, code_carrier
from api.routes_learners import known_learner
from api.schemas import LearnerOut, Text, _Request
from store.phone_identity import InvalidCodeError, TooSoonError

router = APIRouter(tags=["learners"], responses=error_responses(429, 500))


class PhoneClaim(_Request):
    """A number to prove."""

    phone: Text = Field(
        pattern=r"^\+[1-9][0-9]{1,14}$",
        description="E.164 number; it is called and a 6-digit code is read.",
        examples=["+420601123456"],
    )


class PhoneCode(_Request):
    """The code the learner heard."""

    code: Text = Field(pattern=r"^[0-9]{6}$", examples=["482915"])


class PhoneCalling(BaseModel):
    """The number is being called; enter the code before ``expires_at``."""

    status: Literal["calling"] = "calling"
    phone: str
    expires_at: datetime


@router.post(
    "/learners/{learner_id}/phone",
    status_code=202,
    response_model=PhoneCalling,
    responses=error_responses(401, 404, 422, 502, 503),
    summary="Call a number with a code, to make it the learner's",
)
async def claim_phone(
    learner_id: str, body: PhoneClaim, key: ApiKey, ctx: Ctx, response: Response
) -> PhoneCalling:
    """Call ``phone`` and read a 6-digit code; the number is the learner's once it is entered.

    The same answer whatever the number (known elsewhere or not). 429 ``too_soon`` with
    ``Retry-After`` within a minute of the last code; 503 ``phone_unavailable`` when no
    carrier can place calls (Twilio SID and token, or Telnyx key and TeXML connection id);
    502 ``call_failed`` when the carrier refused it.
    """
    carrier = code_carrier(ctx.settings)
    if carrier is None or caller_number(ctx.settings) is None:
        raise ApiError(503, "phone_unavailable", "this server cannot place calls to verify numbers")
    if ctx.limits is not None:
        await ctx.limits.code_call(key.id)  # 429 over VOXTUTOR_PHONE_VERIFY_CALLS_PER_KEY
    try:
        with known_learner(learner_id):
            pending = await ctx.store.start_phone_verification(
                learner_id, key.id, body.phone, carrier
            )
    except TooSoonError as e:
        raise ApiError(
            429, "too_soon", str(e), headers={"Retry-After": str(e.retry_after_s)}
        ) from None
    try:
        call_id = await call_with_code(ctx.settings, pending.phone, pending.code)
    except CallFailedError as e:
        await ctx.store.record_code_call(pending.id, None)
        raise ApiError(502, "call_failed", str(e)) from None
    await ctx.store.record_code_call(pending.id, call_id or "unknown")
    response.headers["Location"] = f"/api/v1/learners/{learner_id}/phone/verify"
    return PhoneCalling(phone=pending.phone, expires_at=pending.expires_at)


@router.post(
    "/learners/{learner_id}/phone/verify",
    response_model=LearnerOut,
    responses=error_responses(401, 404, 422),
    summary="Enter the code: the number becomes the learner's",
)
async def verify_phone(learner_id: str, body: PhoneCode, key: ApiKey, ctx: Ctx) -> LearnerOut:
    """Check the code; right → the learner (``phone`` set), calls from it now reach them.

    A learner of the same key who had the number loses it. Wrong, expired (10 minutes),
    spent (5 wrong entries) or missing codes all answer 422 ``invalid_code``.
    """
    try:
        with known_learner(learner_id):
            learner = await ctx.store.verify_phone(learner_id, key.id, body.code)
    except InvalidCodeError as e:
        raise ApiError(422, "invalid_code", f"{e}; ask for a new call") from None
    return LearnerOut.of(learner)


@router.delete(
    "/learners/{learner_id}/phone",
    status_code=204,
    responses=error_responses(401, 404, 422),
    summary="Unlink the learner's number",
)
async def remove_phone(learner_id: str, key: ApiKey, ctx: Ctx) -> Response:
    """Calls from the number stop reaching the learner (they are guests again)."""
    with known_learner(learner_id):
        await ctx.store.remove_phone(learner_id, key.id)
    return Response(status_code=204)
