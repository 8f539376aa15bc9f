"""What runs sessions on a machine: LLM server, smart-turn service, supervisor, spares, reports.

The same parts serve both roles. ``voxtutor serve`` without ``VOXTUTOR_NATS_URL`` (the
embedded default) runs them inside the API process (:func:`api.runtime.default_runtime`);
``voxtutor host`` runs them alone and takes its sessions from API replicas over NATS
(:class:`runtime.cluster.agent.HostAgent`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from loguru import logger

from config.settings import Settings
from contracts.session_spec import SessionSpec
from store import Store


@dataclass
class SessionRuntime:
    """The running parts of a session runtime.

    Attributes:
        supervisor: A ``runtime.supervisor.SessionSupervisor``.
        llm_base_url: The OpenAI-compatible URL (``…/v1``) of the LLM server its local-tier
            sessions use.
    """

    supervisor: Any
    llm_base_url: str


@asynccontextmanager
async def session_runtime(
    settings: Settings,
    store: Store,
    *,
    on_turn: Callable[[str, dict[str, Any]], None] | None = None,
    on_ended: Callable[[SessionSpec], Awaitable[object]] | None = None,
    host_id: str | None = None,
) -> AsyncIterator[SessionRuntime]:
    """Start everything sessions need on this machine; stop it on exit.

    Starts the llama.cpp server (shared by every session) unless ``settings.llm_base_url``
    points at one, and the smart-turn service (:mod:`services.turn_service`) unless
    ``settings.smart_turn_url`` does; a durable outbox for session writes
    (``$VOXTUTOR_HOME/store-outbox.sqlite3``); the supervisor with its warm spares; each
    persona's opening prompt is evaluated in the LLM server in the background
    (:func:`pipelines.local.warm_persona_prompts`); and a report worker
    (:mod:`runtime.report_jobs`) unless ``settings.reports`` is off. Report jobs are claimed
    from the store with a lease, so any number of processes may run one. The caller shuts
    the supervisor down before leaving (the outbox closes here).

    Args:
        settings: Process settings.
        store: An open store.
        on_turn: Called with (session id, turn dict) for each stored turn.
        on_ended: Awaited with the spec of each started session once its process exited.
        host_id: A session host's id: its outbox is ``store-outbox-<host_id>.sqlite3`` and
            its session logs go to ``logs/hosts/<host_id>/``, so hosts sharing a
            ``VOXTUTOR_HOME`` keep theirs apart (a host restarted with the same id applies
            what its predecessor left in the outbox). ``None``: the single-process server's
            ``store-outbox.sqlite3`` and ``logs/sessions/``.

    Raises:
        weights.registry.ModelNotInstalledError: the local models are not installed.
        services.llama_server.LLMServerError: the LLM server did not start.
    """
    from pipelines.local import local_llm, warm_persona_prompts
    from runtime.outbox import Outbox, store_writes
    from runtime.report_jobs import ReportWorker
    from runtime.supervisor import SessionSupervisor

    name = f"store-outbox-{host_id}.sqlite3" if host_id else "store-outbox.sqlite3"
    logs = settings.home / "logs" / ("hosts/" + host_id if host_id else "sessions")
    outbox = Outbox(settings.home / name, store_writes(store), settings.outbox_retry_s)
    outbox.start()
    try:
        async with local_llm(settings) as base_url, _turn_service(settings) as turn_url:
            supervisor = SessionSupervisor(
                store,
                max_sessions=settings.max_sessions,
                log_dir=logs,
                spares=spare_kinds(settings),
                on_turn=on_turn,
                on_ended=on_ended,
                turn_url=turn_url,
                outbox=outbox,
                memory_limit_mb=settings.session_memory_limit_mb,
            )
            supervisor.start_spare()  # every kind in spares
            openings = _persona_openings() if settings.llm_warm_up else {}
            tasks: list[asyncio.Task[Any]] = [
                asyncio.create_task(warm_persona_prompts(base_url, openings))
            ]
            if settings.reports:
                worker = ReportWorker(store, settings, base_url)
                tasks.append(asyncio.create_task(worker.run_forever()))
            try:
                yield SessionRuntime(supervisor=supervisor, llm_base_url=base_url)
            finally:
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        await outbox.close()


def _persona_openings() -> dict[str, list[dict[str, str]]]:
    """Every persona's opening at its default CEFR level (:func:`opening_messages`)."""
    from config.personas import list_personas, load_persona
    from pipelines.local import opening_messages

    return {pid: opening_messages(load_persona(pid)) for pid in list_personas()}


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
    """The warm spares a session runtime keeps (:data:`runtime.supervisor.SPARE_KINDS`).

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


def default_host_id() -> str:
    """``<hostname>-<6 hex>``, cut to the registry's 64 characters of ``[A-Za-z0-9_-]``."""
    import re
    import secrets
    import socket

    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:50] or "host"
    return f"{name}-{secrets.token_hex(3)}"


async def run_host(settings: Settings) -> int:
    """``voxtutor host``: run sessions for the API replicas on ``settings.nats_url``.

    Opens the store (``DATABASE_URL``: the session writes are applied here), starts the
    session runtime (:func:`session_runtime`) and registers a
    :class:`runtime.cluster.agent.HostAgent`. SIGTERM (or a ``voxtutor host --drain``
    request) drains: no new sessions, exit once the last one has ended. SIGINT, or a second
    SIGTERM, stops at once (the running sessions are ended). Returns the exit status.

    Raises:
        ValueError: ``settings.nats_url`` is not set.
        nats.errors.NoServersError: no NATS server answered.
    """
    import signal

    from runtime.cluster.agent import HostAgent
    from runtime.cluster.bus import connect
    from transports.daily import release_session_room

    if not settings.nats_url:
        raise ValueError("voxtutor host needs VOXTUTOR_NATS_URL")
    host_id = settings.host_id or default_host_id()
    nc = await connect(settings.nats_url, f"voxtutor-host-{host_id}")
    store = await Store.open(settings.store_url)
    loop = asyncio.get_running_loop()
    stop_now = asyncio.Event()
    try:
        async with session_runtime(
            settings,
            store,
            on_ended=partial(release_session_room, api_url=settings.daily_api_url),
            host_id=host_id,
        ) as sessions:
            agent = HostAgent(settings, sessions.supervisor, nc, host_id, sessions.llm_base_url)

            def on_term() -> None:
                if agent.draining:
                    stop_now.set()
                else:
                    asyncio.ensure_future(agent.drain())  # noqa: RUF006 (held by the loop)

            loop.add_signal_handler(signal.SIGTERM, on_term)
            loop.add_signal_handler(signal.SIGINT, stop_now.set)
            try:
                await agent.start()
                print(f"voxtutor host {host_id}: ready", flush=True)
                drained = asyncio.create_task(agent.run())
                stopped = asyncio.create_task(stop_now.wait())
                await asyncio.wait({drained, stopped}, return_when=asyncio.FIRST_COMPLETED)
                for task in (drained, stopped):
                    task.cancel()
            finally:
                await agent.close()
                await sessions.supervisor.shutdown()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    finally:
        await store.close()
        with contextlib.suppress(Exception):
            await nc.drain()
    logger.info(f"session host {host_id} stopped")
    return 0


async def request_drain(settings: Settings, host_id: str) -> dict[str, Any]:
    """Ask the running host ``host_id`` to drain; return its answer ``{host, active}``.

    Raises:
        LookupError: no host of that id is running.
        ValueError: ``settings.nats_url`` is not set, or a bad host id.
    """
    from nats.errors import NoRespondersError

    from runtime.cluster.bus import connect, decode, host_subject

    if not settings.nats_url:
        raise ValueError("draining a host needs VOXTUTOR_NATS_URL")
    nc = await connect(settings.nats_url, "voxtutor-cli")
    try:
        answer = await nc.request(host_subject(host_id, "drain"), b"{}", timeout=10)
    except NoRespondersError:
        raise LookupError(f"no session host {host_id!r} is running") from None
    finally:
        await nc.drain()
    data: dict[str, Any] = decode(answer.data).get("data") or {}
    return data
