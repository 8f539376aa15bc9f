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
from runtime.cluster.host import spare_kinds as spare_kinds  # re-exported: callers import it here
from store import Store


class Supervisor(Protocol):
    """Runs session processes (the real one is ``runtime.supervisor``).

    It updates each session's status in the store itself (``ready``, ``active``, ``ended``,
    ``failed``).

    """

    @property
    def max_sessions(self) -> int:
        """Concurrent sessions it runs at most."""
        ...

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
    """The runtime of ``voxtutor serve``: sessions here, or on hosts over NATS.

    With ``settings.nats_url`` set this process is one API replica of a scaled-out
    deployment (:func:`cluster_runtime`). Without it (the embedded default, no broker) it
    runs the sessions itself (:func:`runtime.cluster.host.session_runtime`: the shared
    llama.cpp server and smart-turn service, warm spares, one process per session, the
    report worker), marks sessions a previous server left live as failed (this process is
    the only one serving the store: run one worker), deletes a ``daily`` session's room once
    its process has exited, and ends sessions of revoked keys (:mod:`runtime.housekeeping`).
    The app shuts the supervisor.

    Args:
        settings: Process settings.
        store: The app's open store.
        metrics: The app's metrics (fed each completed turn).

    Raises:
        weights.registry.ModelNotInstalledError: the local models are not installed.
        services.llama_server.LLMServerError: the LLM server did not start.
        nats.errors.NoServersError: ``nats_url`` is set and no NATS server answered.
    """
    if settings.nats_url:
        async with cluster_runtime(settings, store, metrics) as rt:
            yield rt
        return
    from runtime.cluster.host import session_runtime
    from transports.daily import release_session_room

    stale = await store.fail_live_sessions("server restarted")
    if stale:
        logger.warning(f"marked {stale} session(s) left live by a previous server as failed")
    async with session_runtime(
        settings,
        store,
        on_turn=lambda _sid, turn: metrics.observe_turn(turn),
        on_ended=partial(release_session_room, api_url=settings.daily_api_url),
    ) as sessions:
        async with _housekeeping(settings, store, sessions.supervisor):
            yield Runtime(supervisor=sessions.supervisor, llm_base_url=sessions.llm_base_url)


@asynccontextmanager
async def cluster_runtime(
    settings: Settings, store: Store, metrics: Metrics
) -> AsyncIterator[Runtime]:
    """The runtime of an API replica: sessions run on ``voxtutor host`` processes.

    A :class:`runtime.cluster.dispatch.ClusterSupervisor` on ``settings.nats_url`` starts
    each session on the least-loaded registered host and relays its signalling; it marks the
    sessions of a host that left the registry ``failed``. ``/metrics`` gets each host's
    active sessions and free slots. The host that ran a ``daily`` session deletes its room
    once the process has exited. No LLM server runs here (each host has its own):
    ``llm_base_url`` is :data:`runtime.cluster.dispatch.HOST_LLM`, which hosts replace.

    Raises:
        ValueError: ``settings.limits_url`` is not set (rate counters must be shared).
        nats.errors.NoServersError: no NATS server answered.
    """
    from runtime.cluster.dispatch import HOST_LLM, ClusterSupervisor

    if not settings.limits_url:
        # Per-replica counters would let each replica grant the whole limit again.
        raise ValueError(
            "an API replica (VOXTUTOR_NATS_URL set) needs shared rate counters: set "
            "VOXTUTOR_LIMITS_URL (e.g. async+redis://127.0.0.1:6379)"
        )
    supervisor = ClusterSupervisor(settings, store)
    await supervisor.start()
    metrics.track_hosts(supervisor.hosts)
    try:
        async with _housekeeping(settings, store, supervisor):
            yield Runtime(supervisor=supervisor, llm_base_url=HOST_LLM)
    finally:
        await supervisor.close()


@asynccontextmanager
async def _housekeeping(
    settings: Settings, store: Store, supervisor: object
) -> AsyncIterator[None]:
    """Run :func:`runtime.housekeeping.housekeeping` for the context's lifetime."""
    from runtime.housekeeping import housekeeping

    task = asyncio.create_task(
        housekeeping(
            store,
            supervisor,  # type: ignore[arg-type]
            settings.revocation_poll_s,
            settings.transcript_retention_days,
        )
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def known_tiers() -> tuple[str, ...]:
    """The tiers in ``config/tiers.yaml``, in file order."""
    from config.tiers import load_tiers

    return tuple(load_tiers())


def missing_env(tier: str) -> list[str]:
    """The environment variables ``tier``'s primary providers need that are unset.

    Names only, never values; empty for an unknown tier (callers check the name first).
    """
    from config.tiers import load_tiers

    found = load_tiers().get(tier)
    return found.missing_env() if found is not None else []
