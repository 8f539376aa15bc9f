"""Sessions per core: how many concurrent sessions run in real time without output underruns.

Starts the loopback provider fakes in a process of their own (the "network"), then for each
level N starts N session processes at once (``bench/capacity_session.py``: the production
pipeline with the real Pipecat provider services, no local models), each playing a real
LibriVox recording as the learner in real time for a few turns. Prints per level: underruns,
sessions with any, voice-to-voice median, RSS per session process, CPU per session-second;
and the largest N without underruns beyond the N=1 baseline, per core.

Targets (issue 3): ≥ 15 sessions per core, ≤ 200 MB RSS per session process.

Usage: ``python -m bench.capacity [--levels 1,4,8,12,16] [--turns 3] [--stack dpe|openai]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"
REPLY = (
    "Good. Before a night flight you also need position lights and an anti-collision light. "
    "What are the recency requirements for carrying passengers at night?"
)


async def start_fakes() -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Start ``bench.fake_providers`` and return it with its endpoints."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fake_providers",
        REPLY,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    return proc, json.loads(line)


async def run_level(n: int, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``n`` session processes at once; return their result lines."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.capacity_session",
            json.dumps(cfg),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(n)
    ]
    results = []
    for p in procs:
        out, err = await p.communicate()
        if p.returncode != 0 or not out.strip():
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            results.append({"error": " | ".join(tail) or f"exit {p.returncode}"})
        else:
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,4,8,12,16,24")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--stack", choices=["dpe", "openai"], default="dpe")
    args = ap.parse_args()
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        os.environ[name] = "bench-fake-key"  # the fakes accept any key
    console = Console(width=160)
    cores = os.cpu_count() or 1
    fakes, urls = await start_fakes()
    rows: list[tuple[int, list[dict[str, Any]], float]] = []
    try:
        with tempfile.TemporaryDirectory() as home:
            cfg = {"home": home, "stack": args.stack, "audio": [str(CLIP)], "turns": args.turns}
            cfg.update(urls)
            for n in [int(x) for x in args.levels.split(",")]:
                started = time.monotonic()
                results = await run_level(n, cfg)
                rows.append((n, results, time.monotonic() - started))
                ok = [r for r in results if "error" not in r]
                console.print(
                    f"N={n}: {len(ok)}/{n} ok, underruns {sum(r['underruns'] for r in ok)}"
                )
    finally:
        if fakes.stdin is not None:
            fakes.stdin.close()
        await fakes.wait()

    table = Table(
        "sessions",
        "ok",
        "turns",
        "underruns",
        "sessions w/ underruns",
        "max late ms",
        "v2v median ms",
        "RSS MB (mean/max)",
        "PSS MB (mean)",
        "CPU % of a core (running)",
    )
    base_underruns = None
    best = 0
    for n, results, _wall in rows:
        ok = [r for r in results if "error" not in r]
        if not ok:
            table.add_row(str(n), "0", *["-"] * 8)
            continue
        under = [r["underruns"] for r in ok]
        per = statistics.mean(under)
        if base_underruns is None:
            base_underruns = per
        lat = [r["latency_ms"] for r in ok if r["latency_ms"]]
        rss = [r["rss_mb"] for r in ok]
        cpu_share = statistics.mean(r["cpu_s"] / r["wall_s"] * 100 for r in ok)
        clean = len(ok) == n and per <= base_underruns
        if clean:
            best = max(best, n)
        table.add_row(
            str(n),
            f"{len(ok)}/{n}",
            str(sum(r["turns"] for r in ok)),
            str(sum(under)),
            str(sum(u > 0 for u in under)),
            f"{max(r['max_late_ms'] for r in ok):.0f}",
            f"{statistics.median(lat):.0f}" if lat else "-",
            f"{statistics.mean(rss):.0f}/{max(rss):.0f}",
            f"{statistics.mean(r['pss_mb'] or 0 for r in ok):.0f}",
            f"{cpu_share:.1f}",
        )
    console.print(table)
    console.print(
        f"stack {args.stack}: {best} concurrent sessions with no more underruns than N=1 "
        f"({base_underruns} per session) on {cores} cores = {best / cores:.1f} sessions per core "
        "(target ≥ 15); RSS target ≤ 200 MB per session process"
    )
    for n, results, _ in rows:
        for r in results:
            if "error" in r:
                console.print(f"[red]N={n} error:[/] {r['error']}")


if __name__ == "__main__":
    asyncio.run(main())
