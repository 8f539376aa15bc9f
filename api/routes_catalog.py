"""``/api/v1/personas`` and ``/api/v1/tiers``: what a session can be started with."""

from __future__ import annotations

from fastapi import APIRouter
from loguru import logger

from api.deps import ApiKey
from api.errors import error_responses
from api.schemas import PersonaOut, TierOut, TierQuotas
from config.personas import PersonaError, list_personas, load_persona
from config.tiers import load_tiers

router = APIRouter(tags=["catalog"], responses=error_responses(429, 500))


@router.get(
    "/personas",
    response_model=list[PersonaOut],
    responses=error_responses(401),
    summary="List personas",
)
async def personas(_: ApiKey) -> list[PersonaOut]:
    """The packaged personas (invalid persona files are logged and left out)."""
    out = []
    for pid in list_personas():
        try:
            p = load_persona(pid)
        except PersonaError as e:
            logger.error("persona {} is invalid: {}", pid, e)
            continue
        out.append(
            PersonaOut(
                id=p.id, name=p.name, role=p.role, language=p.language, cefr_level=p.cefr_level
            )
        )
    return out


@router.get(
    "/tiers",
    response_model=list[TierOut],
    responses=error_responses(401),
    summary="List tiers",
)
async def tiers(_: ApiKey) -> list[TierOut]:
    """Every tier with its provider chains and quotas.

    ``available`` is true when the primary providers' keys are set; ``missing`` names the
    unset variables (never values).
    """
    out = []
    for tier in load_tiers().values():
        roles = (
            {"realtime": (tier.realtime,)}
            if tier.realtime
            else {"stt": tier.stt, "llm": tier.llm, "tts": tier.tts}
        )
        missing = tier.missing_env()
        out.append(
            TierOut(
                name=tier.name,
                title=tier.title,
                kind=tier.kind,
                providers={r: [x.provider for x in chain] for r, chain in roles.items()},
                quotas=TierQuotas(**tier.quotas.model_dump()),
                available=not missing,
                missing=missing,
            )
        )
    return out
