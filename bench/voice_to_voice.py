"""Voice-to-voice latency of the full local stack on real English speech.

Plays N learner turns, cycling through the five LibriVox clips that ship with pocketsphinx
(``/usr/share/pocketsphinx/test/data/librivox/*.wav``, transcripts in ``transcription``),
into one real session (:func:`pipelines.file_session.run_file_session`: file transport at
real-time pace, Silero VAD, smart-turn, Whisper base, llama.cpp Qwen2.5-Coder, Piper), so a
single LLM server serves all turns. Default persona ``aviation-examiner``.

Prints, with rich, median and p95 of

* voice-to-voice latency: learner's last word → first bot audio (``latency_ms`` of the bot
  turns, from Pipecat's ``UserBotLatencyObserver``);
* per-stage TTFB (``ttfb_ms``): STT (measured by Pipecat from the learner's last word, so it
  includes the VAD stop wait), LLM (request → first token), TTS (first sentence → first
  audio);

plus how many turns got an answer, next to the project's target (median ≤ 1.5 s on 2 cores,
stretch 1.2 s; printed, not asserted). ``--breakdown`` adds one row per turn splitting the
latency into VAD stop wait, Whisper decoding, LLM TTFB, TTS TTFB and the rest (turn
detection, waiting for the LLM to finish the first sentence, frame hops).

Raw numbers go to ``bench/results/voice_to_voice.json``; the session's transcript and WAVs to
``bench/results/voice_to_voice_session/``.

``--ablate`` runs the session twice in the same run, without and with the first-clause
lever (``Settings.first_clause``), so each lever is measured against the same baseline.
``--sessions N`` starts one llama.cpp server and N sessions at once, each in its own process
(as the server runs them), and prints each session's median and p95: the concurrency table.
The first learner turn's latency is printed on its own (it is where an unwarmed persona
prompt would show).

Run from the repository root: ``python -m bench.voice_to_voice [--turns 10] [--small]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.observers.user_bot_latency_observer import (
    LatencyBreakdown,
    MeasuredFrom,
    UserBotLatencyObserver,
)
from rich.console import Console
from rich.table import Table

import pipelines.file_session as file_session
from config.personas import load_persona
from config.settings import Settings
from contracts.turns import TurnRecord
from pipelines.file_session import run_file_session
from pipelines.local import local_llm, opening_messages, warm_persona_prompts
from testkit.audio import LIBRIVOX, librivox_clips

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 1500
STRETCH_MS = 1200
STAGES = ("stt", "llm", "tts")


def load_clips(directory: Path = LIBRIVOX) -> list[tuple[Path, str]]:
    """Return ``(wav, transcript)`` for each clip listed in ``directory/transcription``."""
    return librivox_clips(directory)


def median_p95(values: list[float]) -> tuple[float | None, float | None]:
    """Median and 95th percentile (inclusive method); ``None`` for no values."""
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    return statistics.median(values), statistics.quantiles(values, n=20, method="inclusive")[18]


def answered_turns(turns: list[TurnRecord]) -> list[dict[str, Any]]:
    """Pair each bot reply that has a measured latency with the learner turn before it."""
    rows = []
    last_learner = ""
    for t in turns:
        if t.role == "learner":
            last_learner = t.text
        elif t.latency_ms is not None:
            rows.append(
                {
                    "learner": last_learner,
                    "bot": t.text,
                    "latency_ms": t.latency_ms,
                    "ttfb_ms": dict(t.ttfb_ms),
                    "interrupted": t.interrupted,
                }
            )
    return rows


def breakdown(row: dict[str, Any], vad_stop_ms: int) -> dict[str, int | None]:
    """Split one reply's latency into stages (ms); ``None`` where a TTFB is missing.

    Pipecat starts the STT TTFB at the learner's last word (VAD stop time minus
    ``stop_secs``), so it contains the VAD stop wait; the rest is what no TTFB covers: the
    turn decision, the LLM streaming up to the end of the first sentence, frame hops.
    """
    ttfb = row["ttfb_ms"]
    stt, llm, tts = (ttfb.get(k) for k in STAGES)
    rest = None
    if None not in (stt, llm, tts):
        rest = row["latency_ms"] - stt - llm - tts  # type: ignore[operator]
    return {
        "latency": row["latency_ms"],
        "vad_stop": vad_stop_ms,
        "stt_decode": None if stt is None else stt - vad_stop_ms,
        "llm_ttfb": llm,
        "tts_ttfb": tts,
        "rest": rest,
    }


class BreakdownCollector:
    """Adds a second ``UserBotLatencyObserver`` to the session and keeps its breakdowns.

    ``run_file_session`` builds the session itself, so :meth:`install` wraps the
    ``build_session`` it calls to append the observer (bench-only; nothing else changes).
    """

    def __init__(self) -> None:
        self.turns: list[dict[str, Any]] = []
        self._original: Any = None

    async def _on_breakdown(self, _observer: Any, b: LatencyBreakdown) -> None:
        if b.measured_from is not MeasuredFrom.USER_SILENCE:
            return  # the greeting
        parts: dict[str, int] = {}
        for c in b.contributions:
            parts[c.label] = parts.get(c.label, 0) + round(c.duration_secs * 1000)
        self.turns.append({"total_ms": round(b.total_secs * 1000), "contributions": parts})

    def install(self) -> None:
        """Make ``run_file_session`` add the observer to the session it builds."""
        original = self._original = file_session.build_session

        def build_session(*args: Any, **kwargs: Any) -> Any:
            observer = UserBotLatencyObserver()
            observer.add_event_handler("on_latency_breakdown", self._on_breakdown)
            kwargs["observers"] = [*kwargs.get("observers", ()), observer]
            return original(*args, **kwargs)

        file_session.build_session = build_session  # type: ignore[assignment]

    def uninstall(self) -> None:
        """Restore the original ``build_session``."""
        if self._original is not None:
            file_session.build_session = self._original

    def match(self, rows: list[dict[str, Any]]) -> list[dict[str, int] | None]:
        """The contributions for each answered row, matched in order by total latency."""
        out: list[dict[str, int] | None] = []
        i = 0
        for row in rows:
            j = i
            while j < len(self.turns) and abs(self.turns[j]["total_ms"] - row["latency_ms"]) > 10:
                j += 1
            if j < len(self.turns):
                out.append(self.turns[j]["contributions"])
                i = j + 1
            else:
                out.append(None)
        return out


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def print_summary(console: Console, report: dict[str, Any]) -> None:
    s = report["summary"]
    table = Table(title=f"Voice-to-voice, {report['llm_model']}, {report['cores']} cores")
    table.add_column("metric")
    table.add_column("median ms", justify="right")
    table.add_column("p95 ms", justify="right")
    table.add_column("n", justify="right")
    table.add_column("target", justify="right")
    lat = s["latency_ms"]
    verdict = ""
    if lat["median"] is not None:
        verdict = " ✓" if lat["median"] <= TARGET_MS else " ✗"
    table.add_row(
        "voice-to-voice",
        _fmt(lat["median"]),
        _fmt(lat["p95"]),
        str(lat["n"]),
        f"median ≤ {TARGET_MS} (stretch {STRETCH_MS}){verdict}",
    )
    for stage in STAGES:
        st = s["ttfb_ms"][stage]
        table.add_row(f"TTFB {stage}", _fmt(st["median"]), _fmt(st["p95"]), str(st["n"]), "")
    console.print(table)
    console.print(
        f"first turn {_fmt(report.get('first_turn_ms'))} ms; "
        f"answered {s['answered']} of {report['turns']} learner turns "
        f"({s['learner_turns']} learner turns recorded); session wall time "
        f"{report['wall_s']:.0f} s"
    )


def print_breakdown(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="Where the time goes, per turn (ms), from TTFBs")
    table.add_column("#", justify="right")
    table.add_column("learner (Whisper)", no_wrap=True, max_width=24)
    for col in ("latency", "VAD stop", "STT decode", "LLM TTFB", "TTS TTFB", "rest*"):
        table.add_column(col, justify="right")
    keys = ("latency", "vad_stop", "stt_decode", "llm_ttfb", "tts_ttfb", "rest")
    for i, (row, parts) in enumerate(zip(report["answered"], report["breakdown"], strict=True)):
        table.add_row(str(i + 1), row["learner"], *(_fmt(parts[k]) for k in keys))
    console.print(table)
    console.print(
        "[dim]* rest = latency − STT TTFB − LLM TTFB − TTS TTFB: turn decision (smart-turn), "
        "the LLM streaming until the first sentence is complete, frame hops. STT TTFB starts "
        "at the learner's last word, so VAD stop + STT decode = STT TTFB.[/]"
    )
    pipecat = report["pipecat_breakdown"]
    labels: list[str] = []
    for parts in pipecat:
        labels += [k for k in (parts or {}) if k not in labels]
    if not labels:
        return
    table = Table(title="Pipecat's latency breakdown (UserBotLatencyObserver contributions, ms)")
    table.add_column("#", justify="right")
    for label in labels:
        table.add_column(label, justify="right")
    for i, parts in enumerate(pipecat):
        table.add_row(str(i + 1), *(_fmt((parts or {}).get(label)) for label in labels))
    console.print(table)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    if args.small:
        settings = settings.model_copy(update={"llm_model": "qwen2.5-coder-0.5b"})
    settings = settings.model_copy(update={"first_clause": args.first_clause != "off"})
    clips = load_clips()
    if not clips:
        raise SystemExit(f"no clips found in {LIBRIVOX}")
    chosen = [clips[i % len(clips)] for i in range(args.turns)]
    out_dir = RESULTS / f"voice_to_voice_session{args.tag}"
    collector = BreakdownCollector()
    if args.breakdown:
        collector.install()
    t0 = time.monotonic()
    try:
        result = await run_file_session(
            args.persona,
            [p for p, _ in chosen],
            out_dir,
            settings,
            assessment=args.assessment != "off",
            llm_base_url=args.llm_base_url,
        )
    finally:
        collector.uninstall()
    wall = time.monotonic() - t0

    answered = answered_turns(result.turns)
    latencies = [r["latency_ms"] for r in answered]
    med, p95 = median_p95(latencies)
    ttfb = {}
    for stage in STAGES:
        values = [r["ttfb_ms"][stage] for r in answered if stage in r["ttfb_ms"]]
        m, p = median_p95(values)
        ttfb[stage] = {"median": m, "p95": p, "n": len(values), "values": values}
    return {
        "persona": args.persona,
        "assessment": args.assessment != "off",
        "first_clause": settings.first_clause,
        "first_turn_ms": latencies[0] if latencies else None,
        "llm_model": settings.llm_model,
        "llm_threads": settings.llm_threads,
        "vad_stop_ms": settings.vad_stop_ms,
        "smart_turn_max_pause_ms": settings.smart_turn_max_pause_ms,
        "cores": os.cpu_count(),
        "turns": args.turns,
        "clips": [{"path": str(p), "reference": ref} for p, ref in chosen],
        "wall_s": wall,
        "target_median_ms": TARGET_MS,
        "stretch_median_ms": STRETCH_MS,
        "summary": {
            "answered": len(answered),
            "learner_turns": sum(t.role == "learner" for t in result.turns),
            "latency_ms": {"median": med, "p95": p95, "n": len(latencies), "values": latencies},
            "ttfb_ms": ttfb,
        },
        "answered": answered,
        "breakdown": [breakdown(r, settings.vad_stop_ms) for r in answered],
        "pipecat_breakdown": collector.match(answered) if args.breakdown else [],
        "turns_raw": [t.to_dict() for t in result.turns],
        "session_dir": str(out_dir),
    }


async def run_concurrent(args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    """Start one LLM server and ``args.sessions`` session processes at once; their reports."""
    settings = Settings()
    if args.small:
        settings = settings.model_copy(update={"llm_model": "qwen2.5-coder-0.5b"})
    reports = []
    async with local_llm(settings) as base_url:
        await warm_persona_prompts(
            base_url, {args.persona: opening_messages(load_persona(args.persona))}
        )
        procs = []
        for i in range(args.sessions):
            out = RESULTS / f"voice_to_voice_{args.sessions}x_{i}.json"
            cmd = [
                sys.executable, "-m", "bench.voice_to_voice", "--turns", str(args.turns),
                "--persona", args.persona, "--assessment", args.assessment,
                "--first-clause", args.first_clause, "--llm-base-url", base_url,
                "--json", str(out), "--tag", f"_{args.sessions}x_{i}",
                *(["--small"] if args.small else []),
            ]  # fmt: skip
            procs.append((out, await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )))  # fmt: skip
        for out, proc in procs:
            if await proc.wait() != 0:
                console.print(f"[red]session writing {out} failed ({proc.returncode})[/]")
                continue
            reports.append(json.loads(out.read_text(encoding="utf-8")))
    table = Table(title=f"{args.sessions} concurrent local sessions on one LLM server")
    for col in ("session", "median ms", "p95 ms", "first turn ms", "answered"):
        table.add_column(col, justify="right")
    for i, r in enumerate(reports):
        lat = r["summary"]["latency_ms"]
        table.add_row(
            str(i + 1), _fmt(lat["median"]), _fmt(lat["p95"]), _fmt(r.get("first_turn_ms")),
            f"{r['summary']['answered']}/{r['turns']}",
        )  # fmt: skip
    console.print(table)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10, help="learner turns (default 10)")
    parser.add_argument("--persona", default="aviation-examiner", help="persona id")
    parser.add_argument("--small", action="store_true", help="use Qwen2.5-Coder 0.5B")
    parser.add_argument("--breakdown", action="store_true", help="per-turn latency split")
    parser.add_argument("--json", type=Path, default=RESULTS / "voice_to_voice.json")
    parser.add_argument("--verbose", "-v", action="store_true", help="INFO logs")
    parser.add_argument(
        "--assessment",
        choices=("on", "off", "both"),
        default="on",
        help="assess each learner turn (the tutoring step); both: run off then on, same run",
    )
    parser.add_argument(
        "--first-clause", choices=("on", "off"), default="on",
        help="speak a reply's first clause as soon as it is complete (Settings.first_clause)",
    )  # fmt: skip
    parser.add_argument(
        "--ablate", action="store_true", help="run without, then with the first-clause lever"
    )
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions (default 1)")
    parser.add_argument("--llm-base-url", default=None, help="use this running LLM server")
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns < 1 or args.sessions < 1:
        parser.error("--turns and --sessions must be at least 1")

    logger.remove()
    logger.add(sys.stderr, level="INFO" if args.verbose else "WARNING")
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    if args.sessions > 1:
        asyncio.run(run_concurrent(args, console))
        return
    if args.ablate:
        medians = {}
        for mode in ("off", "on"):
            report = asyncio.run(run(argparse.Namespace(**{**vars(args), "first_clause": mode})))
            console.print(f"[bold]first clause {mode}[/]")
            print_summary(console, report)
            medians[mode] = report["summary"]["latency_ms"]
        console.print(
            f"first clause off: median {_fmt(medians['off']['median'])} "
            f"p95 {_fmt(medians['off']['p95'])}; on: median {_fmt(medians['on']['median'])} "
            f"p95 {_fmt(medians['on']['p95'])} (same run, same clips)"
        )
    elif args.assessment == "both":
        medians = {}
        for mode in ("off", "on"):
            report = asyncio.run(run(argparse.Namespace(**{**vars(args), "assessment": mode})))
            print_summary(console, report)
            medians[mode] = report["summary"]["latency_ms"]["median"]
        console.print(
            f"median voice-to-voice without assessment {_fmt(medians['off'])}, "
            f"with {_fmt(medians['on'])} (same run, same clips)"
        )
    else:
        report = asyncio.run(run(args))
        print_summary(console, report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    if args.breakdown:
        print_breakdown(console, report)
    console.print(f"[dim]wrote {args.json}[/]")


if __name__ == "__main__":
    main()
