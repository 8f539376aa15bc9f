"""Phone calls per core: concurrent Twilio calls in real time without the caller hearing gaps.

Starts the loopback provider fakes in a process of their own (``bench.capacity.start_fakes``),
then for each level N starts N call session processes (``bench/phone_session.py``: the
production pipeline on the Twilio media-stream transport of ``transports/phone.py``, the real
Pipecat Deepgram, Anthropic and Cartesia services, no local model) and, once all serve,
N callers. Each caller (``testkit.phone_support.CarrierCall``) speaks Twilio's
media-stream protocol to its session's loopback socket: ``connected``, ``start``, then one
20 ms μ-law ``media`` message every 20 ms of wall-clock time. It waits for the greeting, says a
LibriVox recording (resampled to 8 kHz, μ-law) ``--turns`` times, each after the bot's reply
has ended, and hangs up. The callers start one after another, spread evenly over ``--stagger``
seconds (the first at once).

The caller plays what the bot sends like a phone would: each ``media`` chunk starts when it
arrives or when the previous one ends, whichever is later. An *underrun* is a chunk arriving
more than ``LATE_MS`` (40 ms) after the previous one finished, while the bot is mid-utterance
(the previous one ended less than ``GAP_S`` ago): the same definition as
``bench/capacity.py``, measured where the carrier would hear it. The callers share this
process, so its own event-loop lag (printed) adds to the lateness it measures.

Prints per level: underruns, calls with any, worst lateness, voice-to-voice median (caller's
end of speech → first bot audio at the caller; and the session's own recorder's), peak RSS
and PSS per call process, CPU share per call process, the harness's CPU (fakes and callers)
and the whole machine's; then the largest N without more underruns than N=1, per core.
``clears`` counts the ``clear`` messages the callers got: Pipecat interrupts at the start of
every user turn, so one per learner turn is normal; more means the bot was cut off.
The project's targets: ≥ 15 calls per core, ≤ 200 MB per call.

Writes every number to ``--json`` (default ``bench/results/phone.json``), with each underrun
as ``[utterance (0 = greeting), s into it, ms late]``.

Usage: ``python -m bench.phone [--levels 1,4,8,12,16] [--turns 3] [--stagger 12] [--json PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.capacity import (
    CLIP,
    Harness,
    attribute_turn_cpu,
    cpu_with_turns,
    levels_table,
    memory_mb,
    proc_cpu_s,
)
from bench.capacity_session import GAP_S, LATE_MS
from testkit.phone_support import FRAME, RATE, CarrierCall, speech_onset, ulaw_encode
from transports.file import load_learner_audio

QUIET_S = 1.0
"""No bot audio for this long (s) after some arrived: the bot's turn is over."""
REPLY_TIMEOUT_S = 30.0
"""Longest wait (s) for the bot to start answering."""
STAGGER_S = 12.0
"""Default spread of a level's call starts (s): about one greeting plus one turn, so the calls'
phases (greeting, speaking, smart-turn, reply) are spread as with calls arriving at random;
``--stagger 0`` starts them in lockstep, every burst at once (the worst case)."""
READY_TIMEOUT_S = 180.0
"""Longest wait (s) for all of a level's session processes to serve their sockets."""


def playout(media: list[tuple[float, bytes]]) -> tuple[list[tuple[int, float, float]], float]:
    """Play μ-law chunks as they arrive; return the underruns and the worst lateness mid-utterance.

    Args:
        media: ``(arrival monotonic s, μ-law bytes at 8 kHz)`` per ``media`` message, in order.

    Returns:
        One ``(utterance index, s into the utterance, ms late)`` per underrun (utterance 0 is
        the greeting), and the worst lateness mid-utterance in ms, underrun or not.
    """
    underruns: list[tuple[int, float, float]] = []
    worst, next_due, utterance, began = 0.0, 0.0, -1, 0.0
    for i, (at, chunk) in enumerate(media):
        late = at - next_due
        if i and 0 < late < GAP_S:
            worst = max(worst, late * 1000)
            if late * 1000 > LATE_MS:
                underruns.append((utterance, round(at - began, 2), round(late * 1000, 1)))
        elif not i or late >= GAP_S:
            utterance, began = utterance + 1, at
        next_due = max(next_due, at) + len(chunk) / RATE
    return underruns, worst


@dataclass
class Speech:
    """The caller's recording as μ-law, with where its speech starts and ends (20 ms frames)."""

    ulaw: bytes
    onset_frame: int
    tail_frames: int

    @classmethod
    def load(cls, path: Path) -> Speech:
        """Read ``path`` at 8 kHz (any rate and channels, see ``load_learner_audio``)."""
        pcm = load_learner_audio(path, RATE)
        pcm = pcm[: len(pcm) // FRAME * FRAME]
        return cls(ulaw_encode(pcm), speech_onset(pcm), speech_onset(pcm[::-1]))


@dataclass
class Caller:
    """One caller's script and what it heard.

    Attributes:
        call: The media stream (``testkit.phone_support.CarrierCall``).
        v2v_ms: Per learner turn: end of the caller's speech → first bot audio after it.
        answered: Learner turns the bot answered within ``REPLY_TIMEOUT_S``.
        error: Why the script stopped early, if it did.
    """

    call: CarrierCall
    v2v_ms: list[float] = field(default_factory=list)
    answered: int = 0
    error: str | None = None

    async def _bot_turn(self, since: float) -> float | None:
        """Wait for bot audio arriving after ``since`` and for its end; return its first arrival."""
        media, first = self.call.media, None
        i = len(media)
        deadline = since + REPLY_TIMEOUT_S
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if first is None:
                while i < len(media) and media[i][0] <= since:
                    i += 1
                if i < len(media):
                    first = media[i][0]
                elif now > deadline:
                    return None
            elif now - media[-1][0] >= QUIET_S:
                return first

    async def run(self, speech: Speech, turns: int, delay_s: float) -> None:
        """Call, hear the greeting, speak ``turns`` times after each reply, hang up."""
        await asyncio.sleep(delay_s)
        try:
            await self.call.start()
            if await self._bot_turn(time.monotonic() - 1) is None:
                self.error = "no greeting"
                return
            for _ in range(turns):
                self.call.speak(speech.ulaw, speech.onset_frame)
                await self.call.speech_done.wait()
                spoke_until = time.monotonic() - speech.tail_frames * FRAME / RATE
                first = await self._bot_turn(spoke_until)
                if first is None:
                    self.error = "no reply"
                    return
                self.answered += 1
                self.v2v_ms.append((first - spoke_until) * 1000)
        except Exception as e:  # a failed call is reported, the others go on
            self.error = f"{type(e).__name__}: {e}"
        finally:
            await self.call.hang_up()

    def result(self) -> dict[str, Any]:
        """What the caller measured (see :func:`playout`)."""
        underruns, worst = playout(self.call.media)
        return {
            "underruns": len(underruns),
            "late": underruns,
            "max_late_ms": round(worst, 1),
            "chunks": len(self.call.media),
            "v2v_ms": statistics.median(self.v2v_ms) if self.v2v_ms else None,
            "answered": self.answered,
            "clears": len(self.call.clears),
        }


class LoopLag:
    """How late this process's event loop wakes up (the callers' own share of lateness)."""

    def __init__(self, every_s: float = 0.01):
        self.every_s = every_s
        self.lags_ms: list[float] = []

    async def run(self) -> None:
        """Sleep ``every_s`` again and again, recording each overshoot in ms."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.every_s)
            self.lags_ms.append((time.monotonic() - t - self.every_s) * 1000)


PSS_EVERY_S = 1.0
"""Interval between PSS samples of the call processes, in s."""


async def _sample_pss(pids: list[int], peak: dict[int, float]) -> None:
    """Keep each process's peak PSS (MB) in ``peak`` until cancelled; reads off the loop."""

    def sample() -> None:
        for pid in pids:
            try:
                peak[pid] = max(peak.get(pid, 0.0), memory_mb(pid)[1])
            except OSError:  # ended
                pass

    while True:
        await asyncio.to_thread(sample)
        await asyncio.sleep(PSS_EVERY_S)


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


async def _session_process(
    cfg: dict[str, Any], prefix: Sequence[str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "bench.phone_session",
        json.dumps(cfg),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _ready_url(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
    if not line:
        raise RuntimeError(f"session process exited ({await proc.wait()}) before serving")
    return str(json.loads(line)["phone_url"])


async def _finish(proc: asyncio.subprocess.Process, caller: Caller | None) -> dict[str, Any]:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if caller is None or caller.error or proc.returncode != 0 or not out.strip():
        tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
        why = [caller.error] if caller is not None and caller.error else []
        return {"error": "; ".join([*why, tail or f"exit {proc.returncode}"])}
    return {**json.loads(out.decode().strip().splitlines()[-1]), **caller.result()}


async def run_level(
    n: int,
    cfg: dict[str, Any],
    speech: Speech,
    turns: int,
    stagger_s: float,
    fakes_pid: int,
    turn_pid: int,
    prefix: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run ``n`` calls at once; return one result per call and the level's harness numbers.

    ``prefix`` is put before each call process's command (:attr:`Harness.prefix`).

    The harness numbers are the callers' loop lag (``lag_p99_ms``, ``lag_max_ms``), the CPU
    share in % of a core of the fakes, the shared smart-turn service and this process
    (``fakes_cpu``, ``turn_cpu``, ``callers_cpu``; the turn service's is also shared out
    among the calls as their ``turn_cpu_s``; ``callers_cpu`` includes the PSS sampling),
    and the whole machine's busy share in % of all cores (``machine_busy``), over the calls
    (``wall_s``). Each call's peak PSS (``pss_mb``) is sampled every ``PSS_EVERY_S`` from
    here, in a thread: reading ``smaps_rollup`` walks the page tables, which inside a call
    process cost ~0.5 % of a core and stalled its event loop.
    """
    procs = [await _session_process(cfg, prefix) for _ in range(n)]
    urls = await asyncio.gather(*(_ready_url(p) for p in procs), return_exceptions=True)
    callers = [
        Caller(CarrierCall("twilio", url, call_id=f"CA{uuid.uuid4().hex}"))
        if isinstance(url, str)
        else None
        for url in urls
    ]
    peak_pss: dict[int, float] = {}
    pss_task = asyncio.create_task(_sample_pss([p.pid for p in procs], peak_pss))
    lag = LoopLag()
    lag_task = asyncio.create_task(lag.run())
    t0, fakes0, busy0 = time.monotonic(), proc_cpu_s(fakes_pid), _machine_busy()
    turn0 = proc_cpu_s(turn_pid)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(
        *(
            c.run(speech, turns, stagger_s * i / max(n - 1, 1))
            for i, c in enumerate(callers)
            if c is not None
        )
    )
    wall = time.monotonic() - t0
    self1, busy1 = resource.getrusage(resource.RUSAGE_SELF), _machine_busy()
    lag_task.cancel()
    pss_task.cancel()
    callers_cpu = self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
    harness = {
        "lag_p99_ms": statistics.quantiles(lag.lags_ms, n=100)[98] if len(lag.lags_ms) > 1 else 0,
        "lag_max_ms": max(lag.lags_ms, default=0.0),
        "fakes_cpu": (proc_cpu_s(fakes_pid) - fakes0) / wall * 100,
        "turn_cpu": (proc_cpu_s(turn_pid) - turn0) / wall * 100,
        "callers_cpu": callers_cpu / wall * 100,
        "machine_busy": (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * 100,
        "wall_s": wall,
    }
    results = []
    for proc, caller, url in zip(procs, callers, urls, strict=True):
        if isinstance(url, BaseException):
            proc.kill()
            await proc.wait()
            results.append({"error": f"not ready: {url!r}"})
        else:
            results.append(await _finish(proc, caller))
            results[-1]["pss_mb"] = peak_pss.get(proc.pid)
    attribute_turn_cpu(results, harness["turn_cpu"] * wall / 100)
    return results, harness


def _median_of(key: str) -> Any:
    def cell(ok: list[dict[str, Any]]) -> str:
        values = [r[key] for r in ok if r.get(key) is not None]
        return f"{statistics.median(values):.0f}" if values else "-"

    return cell


async def main() -> None:
    """Run the levels and print the table (see the module docstring)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--levels", default="1,4,8,12,16")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--stack", choices=["dpe", "openai"], default="dpe")
    ap.add_argument("--stagger", type=float, default=STAGGER_S, help="spread call starts over S s")
    ap.add_argument("--json", type=Path, default=Path("bench/results/phone.json"))
    ap.add_argument(
        "--server-cores",
        type=int,
        default=None,
        help="pin the calls and the turn service to this many CPUs, the fakes and the callers "
        "to the rest; calls per core is then counted on those CPUs",
    )
    args = ap.parse_args()
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        os.environ[name] = "bench-fake-key"  # the fakes accept any key
    console = Console(width=200)
    speech = Speech.load(CLIP)
    shared = await Harness.start(args.server_cores)
    cores = shared.cores
    rows: list[tuple[int, list[dict[str, Any]], dict[str, float]]] = []
    try:
        with tempfile.TemporaryDirectory() as home:
            cfg: dict[str, Any] = {
                "home": home,
                "stack": args.stack,
                "timeout_s": 600,
                "turn_url": shared.turn_url,
                **shared.urls,
            }
            for n in [int(x) for x in args.levels.split(",")]:
                results, harness = await run_level(
                    n,
                    cfg,
                    speech,
                    args.turns,
                    args.stagger,
                    shared.fakes.pid,
                    shared.turns.pid,
                    shared.prefix,
                )
                rows.append((n, results, harness))
                ok = [r for r in results if "error" not in r]
                console.print(
                    f"N={n}: {len(ok)}/{n} ok, underruns {sum(r['underruns'] for r in ok)}, "
                    f"load avg {os.getloadavg()[0]:.1f}"
                )
    finally:
        await shared.close()

    args.json.parent.mkdir(parents=True, exist_ok=True)
    levels = [{"calls": n, "harness": h, "results": r} for n, r, h in rows]
    raw = {"args": {**vars(args), "json": str(args.json)}, "cores": cores, "levels": levels}
    args.json.write_text(json.dumps(raw, indent=1))
    for _n, results, _ in rows:  # the common table's v2v is the caller's
        for r in results:
            if "error" not in r:
                r["recorder_ms"], r["latency_ms"] = r["latency_ms"], r["v2v_ms"]
    table, best, base = levels_table(
        [(n, r) for n, r, _ in rows],
        "calls",
        extra=[
            ("CPU % incl. turn service", cpu_with_turns),
            ("recorder v2v ms", _median_of("recorder_ms")),
            ("answered", lambda ok: str(sum(r["answered"] for r in ok))),
            ("clears", lambda ok: str(sum(r["clears"] for r in ok))),
        ],
    )
    console.print(table)
    for n, results, h in rows:
        calls_cpu = sum(r["cpu_s"] for r in results if "error" not in r) / h["wall_s"] * 100
        others = (
            h["machine_busy"] * (os.cpu_count() or 1)
            - calls_cpu
            - h["fakes_cpu"]
            - h["turn_cpu"]
            - h["callers_cpu"]
        )
        console.print(
            f"N={n}: callers' loop lag p99 {h['lag_p99_ms']:.1f} ms, max {h['lag_max_ms']:.0f} ms;"
            f" CPU % of a core: calls {calls_cpu:.0f}, turn service {h['turn_cpu']:.0f},"
            f" fakes {h['fakes_cpu']:.0f},"
            f" callers {h['callers_cpu']:.0f}, other processes {max(others, 0):.0f}"
            f" (machine busy {h['machine_busy']:.0f} % of {os.cpu_count()} cores)"
        )
    first_ok = next((r for _, res, _ in rows for r in res if "error" not in r), None)
    per_call_cpu = (
        (first_ok["cpu_s"] + first_ok.get("turn_cpu_s", 0.0)) / first_ok["wall_s"]
        if first_ok
        else 0
    )
    console.print(
        f"stack {args.stack}: {best} concurrent calls with no more underruns than N=1 "
        f"({base} per call) on {cores} cores"
        f"{' (pinned: calls and turn service only)' if shared.server_cpus else ''}"
        f" = {best / cores:.1f} calls per core (target ≥ 15); "
        f"CPU per call at N=1 {per_call_cpu * 100:.1f} % of a core"
        + (f" (≈ {1 / per_call_cpu:.0f} calls per core if CPU-bound)" if per_call_cpu else "")
        + "; memory target ≤ 200 MB per call"
    )
    for n, results, _ in rows:
        for r in results:
            if "error" in r:
                console.print(f"[red]N={n} error:[/] {r['error']}")


if __name__ == "__main__":
    asyncio.run(main())
