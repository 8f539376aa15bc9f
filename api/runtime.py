"""What the API needs from the session runtime, and the hook that provides it.

The API never runs a pipeline itself: a :class:`Supervisor` (``runtime.supervisor``) runs
each session in a process of its own. :func:`default_runtime` is where ``voxtutor serve``
gets the supervisor and the LLM server from; until it provides a supervisor, ``POST
/api/v1/sessions`` answers 503 ``session runtime not configured`` (it never pretends).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from loguru import logger

from api.metrics import Metrics
from config.settings import Settings
from contracts.session_spec import SessionSpec
from store import Store


class Supervisor(Protocol):
    """Runs session processes (the real one is ``runtime.supervisor``).

    It updates each session's status in the store itself (``ready``, ``active``, ``ended``,
    ``failed``).

    Attributes:
        max_sessions: Concurrent sessions it runs at most.
    """

    max_sessions: int

    @property
    def active_count(self) -> int:
        """Session processes currently running."""
        ...

    def active_tiers(self) -> list[str]:
        """The tier of each session counted in :attr:`active_count`."""
        ...

    async def spawn(self, spec: SessionSpec) -> None:
        """Start a session process; return when it is ready for an offer.

        The process counts in :attr:`active_count` from the coroutine's first step (before
        it first yields), so a caller may hand a slot over without a gap.

        Raises:
            runtime.protocol.CapacityError: All slots are taken.
            RuntimeError: The process failed to start (the session is then ``failed``).
        """
        ...

    async def offer(self, session_id: str, offer: dict) -> dict:
        """Forward an SDP offer; return the answer ``{"sdp", "type", "pc_id"}``.

        Raises:
            runtime.protocol.SessionNotRunningError: No live process.
            runtime.protocol.SessionRequestError: The process rejected it (bad SDP).
        """
        ...

    async def ice(self, session_id: str, patch: dict) -> None:
        """Forward trickled ICE candidates (same errors as :meth:`offer`)."""
        ...

    async def end(self, session_id: str, reason: str) -> None:
        """Ask the bot to say goodbye and the process to exit.

        Raises:
            runtime.protocol.SessionNotRunningError: No live process.
        """
        ...

    def is_running(self, session_id: str) -> bool:
        """Whether the session has a live process."""
        ...

    async def shutdown(self) -> None:
        """End every session and stop (at server shutdown)."""
        ...


class SlotReservation:
    """One session slot held by a launch until the supervisor counts its process.

    Args:
        slots: The pool it was taken from.
    """

    def __init__(self, slots: SessionSlots, local: bool = False):
        self._slots: SessionSlots | None = slots
        self.local = local
        """Whether the session will use the local LLM server."""

    def release(self) -> None:
        """Give the slot back (the first call; later calls do nothing)."""
        if self._slots is not None:
            self._slots.reserved -= 1
            self._slots.reserved_local -= self.local
            self._slots = None


class SessionSlots:
    """Session slots reserved by launches whose process the supervisor does not count yet.

    A launch awaits the store and the quota check before it spawns; without a reservation
    taken before those awaits, every concurrent request would pass the capacity check.

    Attributes:
        reserved: Slots held now.
        reserved_local: Of those, slots for sessions on the local LLM server.
    """

    def __init__(self) -> None:
        self.reserved = 0
        self.reserved_local = 0

    def local_sessions(self, supervisor: Supervisor) -> int:
        """Sessions on the local LLM server: running, starting and reserved."""
        return self.reserved_local + sum(map(uses_local_llm, supervisor.active_tiers()))

    def reserve(
        self, supervisor: Supervisor, *, local: bool = False, max_local: int | None = None
    ) -> SlotReservation | None:
        """Take a slot if running processes plus reservations leave one; else ``None``.

        Args:
            supervisor: Counts the running processes.
            local: The session will use the local LLM server.
            max_local: With ``local``, refuse too when this many sessions use that server.

        Synchronous: nothing can run between the check and the reservation.
        """
        if supervisor.active_count + self.reserved >= supervisor.max_sessions:
            return None
        if local and max_local is not None and self.local_sessions(supervisor) >= max_local:
            return None
        self.reserved += 1
        self.reserved_local += local
        return SlotReservation(self, local)


def uses_local_llm(tier: str) -> bool:
    """Whether ``tier``'s LLM is served first by the local llama.cpp server."""
    from config.tiers import get_tier

    chain = get_tier(tier).llm
    return bool(chain) and chain[0].provider == "local"


@dataclass
class Runtime:
    """The session runtime one app uses.

    Attributes:
        supervisor: Runs session processes; ``None`` → session creation answers 503.
        llm_base_url: OpenAI-compatible server of the local tier (``…/v1``); checked by
            ``/readyz`` and handed to each session process. ``None`` → session creation
            answers 503.
    """

    supervisor: Supervisor | None = None
    llm_base_url: str | None = None


RuntimeFactory = Callable[[Settings, Store, Metrics], AbstractAsyncContextManager[Runtime]]
"""Builds the runtime at app startup and tears it down at shutdown (an async context)."""


@asynccontextmanager
async def default_runtime(
    settings: Settings, store: Store, metrics: Metrics
) -> AsyncIterator[Runtime]:
    """The runtime of ``voxtutor serve``: the local LLM server and the session supervisor.

    Starts the llama.cpp server (shared by every session) unless ``settings.llm_base_url``
    points at one, and the smart-turn service (:mod:`services.turn_service`, one model for
    every session) unless ``settings.smart_turn_url`` does, marks sessions a previous server
    left live as failed (this process is the only one serving the store: run one worker),
    and runs sessions in their own processes with warm spares; a ``daily`` session's room
    is deleted once its process has exited. Each persona's opening prompt is evaluated in the
    LLM server in the background (:func:`pipelines.local.warm_persona_prompts`), so that no
    session's first turn waits for it. A report worker (:mod:`runtime.report_jobs`) writes
    each ended session's report unless ``settings.reports`` is off, and sessions of revoked
    keys are ended (:mod:`runtime.housekeeping`). Stops both services on exit; the app shuts
    the supervisor.

    Args:
        settings: Process settings.
        store: The app's open store.
        metrics: The app's metrics (fed each completed turn).

    Raises:
        weights.registry.ModelNotInstalledError: the local models are not installed.
        services.llama_server.LLMServerError: the LLM server did not start.
    """
    from pipelines.local import local_llm, warm_persona_prompts
    from runtime.housekeeping import housekeeping
    from runtime.outbox import Outbox, store_writes
    from runtime.report_jobs import ReportWorker
    from runtime.supervisor import SessionSupervisor
    from transports.daily import release_session_room

    stale = await store.fail_live_sessions("server restarted")
    if stale:
        logger.warning(f"marked {stale} session(s) left live by a previous server as failed")
    # Session writes the database cannot take now wait here (and survive a restart).
    outbox = Outbox(
        settings.home / "store-outbox.sqlite3", store_writes(store), settings.outbox_retry_s
    )
    outbox.start()
    async with local_llm(settings) as base_url, _turn_service(settings) as turn_url:
        supervisor = SessionSupervisor(
            store,
            max_sessions=settings.max_sessions,
            log_dir=settings.home / "logs" / "sessions",
            spares=spare_kinds(settings),
            on_turn=lambda _sid, turn: metrics.observe_turn(turn),
            on_ended=partial(release_session_room, api_url=settings.daily_api_url),
            turn_url=turn_url,
            outbox=outbox,
            memory_limit_mb=settings.session_memory_limit_mb,
        )
        supervisor.start_spare()  # every kind in spares
        # Each persona's prompt is evaluated once now, so no session's first turn pays for it.
        openings = _persona_openings() if settings.llm_warm_up else {}
        warming = asyncio.create_task(warm_persona_prompts(base_url, openings))
        # Reports of ended sessions (and of those a previous server left unwritten).
        reports = (
            asyncio.create_task(ReportWorker(store, settings, base_url).run_forever())
            if settings.reports
            else None
        )
        revocations = asyncio.create_task(
            housekeeping(
                store,
                supervisor,
                settings.revocation_poll_s,
                settings.transcript_retention_days,
            )
        )
        try:
            yield Runtime(supervisor=supervisor, llm_base_url=base_url)
        finally:
            for task in (warming, reports, revocations):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await outbox.close()


def _persona_openings() -> dict[str, list[dict[str, str]]]:
    """Every persona's opening at its default CEFR level (:func:`opening_messages`)."""
    from config.personas import list_personas, load_persona
    from pipelines.local import opening_messages

    return {pid: opening_messages(load_persona(pid)) for pid in list_personas()}


def known_tiers() -> tuple[str, ...]:
    """The tiers in ``config/tiers.yaml``, in file order."""
    from config.tiers import load_tiers

    return tuple(load_tiers())


@asynccontextmanager
async def _turn_service(settings: Settings) -> AsyncIterator[str]:
    """Yield the smart-turn URL sessions use: ``smart_turn_url``, or a started service's."""
    if settings.smart_turn_url:
        yield settings.smart_turn_url
        return
    from services.turn_service import TurnService

    async with TurnService() as service:
        logger.info(f"smart-turn service on {service.url}")
        yield service.url


def spare_kinds(settings: Settings | None = None) -> tuple[str, ...]:
    """The warm spares the server keeps (:data:`runtime.supervisor.SPARE_KINDS`).

    ``local`` always; ``cloud`` if a cloud tier is usable; ``phone`` if, as well, Twilio or
    Telnyx calls can arrive (their webhook secret is in ``settings``). A cloud spare
    (imports only, ~150 MB idle) is kept only where some cloud tier has every primary key
    set: on an offline machine it would never be used.
    """
    from config.tiers import load_tiers
    from runtime.supervisor import spare_kind

    tiers = load_tiers()
    usable_cloud = any(spare_kind(n) == "cloud" and not t.missing_env() for n, t in tiers.items())
    if not usable_cloud:
        return ("local",)
    phone = settings is not None and bool(settings.twilio_auth_token or settings.telnyx_public_key)
    return ("local", "cloud", "phone") if phone else ("local", "cloud")


def missing_env(tier: str) -> list[str]:
    """The environment variables ``tier``'s primary providers need that are unset.

    Names only, never values; empty for an unknown tier (callers check the name first).
    """
    from config.tiers import load_tiers

    found = load_tiers().get(tier)
    return found.missing_env() if found is not None else []
