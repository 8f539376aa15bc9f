"""Entry point of one session process: ``python -m runtime.session_process --stdin``.

The server writes ``{"op": "start", "spec": {...}}`` as the first line on stdin (a spec on
the command line, ``'<SessionSpec JSON>'``, is still read, for running one by hand).

With ``--spare=local`` (or ``cloud``, ``phone``) instead of a spec, the process does the imports
(for ``local`` also loads the local tier's Whisper and Piper; ``phone`` leaves out the browser
transports) and waits for a
``{"op": "start", "spec": {...}}`` line, so a session can start without paying for them.

Loads the persona's services (models load here, once per session), reports ``ready``, then
waits for the browser's SDP offer relayed by the server. The offer creates the SmallWebRTC
connection and the pipeline starts (a ``daily`` session's bot instead joins its Daily room with
the meeting token in the spec: :func:`transports.daily.daily_bot_transport`); each turn goes
to the server's store when it completes (:mod:`runtime.store_relay`: the process holds no
database connection), so a crash loses nothing already said. An ``end``
request makes the bot say goodbye first. A speech-to-speech tier (``realtime``) has no services
to load: its session is built by :mod:`runtime.realtime_process`.
See :mod:`runtime.protocol` for the messages.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from contracts.session_spec import SessionSpec
from runtime.memory_limit import apply_memory_limit

if TYPE_CHECKING:
    from config.personas import Persona
    from config.settings import Settings
    from contracts.writer import SessionWriter
    from pipelines.review import ReviewStep
    from processors.failover.groups import OnSwitch
    from transports.phone import PhoneEndpoint


MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest control line read (as ``runtime.supervisor.MAX_LINE_BYTES``); longer ones are
dropped with a warning, and the next line is read."""


class _Channel:
    """JSON lines on stdin/stdout (stdout carries nothing else: logs go to stderr)."""

    def __init__(self) -> None:
        self._out = sys.stdout
        self._reader: asyncio.StreamReader | None = None

    def send(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message) + "\n")
        self._out.flush()

    async def next(self) -> dict[str, Any] | None:
        """Return the next request, or ``None`` once stdin is closed."""
        if self._reader is None:
            loop = asyncio.get_running_loop()
            self._reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
            protocol = asyncio.StreamReaderProtocol(self._reader)
            await loop.connect_read_pipe(lambda: protocol, sys.stdin)
        while True:
            try:
                line = await self._reader.readline()
            except ValueError:  # over MAX_LINE_BYTES: dropped, the channel reads on
                logger.warning(f"ignoring a control line over {MAX_LINE_BYTES} bytes")
                continue
            if not line:
                return None
            try:
                request: dict[str, Any] = json.loads(line)
                return request
            except json.JSONDecodeError:
                logger.warning(f"ignoring a malformed control line: {line[:80]!r}")

    async def requests(self) -> Any:
        while (request := await self.next()) is not None:
            yield request


async def run_spare(kind: str = "local") -> int:
    """Import (and for ``kind="local"`` load the local models), then wait for a spec.

    A spare process makes spawning a session cost only the persona-specific rest (see
    :func:`pipelines.local.preload`). A ``cloud`` spare loads no local model: a cloud tier's
    local backups load only if a failover reaches them. A ``phone`` spare is a ``cloud`` one
    without the WebRTC and Daily transports; a ``cloud`` spare imports daily-python only when
    ``DAILY_API_KEY`` is set.
    """
    from config.settings import get_settings
    from transports.daily import daily_api_key

    channel = _Channel()
    if kind == "local":
        from pipelines.local import preload

        preload(get_settings())
    # Import what run() imports, so the session pays for none of it; a phone spare leaves
    # out the browser transports (aiortc, PyAV, daily-python: ~45 MB a call would carry).
    # daily-python (~9 MB resident) only where Daily rooms can be made at all: the server
    # refuses a Daily session when DAILY_API_KEY is unset, and the spare has its env.
    if kind != "phone":
        if daily_api_key() is not None:
            import pipecat.transports.daily.transport  # noqa: F401  # daily-python, ~0.5 s
        import pipecat.transports.smallwebrtc.request_handler  # noqa: F401
        import pipecat.transports.smallwebrtc.transport  # noqa: F401
    import pipecat.workers.runner  # noqa: F401

    import pipelines.session  # noqa: F401
    import pipelines.tiers  # noqa: F401  # and the provider builders (pipelines.providers)

    if kind != "cloud":  # calls start from phone spares, or local ones (uvicorn, ~2.6 MB)
        import transports.phone  # noqa: F401

    channel.send({"event": "spare"})
    request = await channel.next()
    if request is None or request.get("op") != "start":
        return 0  # the server went away or retired the spare
    spec = SessionSpec(**request["spec"])
    logger.configure(extra={"session_id": spec.session_id})
    return await run(spec, channel)


async def run_from_stdin() -> int:
    """Read ``{"op": "start", "spec": {...}}`` from stdin, then run that session."""
    channel = _Channel()
    request = await channel.next()
    if request is None or request.get("op") != "start":
        return 0
    spec = SessionSpec(**request["spec"])
    logger.configure(extra={"session_id": spec.session_id})
    return await run(spec, channel)


async def run(spec: SessionSpec, channel: _Channel | None = None) -> int:
    """Run one session to its end; return the process exit status (0 on a normal end)."""
    from pipecat.transports.base_transport import BaseTransport
    from pipecat.workers.runner import WorkerRunner

    from config.personas import load_persona
    from config.settings import get_settings
    from config.tiers import get_tier
    from contracts.assessment import Assessment
    from contracts.turns import TurnRecord, learner_turn_index
    from observers.usage_meter import usage_observer
    from pipelines.assessment import ExaminerStep, tutoring_step
    from pipelines.local import opening_messages, warm_persona_prompts
    from pipelines.memory import LearnerMemory, examiner_opening, memory_messages, persona_for
    from pipelines.quota import SessionQuota
    from pipelines.session import SessionPipeline, build_session
    from pipelines.tiers import build_tier_services
    from processors.assessment import AssessmentProcessor
    from runtime.realtime_process import build_realtime_session_in_process, is_speech_to_speech
    from runtime.store_relay import StoreRelay
    from services.assessment.dictionary import DICTIONARIES, load_dictionary
    from services.assessment.json_chat import JsonChat

    channel = channel or _Channel()
    settings = get_settings()
    if spec.turn_url:
        settings = settings.model_copy(update={"smart_turn_url": spec.turn_url})
    memory = LearnerMemory.from_json(spec.memory)
    base_persona = load_persona(spec.persona)
    # Writes go to the server, which stores them (runtime.store_relay).
    store = StoreRelay(channel.send)
    drill = review_drill(spec, base_persona, memory, store) if spec.mode == "review" else None
    realtime = is_speech_to_speech(spec.tier)
    opening = drill.opening(memory.name if memory else None) if drill else None
    # A speech-to-speech model gets its greeting as an instruction ("say exactly …"): it gets
    # the persona's own, with no learner text in it, and no learner record.
    persona = base_persona if realtime else persona_for(base_persona, memory, opening)
    record = memory_messages(memory)
    # A speech-to-speech tier has no STT, LLM and TTS: runtime.realtime_process builds it.
    services = (
        None
        if realtime
        else build_tier_services(
            spec.tier,
            persona,
            settings,
            local_base_url=spec.llm_base_url,
            level=spec.cefr_level,
            on_switch=provider_switch_recorder(store, spec.session_id),
        )
    )
    # Only a browser session imports the WebRTC stack (aiortc, PyAV: ~40 MB).
    handler: Any = _webrtc_handler() if spec.transport == "webrtc" else None
    runner = WorkerRunner(handle_sigint=False)
    started: asyncio.Event = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()
    session_box: dict[str, Any] = {}

    step: Any = tutoring_step(
        persona,
        JsonChat(spec.llm_base_url),
        spec.cefr_level,
        first_question=examiner_opening(base_persona, memory)[1] or base_persona.greeting,
        settings=settings,
    )
    if isinstance(step, ExaminerStep) and memory is not None:
        step.asked = list(memory.acs_asked)
        step.weak = list(memory.acs_weak_tasks)
    if drill is not None:
        drill.inner = step
        step = drill
    if (
        services is not None
        and spec.llm_base_url
        and get_tier(spec.tier).llm[0].provider == "local"
        and settings.llm_warm_up
    ):
        # The server warmed each persona at its default level; this session's level may
        # differ, and the server's cache may have let it go. Cheap when it is still there.
        messages = opening_messages(persona, spec.cefr_level, record)
        warming = asyncio.create_task(
            warm_persona_prompts(spec.llm_base_url, {spec.session_id: messages})
        )
        tasks.add(warming)
        warming.add_done_callback(tasks.discard)
    if persona.role == "tutor" and persona.language in DICTIONARIES:
        # Load the tutor's dictionary while the learner connects, not on the first turn.
        preload = asyncio.create_task(asyncio.to_thread(load_dictionary, persona.language))
        tasks.add(preload)
        preload.add_done_callback(tasks.discard)

    async def on_assessment(assessment: Assessment) -> None:
        session = session_box.get("session")
        turns = session.recorder.turns if session is not None else []
        index = learner_turn_index(turns, assessment.text)
        await store.add_assessment(spec.session_id, assessment.to_dict(), index)
        if session is not None and "end_reason" not in session_box:
            # The learner's app shows it inline, live. Sent by the RTVI processor itself (an
            # urgent transport message), never queued into the worker: frames queued behind
            # the goodbye's EndFrame would keep the ended pipeline from finishing.
            from pipelines.notices import assessment_notices

            for note in assessment_notices(assessment, index):
                try:
                    await session.worker.rtvi.send_server_message(note)
                except Exception as e:  # a notice must never break the session
                    logger.warning(f"assessment notice not sent: {e!r}")

    async def on_turn(turn: TurnRecord) -> None:
        await store.add_turn(spec.session_id, turn)
        if turn.role == "learner" and turn.index <= 1:
            await store.set_session_status(spec.session_id, "active")
        if (quota := session_box.get("quota")) is not None:
            await quota.on_turn(turn)

    async def on_quota_limit(name: str) -> None:
        session_box["end_reason"] = f"quota reached: {name}"

    async def on_connection(connection: Any, **phone: Any) -> None:
        # A SmallWebRTC connection, or a phone call's ready transport (transports.phone).
        transport = (
            connection if isinstance(connection, BaseTransport) else _webrtc_transport(connection)
        )
        session: SessionPipeline
        if services is None:
            session = build_realtime_session_in_process(
                spec, persona, settings, store, transport, on_turn=on_turn, **phone
            )
        else:
            session = build_session(
                persona,
                stt=services.stt,
                llm=services.llm,
                tts=services.tts,
                transport=transport,
                settings=settings,
                idle_timeout_secs=spec.idle_timeout_s,
                on_turn=on_turn,
                observers=[usage_observer(store, spec.session_id, services)],
                assessment=(AssessmentProcessor(step, on_assessment) if step is not None else None),
                record=record,
                **phone,
            )
        session_box["session"] = session
        session_box["quota"] = SessionQuota(
            exchanges=spec.exchange_limit,
            tts_characters=spec.tts_chars_left,
            language=persona.language,
            farewell=persona.farewell_text,
            queue_frames=session.worker.queue_frames,
            on_limit=on_quota_limit,
            say_goodbye=session.say_goodbye,
        )

        @transport.event_handler("on_client_connected")
        async def _connected(_t: Any, _c: Any) -> None:
            await session.greet()
            release_freed_heap()
            if spec.max_duration_s:
                limit = asyncio.create_task(_end_at_max_length(spec.max_duration_s))
                tasks.add(limit)
                limit.add_done_callback(tasks.discard)

        async def _end_at_max_length(seconds: float) -> None:
            await asyncio.sleep(seconds)
            session_box.setdefault("end_reason", "maximum session length reached")
            await session.say_goodbye(persona.farewell_text)

        @session.worker.event_handler("on_idle_timeout")
        async def _idle(_w: Any) -> None:
            session_box.setdefault("end_reason", "idle timeout")

        @transport.event_handler("on_client_disconnected")
        async def _disconnected(_t: Any, _c: Any) -> None:
            session_box.setdefault("end_reason", "client disconnected")
            await session.worker.cancel()

        await runner.add_workers(session.worker)
        started.set()

    async def serve_requests() -> None:
        async for req in channel.requests():
            op, rid = req.get("op"), req.get("id")
            try:
                if op in ("offer", "ice") and handler is None:
                    raise ValueError(f"a {spec.transport} session takes no WebRTC {op}")
                if op == "offer":
                    from pipecat.transports.smallwebrtc.request_handler import (
                        SmallWebRTCRequest,
                    )

                    answer = await handler.handle_web_request(
                        SmallWebRTCRequest(
                            sdp=req["sdp"],
                            type=req.get("type", "offer"),
                            pc_id=req.get("pc_id"),
                            restart_pc=req.get("restart_pc"),
                        ),
                        on_connection,
                    )
                    channel.send({"event": "reply", "id": rid, "ok": True, "data": answer})
                elif op == "ice":
                    from pipecat.transports.smallwebrtc.request_handler import (
                        IceCandidate,
                        SmallWebRTCPatchRequest,
                    )

                    await handler.handle_patch_request(
                        SmallWebRTCPatchRequest(
                            pc_id=req["pc_id"],
                            candidates=[IceCandidate(**c) for c in req.get("candidates", [])],
                        )
                    )
                    channel.send({"event": "reply", "id": rid, "ok": True, "data": {}})
                elif op == "end":
                    session_box["end_reason"] = req.get("reason") or "ended"
                    channel.send({"event": "reply", "id": rid, "ok": True, "data": {}})
                    session = session_box.get("session")
                    if session is None:
                        break
                    await session.say_goodbye(persona.farewell_text)
                else:
                    raise ValueError(f"unknown op {op!r}")
            except Exception as e:  # a bad request must not kill the session
                logger.warning(f"request {op} failed: {e}")
                channel.send({"event": "reply", "id": rid, "ok": False, "error": str(e)})
        # stdin closed: the server is gone or wants us gone.
        started.set()

    requests_task = asyncio.create_task(serve_requests())
    tasks.add(requests_task)
    phone = await _phone_endpoint(spec, settings, persona, on_connection)
    if spec.transport == "daily":
        from transports.daily import daily_bot_transport, end_on_dialin_failure

        daily = daily_bot_transport(spec, persona.name, settings.daily_api_url)
        await on_connection(daily)

        async def end_call(reason: str) -> None:
            session_box.setdefault("end_reason", reason)
            await session_box["session"].worker.cancel()

        if spec.daily_call_id:  # a phone call that never reaches the room ends the session
            end_on_dialin_failure(daily, end_call)
    channel.send({"event": "ready", **({"phone_url": phone.url} if phone else {})})
    try:
        # A session nobody connects to must not hold its slot forever.
        await asyncio.wait_for(started.wait(), spec.idle_timeout_s)
    except TimeoutError:
        session_box["end_reason"] = "no client connected"
    if "session" in session_box:
        await runner.run()
        await session_box["session"].recorder.flush()
    reason = session_box.get("end_reason", "ended")
    await store.set_session_status(spec.session_id, "ended", reason)
    channel.send({"event": "ended", "reason": reason})
    requests_task.cancel()
    if handler is not None:
        await handler.close()
    if phone is not None:
        await phone.close()
    return 0


def review_drill(
    spec: SessionSpec, persona: Persona, memory: Any, store: SessionWriter
) -> ReviewStep:
    """A review session's drill of the due items in its memory; answers go to the store.

    The inner step (which grades the answers) is set once it is built.
    """
    from pipelines.review import ReviewStep

    async def on_review(item_id: int, right: bool, answer: str) -> None:
        await store.review_item(spec.session_id, item_id, right, answer)

    items = list(memory.review) if memory is not None else []
    return ReviewStep(persona, items, None, on_review)


def release_freed_heap() -> int:
    """Hand the heap memory that building the session freed back to the OS; 1 if any was.

    Building the pipeline (ONNX Runtime's Silero session above all: its graph optimizer's
    temporaries) leaves ~5 MB of freed chunks in glibc's heap, resident until reused.
    ``malloc_trim(0)`` (glibc) releases them; called once, as the session starts. Returns 0
    where there is no glibc. The symbol is looked up in the process itself (``CDLL(None)``,
    0.2 ms), not through ``ctypes.util.find_library``, which runs ``ldconfig`` (~5 ms on the
    event loop, just after the greeting is queued).
    """
    import ctypes

    try:
        return int(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return 0


def _webrtc_handler() -> Any:
    """Pipecat's SmallWebRTC request handler for the session's one peer connection."""
    from pipecat.transports.smallwebrtc.request_handler import (
        ConnectionMode,
        SmallWebRTCRequestHandler,
    )

    return SmallWebRTCRequestHandler(connection_mode=ConnectionMode.SINGLE)


def _webrtc_transport(connection: Any) -> Any:
    """The SmallWebRTC transport over the browser's peer connection (audio both ways)."""
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

    return SmallWebRTCTransport(
        webrtc_connection=connection,
        params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
    )


def provider_switch_recorder(store: SessionWriter, session_id: str) -> OnSwitch:
    """The ``on_switch`` of a session's failover groups: each switch becomes a session event.

    Each call stores one ``provider_switch`` row (:mod:`store.events`) with data ``{"role",
    "from", "to", "reason"}`` in its own transaction, so a crash later loses none.

    Args:
        store: The session process's store (its writes go to the server).
        session_id: The session the events belong to.
    """
    from contracts.events import PROVIDER_SWITCH

    async def on_switch(role: str, old: str, new: str, reason: str) -> None:
        data = {"role": role, "from": old, "to": new, "reason": reason}
        await store.add_session_event(session_id, PROVIDER_SWITCH, data)

    return on_switch


async def _phone_endpoint(
    spec: SessionSpec,
    settings: Settings,
    persona: Persona,
    on_connection: Callable[..., Awaitable[None]],
) -> PhoneEndpoint | None:
    """Serve a phone call's loopback socket (``twilio``/``telnyx``); ``None`` for others.

    The server relays the carrier's media stream to it (:mod:`transports.phone`).
    """
    if spec.transport not in ("twilio", "telnyx"):
        return None
    from pipelines.turn_taking import phone_turn_strategies
    from transports.phone import start_phone_endpoint

    strategies = phone_turn_strategies(persona, settings)
    return await start_phone_endpoint(spec.transport, strategies, settings, on_connection)


def main(argv: list[str] | None = None) -> int:
    """Run a session from the spec in argv, or (``--spare[=local|cloud|phone]``) wait for one.

    Logs go to stderr.
    """
    args = sys.argv[1:] if argv is None else argv
    spare_flags = ("--spare", "--spare=local", "--spare=cloud", "--spare=phone", "--stdin")
    if len(args) != 1 or (args[0].startswith("-") and args[0] not in spare_flags):
        usage = (
            "usage: python -m runtime.session_process "
            "('<SessionSpec JSON>' | --stdin | --spare[=KIND])"
        )
        print(usage, file=sys.stderr)
        return 2
    logger.remove()
    logger.add(sys.stderr, level="INFO", format="{time} {level} [{extra[session_id]}] {message}")
    if (limit := apply_memory_limit()) is not None:
        logger.bind(session_id="-").info("address space limited to {} MiB", limit >> 20)
    if args[0] == "--stdin":  # the server's way: the spec is the first line on stdin
        logger.configure(extra={"session_id": "starting"})
        return asyncio.run(run_from_stdin())
    if args[0].startswith("--spare"):
        kind = args[0].partition("=")[2] or "local"
        logger.configure(extra={"session_id": f"spare-{kind}"})
        return asyncio.run(run_spare(kind))
    spec = SessionSpec(**json.loads(args[0]))
    logger.configure(extra={"session_id": spec.session_id})
    return asyncio.run(run(spec))


if __name__ == "__main__":
    raise SystemExit(main())
