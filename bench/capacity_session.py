"""One benchmark session process: real speech in, cloud-style fake services, real-time output.

Run by ``bench/capacity.py`` (one process per session, as the server runs them):
``python -m bench.capacity_session '<json>'``. The JSON gives the provider endpoints of the
fakes, the stack (which providers), the recordings, the number of learner turns and the
``variant``: ``voxtutor`` (default) or ``pipecat`` (the baseline,
``build_session(pipecat_defaults=True)``: Silero VAD in Pipecat's worker thread, the
learner's audio frames travelling the whole pipeline, every frame event queued to every
observer). The pipeline is the
production one (``pipelines.session.build_session``: Silero VAD, turn
strategies, sentence aggregation, the real Pipecat provider services); no local model is
loaded. Prints one JSON line with what the session saw:

``{"turns", "underruns", "underrun_at_s", "started_at", "chunks", "max_late_ms", "rss_mb",
"cpu_s", "wall_s", "latency_ms"}`` (``underrun_at_s``: when each underrun happened, seconds
into the conversation, which began at Unix time ``started_at``; ``cpu_s`` counts from the
start of the conversation, not the imports; ``rss_mb`` is the process's peak resident set,
``pss_mb`` its proportional share at the end, with pages shared by all session processes,
such as library code, split among them).

An *underrun* is an output chunk that arrived more than ``LATE_MS`` after the previous one
finished playing while the bot was mid-utterance (previous chunk ended under ``GAP_S`` ago):
the listener would hear a stutter.

With ``"barrier": true`` the process prints ``ready`` once its pipeline is built and starts
the conversation when a line arrives on stdin, so the benchmark can start every session's
conversation after all the imports are done (as the server's warm spares are), and spread
the starts out.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pipecat.frames.frames import EndFrame, OutputAudioRawFrame
from pipecat.workers.runner import WorkerRunner

from config.personas import load_persona
from config.settings import Settings
from config.tiers import Link
from pipelines.providers import build_link
from pipelines.session import build_session
from transports.file import (
    FileOutputTransport,
    FileTransport,
    FileTransportParams,
    load_learner_audio,
)

LATE_MS = 40
"""A chunk this late (ms) mid-utterance is an underrun (two 20 ms frames of silence)."""

GAP_S = 0.5
"""A gap longer than this (s) is between utterances, not inside one."""

OUTPUT_RATE = 24000

STACKS: dict[str, dict[str, Link]] = {
    # dpe_live's primaries: streaming STT and TTS over websockets, Claude over SSE.
    "dpe": {
        "stt": Link(provider="deepgram", model="nova-3-general"),
        "llm": Link(provider="anthropic", model="claude-sonnet-4-6"),
        "tts": Link(
            provider="cartesia",
            model="sonic-3",
            voices={"en": "71a7ad14-091c-4e8e-a314-022ece01c121"},
        ),
    },
    # ground_school's primaries: HTTP transcription, Claude, HTTP speech.
    "openai": {
        "stt": Link(provider="openai", model="gpt-4o-transcribe"),
        "llm": Link(provider="anthropic", model="claude-sonnet-4-6"),
        "tts": Link(provider="openai", model="gpt-4o-mini-tts", voices={"en": "onyx"}),
    },
}


class MeteredOutput(FileOutputTransport):
    """A real-time speaker that counts late chunks mid-utterance."""

    def __init__(self, sample_rate: int):
        super().__init__(sample_rate)
        self.underruns = 0
        self.underrun_at: list[float] = []
        self.started = time.monotonic()
        self.chunks = 0
        self.max_late_ms = 0.0

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Play one chunk; count it as an underrun if it came late inside an utterance."""
        now = time.monotonic()
        late = now - self._next_due
        if self.chunks and 0 < late < GAP_S:
            self.max_late_ms = max(self.max_late_ms, late * 1000)
            if late * 1000 > LATE_MS:
                self.underruns += 1
                self.underrun_at.append(round(now - self.started, 2))
        self.chunks += 1
        return await super().write_audio_frame(frame)


def bench_settings(cfg: dict[str, Any], **more: Any) -> Settings:
    """Settings pointing a benchmark session at the fakes (and the turn service) of ``cfg``."""
    return Settings(
        home=Path(cfg["home"]),
        openai_base_url=cfg.get("openai_base_url"),
        anthropic_base_url=cfg.get("anthropic_base_url"),
        deepgram_base_url=cfg.get("deepgram_base_url"),
        cartesia_url=cfg.get("cartesia_url"),
        smart_turn_url=cfg.get("turn_url"),
        **more,
    )


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one session as configured; return the measurements (see the module docstring)."""
    settings = bench_settings(cfg)
    persona = load_persona("aviation-examiner")
    baseline = cfg.get("variant", "voxtutor") == "pipecat"
    stack = STACKS[cfg["stack"]]
    services = {
        role: build_link(role, link, persona, settings)  # type: ignore[arg-type]
        for role, link in stack.items()
    }
    params = FileTransportParams(settle_ms=800, reply_timeout_s=30)
    recordings = [load_learner_audio(Path(p), params.sample_rate) for p in cfg["audio"]]
    output = MeteredOutput(OUTPUT_RATE)
    transport = FileTransport(recordings * cfg["turns"], params, output=output)
    session = build_session(
        persona,
        stt=services["stt"],
        llm=services["llm"],
        tts=services["tts"],
        transport=transport,
        settings=settings,
        audio_out_sample_rate=OUTPUT_RATE,
        pipecat_defaults=baseline,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)
    if cfg.get("barrier"):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await session.greet()
    started = output.started = time.monotonic()
    started_at = time.time()
    before = resource.getrusage(resource.RUSAGE_SELF)  # imports and setup are not counted

    async def end_when_done() -> None:
        await transport.done.wait()
        await session.worker.queue_frame(EndFrame())

    ender = asyncio.create_task(end_when_done())
    try:
        await asyncio.wait_for(runner.run(), cfg.get("timeout_s", 300))
    finally:
        ender.cancel()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    latencies = [t.latency_ms for t in session.recorder.turns if t.role == "bot" and t.latency_ms]
    return {
        "turns": sum(t.role == "learner" for t in session.recorder.turns),
        "underruns": output.underruns,
        "underrun_at_s": output.underrun_at,
        "started_at": round(started_at, 3),
        "chunks": output.chunks,
        "max_late_ms": round(output.max_late_ms, 1),
        "rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "pss_mb": pss_mb(),
        "cpu_s": round(usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime, 2),
        "wall_s": round(time.monotonic() - started, 2),
        "latency_ms": statistics.median(latencies) if latencies else None,
    }


def pss_mb() -> float | None:
    """Proportional set size in MB (shared pages split among the processes sharing them)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> int:
    """Entry point: one JSON config argument, one JSON result line on stdout."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    cfg = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(cfg))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
