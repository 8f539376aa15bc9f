"""Switch cost of provider failover: fault → first output of the backup, vs a no-fault baseline.

Each run builds a fresh failover group (``processors.failover.groups``) over in-process fakes
(``testkit/failover_fakes.py``) under ``PipelineWorker``, feeds it one 3-sentence reply and
records when frames leave the group (a non-real-time sink, so playback is not measured).

- **TTS** (primary → backup → text-only; fakes speak 8 ms per character in 20 ms chunks with
  ``--chunk-delay`` before each, so a request's first audio comes ``chunk-delay`` after it):
  a fault strikes the primary 2 chunks into the second sentence. Switch cost = first audio
  of the backup at the sink − the moment the fault struck. Baseline (no fault, same run
  order): first audio of the second sentence at the sink − the moment the primary was asked
  for it, i.e. the provider's own time to first audio plus the group's overhead.
- **LLM** (primary → backup; ``--token-delay`` between tokens): a fault strikes before the
  8th token. Switch cost = first token of the backup leaving the group − the fault;
  baseline = first token − the request, without a fault.

ServiceFault kinds: ``server_error`` (an ``ErrorFrame``, as a 5xx after the SDK's retries),
``disconnect`` (an exception), ``malformed`` (an uncategorized "Expecting value" error),
``cut`` (TTS only: the audio just stops, detected when the sentence's context ends short) and
``hang`` (no answer; slow to notice, so ``--hang-runs`` runs only): the LLM's is caught by the
5 s TTFB watchdog, the HTTP-style TTS's when Pipecat closes the silent audio context after its
``stop_frame_timeout_s`` (default 3 s, which the fakes keep here). The policy is the default
one (``FailoverPolicy()``); the cut check's rate is raised to fit the fakes' fast speech.
Runs alternate baseline and fault kinds to cancel drift. Printed: median and p95 (ms) per
kind, the baseline, and the extra cost (median switch − median baseline).

With ``--deferred`` the backup stands behind a :class:`processors.failover.deferred.
DeferredService`, as in a tier's chains: the switch then includes building the nested
pipeline and starting the backup (the fakes import nothing; a real backup's imports run in a
worker thread on top, once per session).

Run from the repository root: ``python -m bench.failover [--runs 10] [--hang-runs 2]
[--deferred]`` (about 2.5 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from loguru import logger
from pipecat.frames.frames import (
    AggregatedTextFrame,
    EndFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from processors.failover.deferred import deferred
from processors.failover.groups import FailoverPolicy, failover_llm, failover_tts
from services.text_only_tts import TextOnlyTTSService
from testkit.failover_fakes import ScriptedLLM, ScriptedTTS, ServiceFault
from testkit.failover_rig import REPLY, SENTENCES

POLICY = replace(FailoverPolicy(), max_chars_per_audio_s=250.0)
RESULTS = Path(__file__).parent / "results" / "failover.json"
CUT_AT = 7
"""LLM runs: the fault strikes before this token (mid-second sentence)."""


class Sink(FrameProcessor):
    """Notes when each audio chunk (by its fake's marker) and each token leaves the group."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[tuple[float, int]] = []
        self.tokens: list[float] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Note the time of audio and tokens, pass everything on."""
        await super().process_frame(frame, direction)
        now = time.monotonic()
        if isinstance(frame, TTSAudioRawFrame) and frame.audio:
            self.audio.append((now, int.from_bytes(frame.audio[:2], "little", signed=True)))
        elif isinstance(frame, LLMTextFrame):
            self.tokens.append(now)
        await self.push_frame(frame, direction)


async def _run(processors: list[FrameProcessor], frames: list[Frame], wait: float) -> None:
    worker = PipelineWorker(Pipeline(processors), enable_rtvi=False, cancel_on_idle_timeout=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)

    async def drive() -> None:
        await asyncio.sleep(0.2)
        await worker.queue_frames(frames)
        await asyncio.sleep(wait)
        await worker.queue_frame(EndFrame())

    driver = asyncio.create_task(drive())
    await asyncio.wait_for(runner.run(), wait + 30)
    await driver


def _backup(role: str, service: FrameProcessor, defer: bool) -> FrameProcessor:
    """The backup as given, or behind a stand-in that builds (returns) it on first use."""
    return deferred(role, lambda: service, modules=(), provider="b") if defer else service


async def tts_run(fault: ServiceFault | None, chunk_delay: float, defer: bool = False) -> float:
    """Seconds: fault → first backup audio, or (no fault) request of sentence 2 → its audio."""
    # Pipecat's default context timeout (3 s): an HTTP TTS that hangs is noticed by then.
    primary = ScriptedTTS(1, chunk_delay=chunk_delay, stop_frame_timeout_s=3.0)
    backup = ScriptedTTS(2, chunk_delay=chunk_delay, stop_frame_timeout_s=3.0)
    chain = [("a", primary), ("b", _backup("tts", backup, defer)), ("text", TextOnlyTTSService())]
    group = failover_tts(chain, POLICY)
    sink = Sink()
    if fault is not None:
        primary.inject(fault, after=2, skip=1)
    frames: list[Frame] = [
        LLMFullResponseStartFrame(),
        *[AggregatedTextFrame(s, "sentence") for s in SENTENCES],
        LLMFullResponseEndFrame(),
    ]
    await _run([*group, sink], frames, wait=7.0 if fault is ServiceFault.HANG else 1.5)
    if fault is None:  # sentence 2 is asked for once sentence 1 is done: its first chunk
        asked = primary.request_at[1]
        return next(t for t, _ in sink.audio if t > asked) - asked
    assert primary.struck_at is not None
    return next(t for t, m in sink.audio if m == 2) - primary.struck_at


async def llm_run(fault: ServiceFault | None, token_delay: float, defer: bool = False) -> float:
    """Seconds: fault → first backup token, or (no fault) request → first token."""
    primary, backup = ScriptedLLM(REPLY, token_delay), ScriptedLLM(REPLY, token_delay)
    group = failover_llm([("a", primary), ("b", _backup("llm", backup, defer))], POLICY)
    sink = Sink()
    if fault is not None:
        primary.inject(fault, after=CUT_AT)
    context = LLMContext(messages=[{"role": "user", "content": "What first?"}])
    await _run(
        [*group, sink], [LLMContextFrame(context)], wait=7.0 if fault is ServiceFault.HANG else 1.0
    )
    if fault is None:
        return sink.tokens[0] - primary.request_at[0]
    # Tokens 0-6 came from the primary; token 7 is the backup's first (it continues the reply).
    assert primary.struck_at is not None and backup.request_at
    return sink.tokens[CUT_AT] - primary.struck_at


def summary(samples: list[float]) -> dict[str, float]:
    """Median and p95 in ms (p95 as ``statistics.quantiles(n=20)`` when 2+ samples)."""
    ms = sorted(x * 1000 for x in samples)
    p95 = ms[-1] if len(ms) < 2 else statistics.quantiles(ms, n=20, method="inclusive")[18]
    return {"n": len(ms), "median_ms": statistics.median(ms), "p95_ms": p95}


async def main(args: argparse.Namespace) -> dict:
    kinds = {
        "tts": [
            ServiceFault.SERVER,
            ServiceFault.DISCONNECT,
            ServiceFault.GARBAGE,
            ServiceFault.CUT,
            ServiceFault.HANG,
        ],
        "llm": [
            ServiceFault.SERVER,
            ServiceFault.DISCONNECT,
            ServiceFault.GARBAGE,
            ServiceFault.HANG,
        ],
    }
    runs: dict[str, dict[str, list[float]]] = {role: {} for role in kinds}
    for i in range(args.runs):
        for role, faults in kinds.items():
            for fault in [None, *faults]:
                if fault is ServiceFault.HANG and i >= args.hang_runs:
                    continue
                if role == "tts":
                    seconds = await tts_run(fault, args.chunk_delay, args.deferred)
                else:
                    seconds = await llm_run(fault, args.token_delay, args.deferred)
                runs[role].setdefault(fault.value if fault else "baseline", []).append(seconds)
    result: dict = {"policy": POLICY.__dict__, "args": vars(args), "roles": {}}
    for role, by_kind in runs.items():
        base = summary(by_kind["baseline"])
        rows = {kind: summary(v) for kind, v in by_kind.items()}
        result["roles"][role] = {"summary": rows, "samples_s": by_kind}
        what = "first audio" if role == "tts" else "first token"
        print(f"\n{role.upper()}: fault -> {what} of the backup (baseline: request -> {what})")
        print(f"  {'kind':<14}{'n':>4}{'median ms':>12}{'p95 ms':>10}{'extra ms':>11}")
        for kind, row in rows.items():
            extra = "" if kind == "baseline" else f"{row['median_ms'] - base['median_ms']:11.1f}"
            print(f"  {kind:<14}{row['n']:>4}{row['median_ms']:12.1f}{row['p95_ms']:10.1f}{extra}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per fault kind")
    parser.add_argument("--hang-runs", type=int, default=2, help="runs of the 5 s hang")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="TTS fake, s/chunk")
    parser.add_argument("--token-delay", type=float, default=0.01, help="LLM fake, s/token")
    parser.add_argument(
        "--deferred",
        action="store_true",
        help="the backup is built on first use (DeferredService), as in a tier's chains",
    )
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    started = time.monotonic()
    out = asyncio.run(main(args))
    print(f"\n{time.monotonic() - started:.0f} s; results in {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str))
