"""Answering a phone call: who is calling, with which persona and tier, in which session.

The caller's number finds the learner (``learners.phone``). The dialled number's entry in
``phone_lines`` sets the tier and may set the persona; otherwise a known learner gets the menu
persona that speaks their target language. A caller the store does not know (or a withheld
number) chooses on the keypad (``phone_menu``: 1, 2, 3 …) and gets a guest learner record,
owned by the API key named :data:`GUEST_KEY_NAME`. Then the session is created, its process
spawned, and the call gets a one-use media-stream token valid for ``phone_stream_ttl_s``
seconds; if no stream has connected by then the session is ended. On an API replica of a
scaled-out deployment this state lives in NATS KV (:class:`PhoneCalls`), since the media
stream or a retried webhook may reach another replica.

Every refusal (all slots busy, quota used up, line misconfigured) is a short spoken message
before the carrier hangs up, never an HTTP error: the carrier would play its own error tone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, cast

from loguru import logger

from api.deps import AppContext
from api.errors import ApiError
from api.launch import LaunchError, LaunchRequest, check_tier, find_persona, launch
from config.personas import Persona
from config.settings import PhoneLine
from contracts.session_spec import Transport
from runtime.cluster import ephemeral
from runtime.cluster.ephemeral import Ephemeral
from runtime.protocol import SessionNotRunningError
from store import ConflictError, LearnerInfo, Store

GUEST_KEY_NAME = "phone-guests"
"""API key owning the guest learners created for unknown callers."""
GUEST_NAME = "Phone guest"
BUSY = "All our tutors are busy right now. Please call again in a few minutes. Goodbye."
QUOTA = "The monthly allowance of your plan is used up. Goodbye."
UNAVAILABLE = "Sorry, the tutor cannot take calls right now. Please try again later. Goodbye."
REFUSALS = {"at_capacity": BUSY, "local_at_capacity": BUSY, "quota_exceeded": QUOTA}
"""What a caller hears for each :class:`api.launch.LaunchError` code (else :data:`UNAVAILABLE`)."""
WITHHELD = "withheld:"
"""``phone`` prefix of the guest that callers withholding their number share, per line."""
_NUMBER = re.compile(r"^\+?[0-9]{4,20}$")
"""A caller id we can look up (E.164-like); "anonymous", "restricted" … are withheld numbers."""
NEVER_CONNECTED = "the media stream never connected"
ANSWERED_S = 600.0
"""At least this long a replayed webhook gets the same answer as the first, s."""
STARTING_S = 120.0
"""Longest a replica's "starting this call" mark holds off the others, s (a session is
ready within ``READY_TIMEOUT_S``, 90 s, or refused)."""
STARTING_POLL_S = 0.25
"""How often a webhook retried to another replica looks for the first one's answer, s."""
TOKEN_KIND, ANSWERED_KIND, STARTING_KIND = "phone-token", "phone-answered", "phone-starting"
"""Kinds of the shared entries (:func:`runtime.cluster.ephemeral.key`)."""


@dataclass(frozen=True)
class IncomingCall:
    """One call, as the carrier's webhook describes it.

    Attributes:
        carrier: ``twilio`` or ``telnyx``.
        call_id: Twilio ``CallSid``; Telnyx TeXML ``CallSid`` (its call control id).
        caller: The caller's number, or ``None`` if withheld.
        dialled: The number called (selects the ``phone_lines`` entry).
    """

    carrier: Transport
    call_id: str
    caller: str | None
    dialled: str

    @classmethod
    def from_params(cls, carrier: Transport, params: Mapping[str, str]) -> IncomingCall:
        """Read ``CallSid``, ``From`` and ``To`` of a TwiML/TeXML webhook.

        Raises:
            ValueError: ``CallSid`` is missing.
        """
        call_id = (params.get("CallSid") or "").strip()
        if not call_id:
            raise ValueError("the webhook has no CallSid")
        caller = (params.get("From") or "").strip()
        return cls(
            carrier=carrier,
            call_id=call_id,
            caller=caller if _NUMBER.match(caller) else None,
            dialled=(params.get("To") or "").strip(),
        )


@dataclass(frozen=True)
class Connect:
    """Connect the call's media stream to ``/phone/<carrier>/stream/<token>``."""

    token: str


@dataclass(frozen=True)
class Refuse:
    """Say ``message`` and hang up."""

    message: str


@dataclass(frozen=True)
class Menu:
    """Ask the caller to pick one of ``personas`` on the keypad (digit = index + 1)."""

    personas: tuple[Persona, ...]


Answer = Connect | Refuse | Menu


@dataclass(frozen=True)
class PendingStream:
    """A call whose session is ready and whose media stream has not connected yet.

    Attributes:
        carrier: ``twilio`` or ``telnyx``.
        call_id: The call the stream must belong to.
        session_id: The session started for it.
        phone_url: The session process's loopback websocket (``ready`` event), or
            ``nats:<session id>`` on a cluster replica (the media goes over NATS).
    """

    carrier: str
    call_id: str
    session_id: str
    phone_url: str


_STREAM_FIELDS = tuple(f.name for f in dataclasses.fields(PendingStream))


class PhoneCalls:
    """The server's phone state: media-stream tokens not used yet, and the guest key lock.

    In one process (the default) the state is this object's memory. On an API replica of a
    scaled-out deployment (``shared`` given) the tokens, answered calls and calls being
    started live in NATS KV (:mod:`runtime.cluster.ephemeral`), so the media stream or a
    retried webhook may reach any replica: a token is claimed once across all of them, and
    the timer of the replica that issued it ends the session only if no replica claimed it.

    Args:
        ttl_s: How long a token stays valid, seconds.
        shared: The deployment's ephemeral store, or ``None`` to keep the state in memory.
    """

    def __init__(self, ttl_s: float, shared: Ephemeral | None = None):
        self.ttl_s = ttl_s
        self.shared = shared
        self._pending: dict[str, tuple[PendingStream, float]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.guest_lock = asyncio.Lock()
        self.answered: dict[str, tuple[str, float]] = {}
        """Call id → (media-stream token, until when): a replayed webhook gets the same
        answer instead of a second session (in memory only; else in ``shared``)."""
        self.starting: dict[str, asyncio.Future[str | None]] = {}
        """Call id → the token its session start will give (``None``: refused); a webhook
        retried while the first one's session is still starting waits for it."""

    @property
    def answer_ttl_s(self) -> float:
        """How long a replayed webhook gets the same answer, s."""
        return max(self.ttl_s, ANSWERED_S)

    async def answered_token(self, call_id: str) -> str | None:
        """The token already issued for ``call_id`` (a webhook replayed within the TTL)."""
        if self.shared is not None:
            entry = await self.shared.get(ephemeral.key(ANSWERED_KIND, call_id))
            token = entry.get("token") if entry is not None else None
            return token if isinstance(token, str) else None
        now = time.monotonic()
        for cid in [c for c, (_, until) in self.answered.items() if until < now]:
            del self.answered[cid]
        entry_ = self.answered.get(call_id)
        return entry_[0] if entry_ is not None else None

    async def register(self, stream: PendingStream, ctx: AppContext) -> str:
        """Issue a one-use token for ``stream``; unused after ``ttl_s`` → the session is ended."""
        token = secrets.token_urlsafe(24)
        if self.shared is not None:
            await self.shared.put(
                ephemeral.key(TOKEN_KIND, token), dataclasses.asdict(stream), self.ttl_s
            )
            await self.shared.put(
                ephemeral.key(ANSWERED_KIND, stream.call_id), {"token": token}, self.answer_ttl_s
            )
        else:
            self._pending[token] = (stream, time.monotonic() + self.ttl_s)
            self.answered[stream.call_id] = (token, time.monotonic() + self.answer_ttl_s)
        loop = asyncio.get_running_loop()
        self._timers[token] = loop.call_later(self.ttl_s, self._expire, token, ctx)
        return token

    async def claim(self, token: str) -> PendingStream | None:
        """Take the call of ``token`` (once); ``None`` if unknown, used or expired."""
        timer = self._timers.pop(token, None)
        if timer is not None:
            timer.cancel()
        if self.shared is not None:
            # An expired token is left for the issuing replica's timer, which ends its session.
            return _stream(await self.shared.take(ephemeral.key(TOKEN_KIND, token)))
        entry = self._pending.pop(token, None)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    async def begin_start(self, call_id: str) -> bool:
        """Mark ``call_id``'s session as being started here; ``False`` if another replica is.

        Always ``True`` in memory (:attr:`starting` de-duplicates within this process).
        """
        if self.shared is None:
            return True
        return await self.shared.create(
            ephemeral.key(STARTING_KIND, call_id), {"since": time.time()}, STARTING_S
        )

    async def end_start(self, call_id: str) -> None:
        """Clear :meth:`begin_start`'s mark (after the token, if any, was registered)."""
        if self.shared is not None:
            try:
                await self.shared.delete(ephemeral.key(STARTING_KIND, call_id))
            except Exception as e:  # the mark expires by itself after STARTING_S
                logger.bind(call_id=call_id).warning("phone start mark not cleared: {!r}", e)

    async def started_elsewhere(self, call_id: str) -> str | None:
        """Wait for the replica starting ``call_id``'s session; its token, ``None`` if refused.

        Polls every :data:`STARTING_POLL_S` while that replica's mark lives (at most
        :data:`STARTING_S`).
        """
        if self.shared is None:
            return await self.answered_token(call_id)
        mark = ephemeral.key(STARTING_KIND, call_id)
        while (token := await self.answered_token(call_id)) is None:
            if await self.shared.get(mark) is None:
                return await self.answered_token(call_id)  # registered just before it ended
            await asyncio.sleep(STARTING_POLL_S)
        return token

    def _expire(self, token: str, ctx: AppContext) -> None:
        self._timers.pop(token, None)
        if self.shared is not None:
            self._spawn_task(self._expire_shared(token, ctx))
            return
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        self._spawn_task(end_session(ctx, entry[0].session_id, NEVER_CONNECTED))

    async def _expire_shared(self, token: str, ctx: AppContext) -> None:
        """End the token's session unless a replica claimed it (whoever takes it, once)."""
        assert self.shared is not None
        try:
            taken = await self.shared.take(ephemeral.key(TOKEN_KIND, token), expired_too=True)
        except Exception as e:
            logger.warning("phone token expiry not checked: {!r}", e)
            return
        if (stream := _stream(taken)) is not None:
            await end_session(ctx, stream.session_id, NEVER_CONNECTED)

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _stream(value: dict[str, Any] | None) -> PendingStream | None:
    """A :class:`PendingStream` back from its stored JSON; ``None`` for none or a bad one."""
    if value is None:
        return None
    try:
        return PendingStream(**{f: str(value[f]) for f in _STREAM_FIELDS})
    except KeyError:
        return None


def shared_state(app_state: object) -> Ephemeral | None:
    """The deployment's ephemeral store when the app runs as a cluster replica, else ``None``.

    A cluster replica's supervisor (:class:`runtime.cluster.dispatch.ClusterSupervisor`)
    has the ``ephemeral`` bucket; the single-process runtime has none and needs no NATS.
    """
    supervisor = getattr(getattr(app_state, "ctx", None), "supervisor", None)
    kv = getattr(supervisor, "ephemeral", None)
    if kv is None:
        return None
    return Ephemeral(kv)


def phone_calls(app_state: object, ttl_s: float) -> PhoneCalls:
    """The app's :class:`PhoneCalls` (created on first use, kept on ``app.state``)."""
    calls = getattr(app_state, "phone_calls", None)
    if calls is None:
        calls = PhoneCalls(ttl_s, shared_state(app_state))
        setattr(app_state, "phone_calls", calls)  # noqa: B010
    return cast(PhoneCalls, calls)


async def end_session(ctx: AppContext, session_id: str, reason: str) -> None:
    """Ask a phone session's process to end with ``reason`` (nothing if it is gone)."""
    logger.bind(session_id=session_id).info("ending phone session: {}", reason)
    if ctx.supervisor is not None:
        with contextlib.suppress(SessionNotRunningError):
            await ctx.supervisor.end(session_id, reason)


def menu_personas(personas: list[str]) -> tuple[Persona, ...]:
    """The keypad menu's personas, in digit order.

    Raises:
        ApiError: 422 ``unknown_persona`` for an id in ``phone_menu`` that does not exist.
    """
    return tuple(find_persona(p) for p in personas)


async def answer_call(
    ctx: AppContext, calls: PhoneCalls, call: IncomingCall, digit: str | None = None
) -> Answer:
    """Decide what the call gets: a media stream, the menu, or a spoken refusal.

    Args:
        ctx: The app context (store, supervisor, settings, metrics).
        calls: Where the media-stream token is registered.
        call: The incoming call.
        digit: The key pressed in the menu (``Digits``), or ``None`` on the first webhook.
    """
    log = logger.bind(call_id=call.call_id)
    if (token := await calls.answered_token(call.call_id)) is not None:
        # A replayed (or retried) webhook of a call already answered: the same answer, no
        # second session (the token still works only once).
        log.info("{} webhook for an answered call: same answer", call.carrier)
        return Connect(token)
    if (starting := calls.starting.get(call.call_id)) is not None:
        # Retried while the first webhook's session is still starting: wait for that one.
        token = await asyncio.shield(starting)
        return Connect(token) if token is not None else Refuse(UNAVAILABLE)
    settings = ctx.settings
    line = settings.phone_lines.get(call.dialled) or PhoneLine()
    try:
        menu = menu_personas(settings.phone_menu)
        if digit is not None:
            if not (digit.isdigit() and 1 <= int(digit) <= len(menu)):
                return Menu(menu)
            persona = menu[int(digit) - 1]
        else:
            learner = await ctx.store.find_learner_by_phone(call.caller) if call.caller else None
            chosen = line.persona or persona_for(learner, menu)
            if chosen is None:
                return Menu(menu)
            persona = find_persona(chosen)
        tier = line.tier or settings.phone_default_tier
        check_tier(tier)
    except ApiError as e:
        log.error("phone line {} is misconfigured: {}", call.dialled, e.message)
        return Refuse(UNAVAILABLE)
    started: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    calls.starting[call.call_id] = started
    answer: Answer = Refuse(UNAVAILABLE)
    try:
        if not await calls.begin_start(call.call_id):
            # Retried to this replica while another one starts the session: its answer.
            log.info("{} webhook for a call another replica is answering", call.carrier)
            token = await calls.started_elsewhere(call.call_id)
            answer = Connect(token) if token is not None else Refuse(UNAVAILABLE)
            return answer
        try:
            learner = await caller_learner(ctx.store, calls, call, persona)
            answer = await _start(ctx, calls, call, learner, persona, tier)
        finally:
            await calls.end_start(call.call_id)
    finally:
        started.set_result(answer.token if isinstance(answer, Connect) else None)
        calls.starting.pop(call.call_id, None)
    return answer


def spoken_name(learner: LearnerInfo) -> str | None:
    """The name the tutor calls a caller by: the learner's, ``None`` for a guest."""
    return None if learner.name == GUEST_NAME else learner.name


def persona_for(learner: LearnerInfo | None, menu: tuple[Persona, ...]) -> str | None:
    """The menu persona teaching ``learner``'s target language; ``None`` if none or no learner."""
    if learner is None:
        return None
    return next((p.id for p in menu if p.language == learner.target_language), None)


async def caller_learner(
    store: Store, calls: PhoneCalls, call: IncomingCall, persona: Persona
) -> LearnerInfo:
    """The caller's learner record; a new guest learner for an unknown number.

    Callers who withhold their number share one guest per dialled line (its ``phone`` is
    ``withheld:<line>``), so withholding it does not give a fresh quota on every call.
    """
    number = call.caller or f"{WITHHELD}{call.dialled}"[:32]
    if known := await store.find_learner_by_phone(number):
        return known
    async with calls.guest_lock:
        keys = await store.list_api_keys(include_revoked=False)
        owner = next((k.id for k in keys if k.name == GUEST_KEY_NAME), None)
        if owner is None:
            owner = (await store.create_api_key(GUEST_KEY_NAME))[0].id
        try:
            guest = await store.create_learner(
                owner, GUEST_NAME, persona.language, persona.cefr_level, phone=number
            )
        except ConflictError:  # the same number was registered meanwhile
            found = await store.find_learner_by_phone(number)
            if found is None:
                raise
            return found
    logger.bind(call_id=call.call_id).info("guest learner {} created for a caller", guest.id)
    return guest


async def _start(
    ctx: AppContext,
    calls: PhoneCalls,
    call: IncomingCall,
    learner: LearnerInfo,
    persona: Persona,
    tier: str,
) -> Answer:
    """Start the call's session (:func:`api.launch.launch`), register the media-stream token."""
    ready_info = getattr(ctx.supervisor, "ready_info", None)
    if ready_info is None:
        return Refuse(UNAVAILABLE)
    request = LaunchRequest(
        learner=learner,
        persona=persona,
        tier=tier,
        by_line=True,  # the operator's line chose the tier
        remember=not (learner.phone or "").startswith(WITHHELD),
        transport=call.carrier,
        learner_name=spoken_name,
    )
    log = logger.bind(call_id=call.call_id)
    try:
        started = await launch(ctx, request)
    except LaunchError as e:
        log.warning("{} call refused: {} ({})", call.carrier, e.code, e.message)
        return Refuse(REFUSALS.get(e.code, UNAVAILABLE))
    info = started.session
    log = log.bind(session_id=info.id)
    phone_url = ready_info(info.id).get("phone_url")
    if not phone_url:
        await end_session(ctx, info.id, "the session process serves no phone socket")
        return Refuse(UNAVAILABLE)
    stream = PendingStream(call.carrier, call.call_id, info.id, phone_url)
    try:
        token = await calls.register(stream, ctx)
    except Exception:  # NATS unreachable: the call cannot be connected, end its session
        log.exception("{} call's media-stream token not registered", call.carrier)
        await end_session(ctx, info.id, "the call's media-stream token was not registered")
        return Refuse(UNAVAILABLE)
    log.info("{} call answered: persona={} tier={}", call.carrier, persona.id, tier)
    return Connect(token)
