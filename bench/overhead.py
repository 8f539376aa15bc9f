"""Framework overhead: our session pipeline vs a bare Pipecat pipeline, identical fakes.

Both pipelines get the same fake services, built fresh for every run: ``FakeLLM`` streaming a
fixed 3-sentence reply with ``--token-delay`` between tokens, ``FakeTTS`` (24 kHz, ``--chunks``
20 ms chunks per sentence, ``--chunk-delay`` before each), ``IdleInputTransport`` and a
non-real-time output sink (a ``BaseOutputTransport`` whose ``write_audio_frame`` returns at
once and notes the time of the first chunk of each reply), so what is measured is CPU work
and scheduling, not playback. Both start from the czech-tutor persona's initial context.

(a) bare: ``Pipeline([input, user aggregator, FakeLLM, FakeTTS, output, assistant
    aggregator])`` under ``PipelineWorker`` with default ``PipelineParams`` (metrics off, 24 kHz
    out). The user aggregator comes from ``LLMContextAggregatorPair`` with default params (no
    VAD analyzer, default start strategies ``[VADUserTurnStartStrategy,
    TranscriptionUserTurnStartStrategy]``), except the stop strategy: the default smart-turn
    strategy needs real audio and would only end an injected turn through its 5 s fallback,
    so it gets ``SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.1)``, the strategy
    our session uses for Czech. Sentences are split by the TTS's own ``SimpleTextAggregator``.
(b) ours: ``pipelines.session.build_session`` (czech-tutor, ``speech_timeout_ms=100``,
    ``IdentityFilter`` as STT since transcripts are injected). Compared with (a) it adds: an
    ``IdentityFilter`` hop (STT slot); a ``SileroVADAnalyzer`` in the user aggregator (loaded,
    but idle: no audio is played); our start strategies (``QuietBotVADUserTurnStartStrategy``
    + ``MinWordsUserTurnStartStrategy``); ``LLMTextProcessor(SentenceAggregator())`` before
    the TTS; ``TurnRecorderObserver`` and ``UserBotLatencyObserver``; and
    ``enable_metrics``/``enable_usage_metrics`` (``MetricsFrame`` s for TTFB, processing
    time, usage).

Each run plays the same script of K user turns, injected with ``worker.queue_frames``:
``VADUserStartedSpeakingFrame`` + ``TranscriptionFrame(finalized=True)``, 50 ms later
``VADUserStoppedSpeakingFrame``; the next turn starts once the bot has stopped speaking.
Measured: (1) latency from queueing ``VADUserStoppedSpeakingFrame`` to the first audio chunk
reaching the sink, per turn (includes the 0.1 s speech timeout and the fakes' sleeps in both);
(2) process CPU time (``time.process_time``) from the first injected frame to the end of the
last turn, divided by K. Runs alternate a, b, a, b, … (``--repeat`` R pairs) to cancel
drift. Printed: median per-turn latency and median CPU per turn for each, and the ratios
ours/bare next to the 1.05 target (printed, not asserted).

Run from the repository root: ``python -m bench.overhead [--turns 10] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner
from rich.console import Console
from rich.table import Table

from config.personas import load_persona
from config.settings import Settings
from pipelines.session import build_session
from testkit.fakes import FakeLLM, FakeTTS, ScriptedTransport

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.05
PERSONA = "czech-tutor"
SPEECH_TIMEOUT_MS = 100
OUT_RATE = 24000
REPLY = (
    "Dobře, to je skoro správně, jen řekni: mám se dobře. "
    "Co jsi dnes dělal po práci nebo ve škole? "
    "A kam chceš jet na víkend s kamarády?"
)
USER_TEXT = "Ahoj, já mám dobře, dnes jsem byl v práci."


class SinkOutputTransport(BaseOutputTransport):
    """An output that takes every chunk at once; notes the first chunk of each reply."""

    def __init__(self, **kwargs: Any):
        super().__init__(
            TransportParams(audio_out_enabled=True, audio_out_end_silence_secs=0), **kwargs
        )
        self.first_write: float | None = None
        self.chunks = 0
        self.bot_stopped = asyncio.Event()

    def arm(self) -> None:
        """Forget the last reply: the next written chunk is a new first one."""
        self.first_write = None
        self.bot_stopped.clear()

    async def start(self, frame: StartFrame) -> None:
        """Start the transport."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Take the chunk immediately (no real-time pacing)."""
        if self.first_write is None:
            self.first_write = time.perf_counter()
        self.chunks += 1
        return True

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Signal the end of a reply when the bot stops speaking."""
        if isinstance(frame, BotStoppedSpeakingFrame) and direction == FrameDirection.DOWNSTREAM:
            self.bot_stopped.set()
        await super().push_frame(frame, direction)


@dataclass
class Fakes:
    """The knobs of the fake services (same for both pipelines)."""

    token_delay: float
    chunks: int
    chunk_delay: float

    def llm(self) -> FakeLLM:
        """A fresh fake LLM."""
        return FakeLLM(REPLY, token_delay=self.token_delay)

    def tts(self) -> FakeTTS:
        """A fresh fake TTS."""
        return FakeTTS(chunks=self.chunks, chunk_delay=self.chunk_delay, sample_rate=OUT_RATE)


@dataclass
class RunResult:
    """One run of K turns."""

    kind: str
    latencies_ms: list[float] = field(default_factory=list)
    cpu_per_turn_ms: float = 0.0
    wall_per_turn_ms: float = 0.0
    setup_cpu_ms: float = 0.0
    missed: int = 0
    audio_chunks: int = 0


def build_bare(fakes: Fakes) -> tuple[PipelineWorker, ScriptedTransport]:
    transport = ScriptedTransport(SinkOutputTransport())
    context = LLMContext(messages=load_persona(PERSONA).initial_messages())  # type: ignore[arg-type]
    user, assistant = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(
                stop=[
                    SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=SPEECH_TIMEOUT_MS / 1000)
                ]
            )
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            user,
            fakes.llm(),
            fakes.tts(),
            transport.output(),
            assistant,
        ]
    )
    return PipelineWorker(pipeline), transport


def build_ours(fakes: Fakes, home: Path) -> tuple[PipelineWorker, ScriptedTransport]:
    transport = ScriptedTransport(SinkOutputTransport())
    session = build_session(
        load_persona(PERSONA),
        stt=IdentityFilter(),
        llm=fakes.llm(),
        tts=fakes.tts(),
        transport=transport,
        settings=Settings(home=home, speech_timeout_ms=SPEECH_TIMEOUT_MS),
        audio_out_sample_rate=OUT_RATE,
    )
    return session.worker, transport


async def run_once(
    kind: str, build: Callable[[], tuple[PipelineWorker, ScriptedTransport]], turns: int
) -> RunResult:
    result = RunResult(kind)
    gc.collect()
    cpu_setup = time.process_time()
    worker, transport = build()
    sink = transport.output()
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.5)  # StartFrame through the pipeline
    result.setup_cpu_ms = (time.process_time() - cpu_setup) * 1000

    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(turns):
        sink.arm()
        await worker.queue_frames(
            [
                VADUserStartedSpeakingFrame(start_secs=0.2),
                TranscriptionFrame(text=USER_TEXT, user_id="learner", timestamp="", finalized=True),
            ]
        )
        await asyncio.sleep(0.05)
        t_stop = time.perf_counter()
        await worker.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        try:
            await asyncio.wait_for(sink.bot_stopped.wait(), 10)
        except TimeoutError:
            result.missed += 1
        if sink.first_write is not None:
            result.latencies_ms.append((sink.first_write - t_stop) * 1000)
        else:
            result.missed += 1
        await asyncio.sleep(0.05)  # the assistant aggregator closes the turn
    result.cpu_per_turn_ms = (time.process_time() - cpu0) * 1000 / turns
    result.audio_chunks = sink.chunks
    result.wall_per_turn_ms = (time.perf_counter() - wall0) * 1000 / turns

    await worker.queue_frame(EndFrame())
    await asyncio.wait_for(running, 30)
    return result


def _ratio(ours: float, bare: float, gated: bool) -> str:
    if bare <= 0:
        return "–"
    r = ours / bare
    if not gated:
        return f"{r:.3f}"
    return f"{r:.3f} {'✓' if r <= TARGET_RATIO else '✗'}"


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("bare", "ours"):
        rs = [r for r in runs if r.kind == kind]
        lat = [x for r in rs for x in r.latencies_ms]
        out[kind] = {
            "median_latency_ms": statistics.median(lat) if lat else None,
            "p95_latency_ms": (
                statistics.quantiles(lat, n=20, method="inclusive")[18] if len(lat) > 1 else None
            ),
            "median_cpu_per_turn_ms": statistics.median(r.cpu_per_turn_ms for r in rs),
            "median_setup_cpu_ms": statistics.median(r.setup_cpu_ms for r in rs),
            "missed": sum(r.missed for r in rs),
            "runs": [r.__dict__ for r in rs],
        }
    return out


def print_table(console: Console, s: dict[str, Any], args: argparse.Namespace) -> None:
    bare, ours = s["bare"], s["ours"]
    table = Table(
        title=f"Framework overhead: {args.repeat} interleaved runs × {args.turns} turns, "
        f"token_delay {args.token_delay * 1000:g} ms, {args.chunks} chunks × "
        f"{args.chunk_delay * 1000:g} ms per sentence"
    )
    for col in ("metric", "bare", "ours", "ours − bare", "ours / bare", "target"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    rows = [
        ("median latency, ms", "median_latency_ms"),
        ("p95 latency, ms", "p95_latency_ms"),
        ("CPU per turn, ms", "median_cpu_per_turn_ms"),
        ("setup CPU, ms", "median_setup_cpu_ms"),
    ]
    for label, key in rows:
        b, o = bare[key], ours[key]
        if b is None or o is None:
            table.add_row(label, str(b), str(o), "–", "–", "")
            continue
        gated = key in ("median_latency_ms", "median_cpu_per_turn_ms")
        target = f"≤ {TARGET_RATIO}" if gated else ""
        table.add_row(label, f"{b:.1f}", f"{o:.1f}", f"{o - b:+.1f}", _ratio(o, b, gated), target)
    console.print(table)
    if bare["missed"] or ours["missed"]:
        missed = f"bare {bare['missed']}, ours {ours['missed']}"
        console.print(f"[yellow]turns without a reply: {missed}[/]")
    console.print(
        f"[dim]latency includes the {SPEECH_TIMEOUT_MS} ms speech timeout and the fakes' "
        "sleeps in both; setup CPU (building + starting, incl. loading Silero in ours) is "
        "not part of the ratio.[/]"
    )


async def main_async(args: argparse.Namespace) -> list[RunResult]:
    fakes = Fakes(args.token_delay, args.chunks, args.chunk_delay)
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory() as home:
        builders = {
            "bare": lambda: build_bare(fakes),
            "ours": lambda: build_ours(fakes, Path(home)),
        }
        # One unmeasured warm-up run of each (imports, first ONNX session, caches).
        for kind, build in builders.items():
            await run_once(kind, build, 2)
        for _ in range(args.repeat):
            for kind, build in builders.items():
                runs.append(await run_once(kind, build, args.turns))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10, help="user turns per run (K)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved a/b pairs (R)")
    parser.add_argument("--token-delay", type=float, default=0.002, help="FakeLLM, seconds")
    parser.add_argument("--chunks", type=int, default=10, help="FakeTTS 20 ms chunks/sentence")
    parser.add_argument("--chunk-delay", type=float, default=0.002, help="FakeTTS, seconds")
    parser.add_argument("--json", type=Path, default=RESULTS / "overhead.json")
    args = parser.parse_args()
    if args.turns < 1 or args.repeat < 1:
        parser.error("--turns and --repeat must be at least 1")

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    runs = asyncio.run(main_async(args))
    summary = summarize(runs)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, **summary}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    print_table(console, summary, args)
    console.print(f"[dim]wrote {args.json}[/]")


if __name__ == "__main__":
    main()
