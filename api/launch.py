"""Start a session: the one path every entry point takes (REST, phone webhooks, Daily dial-in).

:func:`launch` checks the runtime, reserves a session slot, checks the learner's monthly
quotas, creates the store row, the Daily room where there is one, the :class:`SessionSpec`,
and spawns the session's process. Any refusal is one exception, :class:`LaunchError` (an
:class:`api.errors.ApiError`): the REST and dial-in routes answer it as it is, the phone
webhooks turn it into a spoken refusal. :func:`find_persona` and :func:`check_tier` check what
a caller asked for before that.

The slot is reserved before the first ``await``: every request that passed a capacity check
is counted before the next request makes its own, so concurrent requests can never start
more than ``max_sessions`` processes. The reservation passes to the supervisor when its
``spawn`` starts (it counts a process as running from its first step) and is dropped on any
failure before then.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Protocol

from loguru import logger

from api.billing import upgrade_url
from api.deps import AppContext
from api.errors import ApiError
from api.quotas import quota_refusal
from api.runtime import SlotReservation, known_tiers, missing_env, uses_local_llm
from config.personas import Persona, list_personas, load_persona
from config.plans import get_plan, load_plans
from config.tiers import get_tier
from contracts.session_spec import SessionSpec, Transport
from pipelines.memory import (
    MAX_NAME_CHARS,
    MAX_REVIEW_ITEMS,
    LearnerMemory,
    clean,
    memory_from_model,
)
from runtime.protocol import CapacityError
from store import LearnerInfo, QuotaExceededError, SessionInfo
from store.quotas import Limits
from transports.daily import DailyError, release_session_room


class LaunchError(ApiError):
    """A session that did not start, with the API answer that says why.

    ``code`` is one of ``runtime_unavailable`` (503: no supervisor or LLM server),
    ``at_capacity`` (429 with ``Retry-After``), ``local_at_capacity`` (429: the local tier's
    LLM server serves ``max_local_sessions`` already), ``quota_exceeded`` (402 with ``quota``,
    ``limit``, ``used``, ``upgrade_url``), ``transport_unavailable`` (503: Daily failed) and
    ``session_start_failed`` (503: the process did not become ready), ``nothing_due``
    (409: a review session with no review item due), ``tier_not_entitled`` (403: the
    learner's plan does not include the tier), ``rate_limited`` (429: the learner started too
    many sessions lately) and ``key_at_capacity`` (429: the key's live sessions are at
    ``VOXTUTOR_MAX_SESSIONS_PER_KEY``).
    """

    @classmethod
    def from_api_error(cls, e: ApiError) -> LaunchError:
        """The same answer as ``e``, as a :class:`LaunchError`."""
        return cls(e.status, e.code, e.message, e.headers, e.extra)


class Room(Protocol):
    """A session's Daily room as :func:`launch` needs it (``DailyRoom``, ``DialinRoom``)."""

    @property
    def url(self) -> str:
        """The room's URL, which the bot joins."""
        ...

    @property
    def bot_token(self) -> str:
        """The bot's meeting token (owner) for the room."""
        ...


@dataclass(frozen=True)
class LaunchRequest:
    """What to start.

    Attributes:
        learner: Who the session is for (the session row belongs to the learner's API key),
            or a coroutine function that finds or creates the learner, awaited only once a
            slot is reserved (a phone caller's guest record is not created when all slots
            are busy).
        persona: The tutor or examiner.
        tier: A tier name already checked against ``config/tiers.yaml``.
        transport: How the learner connects.
        learner_name: The name the tutor uses for the learner (``None``: none), from the
            learner record; by default the record's name.
        make_room: For Daily sessions: creates the session's room from its id; raises
            ``DailyError`` when Daily fails. ``None`` for other transports.
        daily_call_id: Daily pinless dial-in: the held call's ``callId``.
        daily_call_domain: Daily pinless dial-in: the call's ``callDomain``.
        mode: ``conversation``, or ``review`` (drill the learner's due review items; 409
            ``nothing_due`` when none is due).
        by_line: The tier was chosen by the operator's phone line, not by the learner: it
            is not checked against the learner's plan (the plan's quotas still count).
        remember: Start from the learner's memory; ``False`` for a record shared by several
            people (callers who withhold their number), whose history is not theirs.
    """

    learner: LearnerInfo | Callable[[], Awaitable[LearnerInfo]]
    persona: Persona
    tier: str
    transport: Transport
    learner_name: Callable[[LearnerInfo], str | None] = attrgetter("name")
    make_room: Callable[[str], Awaitable[Room]] | None = None
    daily_call_id: str | None = None
    daily_call_domain: str | None = None
    mode: str = "conversation"
    by_line: bool = False
    remember: bool = True


@dataclass(frozen=True)
class Launched:
    """A started session.

    Attributes:
        session: The store's row as it stands after the spawn (status ``ready``).
        token: The session's browser token (WebRTC signalling).
        spec: What the process was told to run.
        room: The Daily room, or ``None``.
    """

    session: SessionInfo
    token: str
    spec: SessionSpec
    room: Room | None


def find_persona(persona_id: str) -> Persona:
    """Return a packaged persona by id.

    The id is matched against the packaged list first, so no caller-given text ever becomes
    a file path.

    Raises:
        ApiError: 422 ``unknown_persona`` (the message lists the known ones).
    """
    known = list_personas()
    if persona_id not in known:
        raise ApiError(
            422, "unknown_persona", f"unknown persona {persona_id!r}; known: {', '.join(known)}"
        )
    return load_persona(persona_id)


def check_tier(tier: str) -> None:
    """Accept ``tier`` if this build knows it and its environment is complete.

    Raises:
        ApiError: 422 ``unknown_tier``; 503 ``tier_unavailable`` naming the missing variables.
    """
    tiers = known_tiers()
    if tier not in tiers:
        raise ApiError(422, "unknown_tier", f"unknown tier {tier!r}; known: {', '.join(tiers)}")
    missing = missing_env(tier)
    if missing:
        raise ApiError(
            503, "tier_unavailable", f"tier {tier!r} needs {', '.join(missing)} to be set"
        )


def _at_capacity(message: str, retry_after_s: int) -> LaunchError:
    return LaunchError(429, "at_capacity", message, {"Retry-After": str(max(1, retry_after_s))})


async def launch(ctx: AppContext, req: LaunchRequest) -> Launched:
    """Start ``req``'s session and return once its process is ready.

    Raises:
        LaunchError: the session did not start (the class doc lists the codes). A session
            row created before the failure is marked ``failed`` with the reason, and a Daily
            room created for it is deleted.
    """
    supervisor = ctx.supervisor
    if supervisor is None or not ctx.llm_base_url:
        what = "session runtime" if supervisor is None else "LLM server"
        raise LaunchError(503, "runtime_unavailable", f"{what} not configured")
    # No await before the reservation: see the module doc.
    local = uses_local_llm(req.tier)
    # A scaled-out runtime counts every host's LLM server (runtime.cluster.dispatch).
    max_local = int(getattr(supervisor, "max_local_sessions", ctx.settings.max_local_sessions))
    slot = ctx.slots.reserve(supervisor, local=local, max_local=max_local)
    if slot is None:
        ctx.metrics.error("capacity")
        if supervisor.active_count + ctx.slots.reserved < supervisor.max_sessions:
            raise LaunchError(
                429,
                "local_at_capacity",
                f"the local tier's LLM server already serves {max_local} session(s), as many "
                "as it answers within the latency target; try again shortly or use a cloud tier",
                {"Retry-After": "60"},
            )
        raise _at_capacity(f"all {supervisor.max_sessions} session slots are busy", 30)
    try:
        return await _start(ctx, req, slot)
    finally:
        slot.release()


async def _start(ctx: AppContext, req: LaunchRequest, slot: SlotReservation) -> Launched:
    supervisor = ctx.supervisor
    assert supervisor is not None and ctx.llm_base_url  # checked by launch()
    learner = req.learner if isinstance(req.learner, LearnerInfo) else await req.learner()
    tier = get_tier(req.tier)
    plan = get_plan(learner.plan) if learner.plan in load_plans() else get_plan("free")
    if not req.by_line and req.tier not in plan.tiers:
        raise LaunchError(
            403,
            "tier_not_entitled",
            f"the learner's plan {plan.name!r} includes the tiers {', '.join(plan.tiers)}, "
            f"not {req.tier!r}",
            extra={
                "plan": plan.name,
                "tiers": list(plan.tiers),
                "upgrade_url": upgrade_url(ctx.settings, learner.id),
            },
        )
    review = req.mode == "review"
    if review and tier.kind != "pipeline":
        raise LaunchError(
            422,
            "invalid_request",
            f"a review session needs a cascaded tier; {req.tier!r} is speech-to-speech",
        )
    due = await ctx.store.due_review_items(learner.id, limit=MAX_REVIEW_ITEMS)
    if review and not due:
        raise LaunchError(409, "nothing_due", "no review items are due for this learner")
    model = await ctx.store.learner_model(learner.id)
    memory = memory_from_model(model, [d.to_dict() for d in due], review_session=review)
    memory = replace(memory, name=clean(req.learner_name(learner) or "", MAX_NAME_CHARS) or None)
    if not req.remember:  # a shared guest: its history is other people's
        memory = LearnerMemory()
    limits = Limits(
        plan_sessions=plan.sessions_per_month,
        plan_tts_chars=plan.tts_chars_per_month,
        tier_sessions=tier.quotas.sessions_per_month,
        tier_tts_chars=tier.quotas.tts_chars_per_month,
        session_tts_chars=ctx.settings.session_tts_reserve_chars,
        key_sessions=ctx.settings.max_sessions_per_key,
    )
    if ctx.limits is not None:
        try:
            await ctx.limits.session_start(learner.id)
        except ApiError as e:
            raise LaunchError.from_api_error(e) from None
    try:
        info, token, tts_left = await ctx.store.reserve_session(
            learner.id,
            learner.owner_key_id,
            req.persona.id,
            req.tier,
            req.transport,
            limits,
            req.mode,
        )
    except QuotaExceededError as e:
        if e.quota == "concurrent_sessions":
            raise LaunchError(
                429,
                "key_at_capacity",
                f"this API key has {e.used} live sessions, its limit",
                {"Retry-After": "30"},
            ) from None
        refusal = quota_refusal(e, upgrade_url(ctx.settings, learner.id))
        raise LaunchError.from_api_error(refusal) from None
    sid, log = info.id, logger.bind(session_id=info.id)
    room = None
    if req.make_room is not None:
        try:
            room = await req.make_room(sid)
        except DailyError as e:
            await ctx.store.set_session_status(sid, "failed", f"failed to start: {e}")
            ctx.metrics.error("daily")
            log.error("Daily room not created: {}", e)
            raise LaunchError(
                503, "transport_unavailable", f"Daily is unavailable: {e} (session {sid})"
            ) from None
    spec = SessionSpec(
        session_id=sid,
        persona=req.persona.id,
        tier=req.tier,
        transport=req.transport,
        llm_base_url=ctx.llm_base_url,
        cefr_level=learner.cefr_level,
        learner_name=req.learner_name(learner),
        idle_timeout_s=ctx.settings.session_idle_timeout_s,
        exchange_limit=tier.quotas.exchanges_per_session,
        tts_chars_left=tts_left,
        daily_room_url=room.url if room else None,
        daily_token=room.bot_token if room else None,
        daily_call_id=req.daily_call_id,
        daily_call_domain=req.daily_call_domain,
        mode=req.mode,
        memory=memory.to_json(),
        max_duration_s=ctx.settings.max_session_minutes * 60,
    )
    started = time.monotonic()
    try:
        await _spawn(ctx, spec, slot)
    except BaseException:
        # No session process owns the room: delete it now.
        await release_session_room(spec, api_url=ctx.settings.daily_api_url)
        raise
    ctx.metrics.observe_spawn(time.monotonic() - started)
    current = await ctx.store.get_session(sid)
    log.info(
        "session started: persona={} tier={} transport={}", spec.persona, spec.tier, spec.transport
    )
    return Launched(session=current or info, token=token, spec=spec, room=room)


async def _spawn(ctx: AppContext, spec: SessionSpec, slot: SlotReservation) -> None:
    """Hand the slot to the supervisor and start the process, mapping failures.

    Raises:
        LaunchError: 429 ``at_capacity`` or 503 ``session_start_failed`` (session ``failed``).
    """
    supervisor = ctx.supervisor
    assert supervisor is not None
    sid, log = spec.session_id, logger.bind(session_id=spec.session_id)
    # spawn() counts the process from its first step, which runs before this coroutine
    # yields: the slot changes hands with no await in between.
    slot.release()
    try:
        await supervisor.spawn(spec)
    except CapacityError as e:
        await ctx.store.set_session_status(sid, "failed", "rejected: all slots busy")
        ctx.metrics.error("capacity")
        log.warning("session rejected: {}", e)
        raise _at_capacity(str(e), e.retry_after_s) from None
    except RuntimeError as e:
        await ctx.store.set_session_status(sid, "failed", f"failed to start: {e}")
        ctx.metrics.error("spawn_failed")
        log.error("session process failed to start: {}", e)
        raise LaunchError(
            503, "session_start_failed", f"the session process failed to start (session {sid})"
        ) from None
    except BaseException:
        await ctx.store.set_session_status(sid, "failed", "failed to start: internal error")
        ctx.metrics.error("spawn_failed")
        raise
