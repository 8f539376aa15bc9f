"""Sessions per core: how many concurrent sessions run in real time without output underruns.

Starts the loopback provider fakes in a process of their own (the "network"), then for each
level N starts N session processes at once (``bench/capacity_session.py``: the production
pipeline with the real Pipecat provider services, no local models), each playing a real
LibriVox recording as the learner in real time for a few turns. The conversations start
once all N have imported and built their pipelines (a server's sessions start from warm
spares), spread over ``--stagger`` seconds. The sessions ask one shared
smart-turn service (``services.turn_service``, as ``voxtutor serve`` runs it), whose CPU is
shared out among them. Prints per level: underruns, sessions with any, voice-to-voice median,
RSS per session process, CPU per session-second (without and with the turn service's share);
and the largest N without underruns beyond the N=1 baseline, per core. Every result (with
the moment of each underrun) goes to ``--json`` (default ``bench/results/capacity.json``).

The project's targets: ≥ 15 sessions per core, ≤ 200 MB RSS per session process.

Usage: ``python -m bench.capacity [--levels 1,4,8,12,16] [--turns 3] [--stack dpe|openai]
[--variants voxtutor,pipecat] [--stagger 12] [--server-cores K]`` (``pipecat``: the baseline
pipeline, see ``bench/capacity_session.py``; with both, the CPU ratio per level is printed).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from testkit.audio import LIBRIVOX

CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"
STAGGER_S = 12.0
"""Default spread (s) of the conversations' starts; sessions do not all start at once."""

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


async def start_turn_service(
    prefix: Sequence[str] = (),
) -> tuple[asyncio.subprocess.Process, str]:
    """Start the shared smart-turn service as ``voxtutor serve`` does; return it and its URL.

    Its CPU is the sessions' (one smart-turn inference per pause, for all of them):
    :func:`attribute_turn_cpu` shares it out per level. ``prefix``: see
    :attr:`Harness.prefix`.
    """
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "services.turn_service", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    return proc, line.decode().strip()


@dataclass
class Harness:
    """What every level of a benchmark shares: the provider fakes and the turn service.

    With ``server_cpus``, what the server runs (the session processes and the turn service)
    is pinned to those CPUs and the rest of the harness (this process, the fakes standing in
    for the network, the callers) to the others, so sessions per core is measured on the
    server's cores alone (``--server-cores``).

    Attributes:
        fakes: The ``bench.fake_providers`` process.
        urls: Its endpoints, as settings names (``openai_base_url``, ...).
        turns: The ``services.turn_service`` process.
        turn_url: Its ``/predict`` URL.
        server_cpus: CPU numbers the server's processes run on; ``None``: not pinned.
    """

    fakes: asyncio.subprocess.Process
    urls: dict[str, str]
    turns: asyncio.subprocess.Process
    turn_url: str
    server_cpus: tuple[int, ...] | None = None

    @classmethod
    async def start(cls, server_cores: int | None = None) -> Harness:
        """Start the fakes and the turn service; pin them apart if ``server_cores`` is given.

        Raises:
            SystemExit: ``server_cores`` leaves no CPU for the harness.
        """
        cpus = sorted(os.sched_getaffinity(0))
        server = None
        if server_cores:
            if server_cores >= len(cpus):
                raise SystemExit(f"--server-cores {server_cores} leaves none of {len(cpus)} CPUs")
            server = tuple(cpus[:server_cores])
            os.sched_setaffinity(0, cpus[server_cores:])  # this process and the fakes
        fakes, urls = await start_fakes()
        prefix = ["taskset", "-c", ",".join(map(str, server))] if server else []
        turns, turn_url = await start_turn_service(prefix)
        return cls(fakes, urls, turns, turn_url, server)

    @property
    def prefix(self) -> list[str]:
        """Command prefix that runs a server process on ``server_cpus`` (empty if unpinned).

        ``taskset`` pins the process before it starts, so every thread it creates
        (ONNX Runtime's included) inherits the CPUs.
        """
        if self.server_cpus is None:
            return []
        return ["taskset", "-c", ",".join(map(str, self.server_cpus))]

    @property
    def cores(self) -> int:
        """Cores the server's processes may use: ``server_cpus``, or the whole machine."""
        return len(self.server_cpus) if self.server_cpus else os.cpu_count() or 1

    async def close(self) -> None:
        """Stop both processes."""
        self.turns.terminate()
        await self.turns.wait()
        if self.fakes.stdin is not None:
            self.fakes.stdin.close()
        await self.fakes.wait()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of process ``pid`` now, MB (Linux ``/proc``)."""
    rss = pss = 0.0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Pss:"):
            pss = int(line.split()[1]) / 1024
    return rss, pss


def attribute_turn_cpu(results: list[dict[str, Any]], turn_cpu_s: float) -> None:
    """Add each good result's share of the turn service's CPU as ``turn_cpu_s``."""
    ok = [r for r in results if "error" not in r]
    for r in ok:
        r["turn_cpu_s"] = turn_cpu_s / len(ok)


def cpu_with_turns(ok: list[dict[str, Any]]) -> str:
    """Table cell: mean CPU % of a core per process, its share of the turn service included."""
    shares = [100 * (r["cpu_s"] + r.get("turn_cpu_s", 0.0)) / r["wall_s"] for r in ok]
    return f"{statistics.mean(shares):.1f}"


async def run_level(
    n: int, cfg: dict[str, Any], prefix: Sequence[str] = (), stagger_s: float = 0.0
) -> list[dict[str, Any]]:
    """Run ``n`` session processes at once; return their result lines.

    Each command runs after ``prefix`` (:attr:`Harness.prefix`). The conversations start
    once every process has built its pipeline, spread evenly over ``stagger_s`` seconds.
    """
    procs = [
        await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "bench.capacity_session",
            json.dumps({**cfg, "barrier": True}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(n)
    ]
    for p in procs:  # all imported and built: a server's warm spares
        assert p.stdout is not None
        await asyncio.wait_for(p.stdout.readline(), 300)
    t0 = time.monotonic()
    for i, p in enumerate(procs):
        await asyncio.sleep(max(0.0, t0 + stagger_s * i / max(n - 1, 1) - time.monotonic()))
        assert p.stdin is not None
        try:
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        except ConnectionError:  # it died while building; communicate() reports why
            pass
    results = []
    for p in procs:
        out, err = await p.communicate()
        if p.returncode != 0 or not out.strip():
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            results.append({"error": " | ".join(tail) or f"exit {p.returncode}"})
        else:
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


Column = tuple[str, Callable[[list[dict[str, Any]]], str]]
"""An extra table column: header, and the cell computed from a level's good results."""


def levels_table(
    rows: list[tuple[int, list[dict[str, Any]]]], noun: str, extra: Sequence[Column] = ()
) -> tuple[Table, int, float | None]:
    """Tabulate benchmark levels; find the largest level without extra underruns.

    Args:
        rows: ``(N, results)`` per level, in the order run; each result is one process's
            measurements (``turns``, ``underruns``, ``max_late_ms``, ``latency_ms``,
            ``rss_mb``, ``pss_mb``, ``cpu_s``, ``wall_s``) or ``{"error": ...}``.
        noun: What N counts (``sessions``, ``calls``): the first column's header.
        extra: Columns added after the common ones.

    Returns:
        The table; the largest N whose processes all finished with no more underruns per
        process than the first level if that is N=1, else than none (0 if no N qualifies); and
        that allowance per process (``None`` if no level had a result).
    """
    table = Table(
        noun,
        "ok",
        "turns",
        "underruns",
        f"{noun} w/ underruns",
        "max late ms",
        "v2v median ms",
        "RSS MB (mean/max)",
        "PSS MB (mean/max)",
        "CPU % of a core (running)",
        *(header for header, _ in extra),
    )
    base_underruns = None
    best = 0
    for n, results in rows:
        ok = [r for r in results if "error" not in r]
        if not ok:
            table.add_row(str(n), f"0/{n}", *["-"] * (8 + len(extra)))
            continue
        under = [r["underruns"] for r in ok]
        per = statistics.mean(under)
        if base_underruns is None:
            # The allowance is one process alone's: without an N=1 level, none.
            base_underruns = per if n == 1 else 0.0
        lat = [r["latency_ms"] for r in ok if r["latency_ms"]]
        rss = [r["rss_mb"] for r in ok]
        pss = [r["pss_mb"] or 0 for r in ok]
        cpu_share = statistics.mean(r["cpu_s"] / r["wall_s"] * 100 for r in ok)
        if len(ok) == n and per <= base_underruns:
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
            f"{statistics.mean(pss):.0f}/{max(pss):.0f}",
            f"{cpu_share:.1f}",
            *(cell(ok) for _, cell in extra),
        )
    return table, best, base_underruns


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,4,8,12,16,24")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--stack", choices=["dpe", "openai"], default="dpe")
    ap.add_argument(
        "--variants",
        default="voxtutor",
        help="comma list of voxtutor (the production pipeline) and pipecat (the baseline: "
        "VAD in Pipecat's thread, input audio through the whole pipeline, every frame event "
        "to every observer), run per level",
    )
    ap.add_argument("--json", type=Path, default=Path("bench/results/capacity.json"))
    ap.add_argument(
        "--stagger",
        type=float,
        default=STAGGER_S,
        help="spread the conversations' starts over S s (0: all at once, the worst case)",
    )
    ap.add_argument(
        "--server-cores",
        type=int,
        default=None,
        help="pin the sessions and the turn service to this many CPUs, the fakes and this "
        "process to the rest; sessions per core is then counted on those CPUs",
    )
    args = ap.parse_args()
    variants = args.variants.split(",")
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        os.environ[name] = "bench-fake-key"  # the fakes accept any key
    console = Console(width=160)
    harness = await Harness.start(args.server_cores)
    cores = harness.cores
    rows: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {v: [] for v in variants}
    try:
        with tempfile.TemporaryDirectory() as home:
            for n in [int(x) for x in args.levels.split(",")]:
                for variant in variants:  # alternating, so drift hits every variant alike
                    cfg = {
                        "home": home,
                        "stack": args.stack,
                        "audio": [str(CLIP)],
                        "turns": args.turns,
                        "variant": variant,
                        # The baseline runs smart-turn in each process, as Pipecat does.
                        "turn_url": harness.turn_url if variant == "voxtutor" else None,
                        **harness.urls,
                    }
                    turn0 = proc_cpu_s(harness.turns.pid)
                    results = await run_level(n, cfg, harness.prefix, args.stagger)
                    attribute_turn_cpu(results, proc_cpu_s(harness.turns.pid) - turn0)
                    rows[variant].append((n, results))
                    ok = [r for r in results if "error" not in r]
                    console.print(
                        f"{variant} N={n}: {len(ok)}/{n} ok, "
                        f"underruns {sum(r['underruns'] for r in ok)}"
                    )
    finally:
        await harness.close()

    args.json.parent.mkdir(parents=True, exist_ok=True)
    raw = {"args": {**vars(args), "json": str(args.json)}, "cores": cores, "rows": rows}
    args.json.write_text(json.dumps(raw, indent=1))
    for variant in variants:
        table, best, base_underruns = levels_table(
            rows[variant], "sessions", extra=[("CPU % incl. turn service", cpu_with_turns)]
        )
        table.title = f"{variant} pipeline, stack {args.stack}"
        console.print(table)
        console.print(
            f"{variant}: {best} concurrent sessions with no more underruns than N=1 "
            f"({base_underruns} per session) on {cores} cores"
            f"{' (pinned: sessions and turn service only)' if harness.server_cpus else ''}"
            f" = {best / cores:.1f} sessions per core (target ≥ 15); RSS target ≤ 200 MB per "
            "session process"
        )
        for n, results in rows[variant]:
            for r in results:
                if "error" in r:
                    console.print(f"[red]{variant} N={n} error:[/] {r['error']}")
    if len(variants) > 1:
        console.print("CPU per session-second, relative to " + variants[-1] + ":")
        for i, (n, _) in enumerate(rows[variants[0]]):
            shares = {v: _cpu_share(rows[v][i][1]) for v in variants}
            base = shares[variants[-1]]
            ratios = ", ".join(
                f"{v} {shares[v]:.1f} % ({shares[v] / base:.2f}x)" for v in variants if base
            )
            console.print(f"  N={n}: {ratios}")


def _cpu_share(results: list[dict[str, Any]]) -> float:
    """Mean CPU per session while talking (its share of the turn service included), % of a core."""
    ok = [r for r in results if "error" not in r and r["wall_s"]]
    return float(cpu_with_turns(ok)) if ok else 0.0


if __name__ == "__main__":
    asyncio.run(main())
