"""One benchmark phone call's session process: Twilio media stream in, cloud-style fakes.

Run by ``bench/phone.py`` (one process per call, as the server runs them):
``python -m bench.phone_session '<json>'``. The JSON gives the provider endpoints of the fakes
(``bench/fake_providers.py``), the stack (``bench.capacity_session.STACKS``) and a timeout.

The process does what ``runtime.session_process`` does for a ``twilio`` session: it serves the
call's loopback websocket (:func:`transports.phone.start_phone_endpoint`: Pipecat's
``FastAPIWebsocketTransport`` with ``TwilioFrameSerializer``, 8 kHz μ-law on the wire), builds
the production pipeline (``pipelines.session.build_session`` with the phone turn strategies)
when the stream's ``start`` arrives, greets the caller once connected and ends when the
caller hangs up. Unlike the worker it builds only the stack's primary services (the tiers'
``local`` backups would load Whisper and Piper) and keeps no store.

Prints two JSON lines on stdout: ``{"event": "ready", "phone_url": ...}`` once the socket
serves, then the measurements when the call has ended:
``{"turns", "latency_ms", "rss_mb", "cpu_s", "wall_s"}``. ``cpu_s`` and ``wall_s``
count from the caller's connection to the end of the pipeline (imports and setup excluded);
``rss_mb`` is the peak resident set of the process (``bench.phone`` samples its PSS from
outside: reading ``smaps_rollup`` walks the page tables, which in the call's own event loop
cost ~0.5 % of a core and stalled it);
``latency_ms`` is the median voice-to-voice latency the session's turn recorder measured
(Silero's end of speech → first bot audio out of the pipeline).
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import sys
import time
from typing import Any

from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from bench.capacity_session import STACKS, bench_settings
from config.personas import load_persona
from pipelines.providers import build_link
from pipelines.session import SessionPipeline, build_session
from pipelines.turn_taking import phone_turn_strategies
from transports.phone import start_phone_endpoint


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(cfg: dict[str, Any], ready: Any = print) -> dict[str, Any]:
    """Serve one call as configured; return the measurements (see the module docstring).

    Args:
        cfg: ``home``, ``stack``, the fakes' endpoints, optional ``timeout_s`` (default 300).
        ready: Called with the ``ready`` JSON line once the phone socket serves.

    Raises:
        TimeoutError: No caller connected, or the call outlasted ``timeout_s``.
    """
    settings = bench_settings(
        cfg,
        twilio_account_sid=None,  # no REST hang-up: the call ends when the stream closes
        twilio_auth_token=None,
    )
    persona = load_persona("aviation-examiner")
    services = {
        role: build_link(role, link, persona, settings)  # type: ignore[arg-type]
        for role, link in STACKS[cfg["stack"]].items()
    }
    timeout_s = float(cfg.get("timeout_s", 300))
    runner = WorkerRunner(handle_sigint=False)
    built: asyncio.Event = asyncio.Event()
    box: dict[str, Any] = {}

    async def on_connection(transport: BaseTransport, **phone: Any) -> None:
        session = build_session(
            persona,
            stt=services["stt"],
            llm=services["llm"],
            tts=services["tts"],
            transport=transport,
            settings=settings,
            **phone,
        )
        box["session"] = session

        @transport.event_handler("on_client_connected")
        async def _connected(_t: Any, _c: Any) -> None:
            box["started"] = (time.monotonic(), _cpu_s())
            await session.greet()

        @transport.event_handler("on_client_disconnected")
        async def _disconnected(_t: Any, _c: Any) -> None:
            await session.worker.cancel()

        await runner.add_workers(session.worker)
        built.set()

    strategies = phone_turn_strategies(persona, settings)
    endpoint = await start_phone_endpoint("twilio", strategies, settings, on_connection)
    ready(json.dumps({"event": "ready", "phone_url": endpoint.url}))
    try:
        await asyncio.wait_for(built.wait(), timeout_s)
        await asyncio.wait_for(runner.run(), timeout_s)
    finally:
        await endpoint.close()
    session: SessionPipeline = box["session"]
    t0, cpu0 = box.get("started", (time.monotonic(), _cpu_s()))
    latencies = [t.latency_ms for t in session.recorder.turns if t.role == "bot" and t.latency_ms]
    return {
        "turns": sum(t.role == "learner" for t in session.recorder.turns),
        "latency_ms": statistics.median(latencies) if latencies else None,
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # KiB
        "cpu_s": round(_cpu_s() - cpu0, 2),
        "wall_s": round(time.monotonic() - t0, 2),
    }


def main() -> int:
    """Entry point: one JSON config argument; the ``ready`` line, then the result line."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    cfg = json.loads(sys.argv[1])
    result = asyncio.run(run(cfg, ready=lambda line: print(line, flush=True)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
