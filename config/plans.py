"""Plans: which tiers a learner is entitled to, and their monthly limits across tiers.

Loaded from ``config/plans.yaml`` and validated here (every tier a plan names must exist in
``config/tiers.yaml``). A learner's plan is set by the app that owns the learner, within the
plans its API key may grant, never by the learner; a session outside it is refused.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.tiers import load_tiers

PLANS_FILE = Path(__file__).with_name("plans.yaml")

ALL_PLANS = "*"
"""An API key's plan list meaning "every plan" (keys made before plans existed)."""


class PlanError(ValueError):
    """``plans.yaml`` is invalid, or a plan name is unknown; the message says which."""


class Plan(BaseModel):
    """A plan.

    Attributes:
        name: Key in ``plans.yaml`` (``free``, ``ground_school``, ...).
        title: Human-readable name.
        tiers: The tiers its learners may start sessions on.
        sessions_per_month: Sessions per learner per calendar month (UTC) over all tiers,
            ``None`` for unlimited.
        tts_chars_per_month: Characters TTS may speak per learner per month over all tiers,
            ``None`` for unlimited.
        stripe_price_lookup_key: The ``lookup_key`` of the Stripe Price a learner pays for it
            (https://docs.stripe.com/products-prices/manage-prices#lookup-keys), ``None`` for a
            plan that is not for sale (``free``). Checkout resolves it to the price's id, and a
            subscription's price maps back to the plan through it (:mod:`api.billing`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    tiers: tuple[str, ...] = Field(min_length=1)
    sessions_per_month: int | None = Field(default=None, ge=1)
    tts_chars_per_month: int | None = Field(default=None, ge=1)
    stripe_price_lookup_key: str | None = Field(default=None, min_length=1, max_length=200)


@lru_cache(maxsize=4)
def load_plans(path: Path = PLANS_FILE) -> dict[str, Plan]:
    """All plans by name, validated.

    Raises:
        PlanError: unreadable or invalid file, or a plan naming an unknown tier.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PlanError(f"{path}: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise PlanError(f"{path}: expected a mapping of plan names")
    tiers = load_tiers()
    plans = {}
    for name, body in raw.items():
        try:
            plan = Plan(name=name, **(body or {}))
        except (ValidationError, TypeError) as e:
            raise PlanError(f"{path}: plan {name!r}: {e}") from None
        unknown = [t for t in plan.tiers if t not in tiers]
        if unknown:
            raise PlanError(f"{path}: plan {name!r} names unknown tiers {unknown}")
        plans[name] = plan
    keys = [p.stripe_price_lookup_key for p in plans.values() if p.stripe_price_lookup_key]
    if len(keys) != len(set(keys)):
        raise PlanError(f"{path}: two plans share a stripe_price_lookup_key")
    return plans


def get_plan(name: str) -> Plan:
    """The plan called ``name``.

    Raises:
        PlanError: no such plan (the message lists the known ones).
    """
    plans = load_plans()
    if name not in plans:
        raise PlanError(f"unknown plan {name!r}; known: {', '.join(plans)}")
    return plans[name]


def plan_for_price(lookup_key: str) -> Plan | None:
    """The plan sold at the Stripe Price with ``lookup_key``, or ``None`` if no plan is."""
    return next((p for p in load_plans().values() if p.stripe_price_lookup_key == lookup_key), None)


def key_may_grant(key_plans: str, plan: str) -> bool:
    """Whether an API key may put its learners on ``plan``.

    Args:
        key_plans: The key's plan list, comma-separated, or ``*`` for every plan.
        plan: The plan to grant.
    """
    allowed = {p.strip() for p in key_plans.split(",")}
    return ALL_PLANS in allowed or plan in allowed
