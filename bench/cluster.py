"""Scale-out on NATS: spawn-to-ready through the dispatcher, and capacity on one vs two hosts.

**(a) Spawn-to-ready through the dispatcher.** Starts a NATS server of its own (a private
``nats-server -js`` on a free port unless ``--nats-url`` names one), one API replica
(``voxtutor serve`` with ``VOXTUTOR_NATS_URL``) and two session hosts (``voxtutor host``,
``bench-a`` and ``bench-b``), all on one store (a shared SQLite file, or ``--database-url``),
each process with a ``VOXTUTOR_HOME`` of its own that links the installed models. The hosts
share one LLM: a loopback stub that answers ``GET /v1/models`` (nothing in a session's start
asks more of it; ``VOXTUTOR_LLM_WARM_UP=false``). Once both hosts are registered with a warm
``local`` spare (the ``voxtutor_hosts`` registry), it creates ``--sessions`` sessions one
after another (``POST /api/v1/sessions``, tier ``local``, transport ``webrtc``: the API
answers 201 once the session's process is ready for the browser's offer) and times each
call over HTTP, ending each (``DELETE``, then waiting for ``ended``) and waiting for the
spares to be warm again before the next. The baseline, in the same run: the single-process
default (``voxtutor serve`` without ``VOXTUTOR_NATS_URL``), measured the same way, "warm"
there meaning its ``local`` spare process exists and its process tree has gone quiet.
Target: median ≤ 1.5 s with warm spares.

**(b) Capacity, one host vs two.** Sessions held in real time without output underruns
with one host on one core versus two hosts on one core each. This reuses
:mod:`bench.capacity`'s machinery (the loopback provider fakes, the shared smart-turn
service, ``bench/capacity_session.py`` processes, the strict "no underruns" rule of
:func:`bench.capacity.levels_table`), **not real ``voxtutor host`` processes**: a real
host's sessions are WebRTC sessions, and counting their underruns would need an aiortc
browser per session. Instead each simulated host is what a host runs for its sessions: its
own smart-turn service and its session processes, all pinned to the host's core
(``taskset -c <core>``). The sessions of a level are assigned to the hosts by the
dispatcher's own :func:`runtime.cluster.registry.rank` (equal hosts alternate). Each host's
sessions start after all of them have built their pipelines and are spread over
``--stagger`` seconds, as in ``bench.capacity``; the hosts run side by side. On a machine
with more than two CPUs the provider fakes (the "network") and this process run on the
others; on a 2-CPU machine they cannot, and take CPU from the hosts' cores: with one host
mostly from the idle second core, with two from the hosts themselves, which counts against
two hosts. Each level prints the fakes' CPU and that of processes that are not the
benchmark's (other load on a shared machine). Levels are given per host (``--levels
12,16``: one host runs 12 and 16 sessions, two hosts 24 and 32); the largest level with no
underrun at all counts (:func:`bench.capacity.levels_table` without an N=1 level).
Target: two hosts hold ≥ 1.8x the sessions.

Everything goes to ``--json`` (default ``bench/results/cluster.json``).

Usage: ``python -m bench.cluster [--quick] [--sessions N] [--levels 12,16] [--turns 3]
[--stagger 12] [--parts spawn,capacity] [--nats-url URL] [--database-url URL]
[--limits-url URL] [--keep]`` (the API replica needs shared rate counters: Redis, default
``async+redis://127.0.0.1:6379``)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.capacity import (
    CLIP,
    STAGGER_S,
    Harness,
    attribute_turn_cpu,
    cpu_with_turns,
    levels_table,
    proc_cpu_s,
    run_level,
    start_fakes,
    start_turn_service,
)
from bench.spawn import p95, wait_ended
from runtime.cluster.registry import HostRecord, rank
from testkit.api_support import serve_llm_stub
from testkit.cluster_procs import (
    Proc,
    Registry,
    create_api_key,
    free_port,
    private_nats,
    process_home,
    spare_pids,
    start_host,
    start_serve,
    vox_env,
    wait_idle,
    wait_ready,
)

HOST_IDS = ("bench-a", "bench-b")
SPAWN_TARGET_MS = 1500.0
RATIO_TARGET = 1.8
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY")


# --- (a) spawn-to-ready ---------------------------------------------------------------------


def common_settings(llm_url: str) -> dict[str, Any]:
    """Settings every process of part (a) gets (``VOXTUTOR_*`` via :func:`vox_env`)."""
    return {
        "llm_base_url": llm_url,
        "llm_warm_up": False,
        "reports": False,
        "host_load_threshold": 1000,
        "ops_public": True,
    }


async def create_sessions(
    base_url: str,
    key: str,
    persona: str,
    n: int,
    wait_warm: Any,
    registry: Registry | None = None,
) -> list[dict[str, Any]]:
    """Create ``n`` sessions one after another, each once ``wait_warm()`` returns; time each.

    Returns one row per session: ``ms`` (HTTP round trip of the create), ``status``, and
    ``host`` (the host that ran it, read from the sessions bucket, with ``registry``).
    """
    headers = {"Authorization": f"Bearer {key}"}
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        r = await http.post(
            "/api/v1/learners", json={"name": "Bench", "target_language": "en"}, headers=headers
        )
        r.raise_for_status()
        learner = r.json()["id"]
        body = {"persona": persona, "tier": "local", "transport": "webrtc", "learner_id": learner}
        for _ in range(n):
            await wait_warm()
            t0 = time.perf_counter()
            r = await http.post("/api/v1/sessions", json=body, headers=headers)
            ms = (time.perf_counter() - t0) * 1000
            if r.status_code != 201:
                raise RuntimeError(f"POST /api/v1/sessions: {r.status_code} {r.text}")
            sid = r.json()["session_id"]
            host = await registry.session_host(sid) if registry is not None else None
            await http.delete(f"/api/v1/sessions/{sid}", headers=headers)
            await wait_ended(http, sid, headers)
            status = (await http.get(f"/api/v1/sessions/{sid}", headers=headers)).json()["status"]
            rows.append({"ms": round(ms, 1), "host": host, "status": status})
    return rows


async def spawn_cluster(
    root: Path,
    nats_url: str,
    database_url: str,
    llm_url: str,
    persona: str,
    n: int,
    limits_url: str,
) -> dict[str, Any]:
    """Part (a) through the dispatcher: one API replica, two hosts (see the docstring).

    ``limits_url``: the replica's shared rate counters (``VOXTUTOR_LIMITS_URL``, Redis).
    """
    key = await create_api_key(database_url)
    port = free_port()
    base = common_settings(llm_url) | {"nats_url": nats_url}
    logs = root / "logs"
    procs: list[Proc] = []
    try:
        for host_id in HOST_IDS:
            env = vox_env(process_home(root, host_id), database_url, **base, host_id=host_id)
            procs.append(await start_host(env, logs, f"host-{host_id}"))
        env = vox_env(
            process_home(root, "api"), database_url, **base, port=port, limits_url=limits_url
        )
        api = await start_serve(env, logs, "api")
        procs.append(api)
        async with Registry(nats_url) as registry:
            t0 = time.monotonic()
            await registry.wait_hosts(HOST_IDS, warm="local", timeout_s=240, procs=procs)
            started_s = time.monotonic() - t0
            ready = await wait_ready(f"http://127.0.0.1:{port}", api)

            async def warm() -> None:
                await registry.wait_hosts(HOST_IDS, warm="local", timeout_s=120, procs=procs)
                await wait_idle([p.pid for p in procs], idle_s=1.0, timeout_s=60)

            rows = await create_sessions(
                f"http://127.0.0.1:{port}", key, persona, n, warm, registry
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                metrics = (await http.get("/metrics")).text
    finally:
        for p in procs:  # SIGINT: a host stops at once (SIGTERM would drain)
            await p.stop(signal.SIGINT if p.name.startswith("host") else signal.SIGTERM)
    host_lines = [ln for ln in metrics.splitlines() if ln.startswith("voxtutor_host_")]
    return {
        "rows": rows,
        "hosts_warm_after_s": round(started_s, 1),
        "readyz": ready,
        "host_metrics": host_lines,
    }


async def spawn_single(
    root: Path, database_url: str, llm_url: str, persona: str, n: int
) -> dict[str, Any]:
    """Part (a)'s baseline: the single-process default ``voxtutor serve``."""
    key = await create_api_key(database_url)
    port = free_port()
    env = vox_env(process_home(root, "single"), database_url, **common_settings(llm_url), port=port)
    api = await start_serve(env, root / "logs", "single")
    try:
        await wait_ready(f"http://127.0.0.1:{port}", api)

        async def warm() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # noqa: ASYNC110 (polling another process)
                if spare_pids(api.pid, "local") and await wait_idle([api.pid], timeout_s=60):
                    return
                await asyncio.sleep(0.2)
            raise RuntimeError(f"no warm local spare after 120 s:\n{api.log_tail()}")

        rows = await create_sessions(f"http://127.0.0.1:{port}", key, persona, n, warm)
    finally:
        await api.stop()
    return {"rows": rows}


def spawn_table(results: dict[str, dict[str, Any]]) -> Table:
    """Median, p95 and max of each path's create round trips, ms."""
    table = Table(
        "path",
        "sessions",
        "median ms",
        "p95 ms",
        "max ms",
        "hosts used",
        title=f"spawn-to-ready (POST /api/v1/sessions → 201), target median ≤ "
        f"{SPAWN_TARGET_MS:.0f} ms",
    )
    for name, res in results.items():
        ms = [r["ms"] for r in res["rows"]]
        hosts = sorted({str(r["host"]) for r in res["rows"] if r.get("host")}) or ["-"]
        table.add_row(
            name,
            str(len(ms)),
            f"{statistics.median(ms):.0f}",
            f"{p95(ms):.0f}",
            f"{max(ms):.0f}",
            ", ".join(hosts),
        )
    return table


# --- (b) capacity, one host vs two ---------------------------------------------------------


def assign(n: int, host_ids: list[str]) -> dict[str, int]:
    """Sessions per host when ``n`` are dispatched one by one by :func:`rank`.

    Every host starts idle with a warm ``cloud`` spare (the kind of the benchmark's
    cloud-style sessions) and room for all ``n``.
    """
    active = dict.fromkeys(host_ids, 0)
    for _ in range(n):
        records = [
            HostRecord(h, max_sessions=n, active=a, free={"cloud": n - a}, warm=["cloud"])
            for h, a in active.items()
        ]
        active[rank(records, "cloud")[0].host_id] += 1
    return active


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot, all cores (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s(procs: list[asyncio.subprocess.Process]) -> float:
    """CPU seconds of this process, its reaped children and the live ``procs``."""
    t = os.times()
    return (
        t.user
        + t.system
        + t.children_user
        + t.children_system
        + sum(proc_cpu_s(p.pid) for p in procs)
    )


async def capacity_level(
    n: int, hosts: list[Harness], args: argparse.Namespace, home: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``n`` sessions over ``hosts`` (each its core and turn service) at once.

    Returns every session's result (with its host as ``host``) and the level's facts:
    sessions per host, wall time, and the CPU of the fakes and of processes that are not
    this benchmark's (other load on the machine), in % of a core.
    """
    shares = assign(n, [f"core{h.server_cpus[0]}" for h in hosts if h.server_cpus])
    fakes = hosts[0].fakes
    services = [fakes, *(h.turns for h in hosts)]
    fakes0, turn0 = proc_cpu_s(fakes.pid), [proc_cpu_s(h.turns.pid) for h in hosts]
    busy0, own0, t0 = machine_busy_s(), own_cpu_s(services), time.monotonic()

    async def one(h: Harness, k: int) -> list[dict[str, Any]]:
        cfg = {
            "home": home,
            "stack": "dpe",
            "audio": [str(CLIP)],
            "turns": args.turns,
            "variant": "voxtutor",
            "turn_url": h.turn_url,
            **h.urls,
        }
        return await run_level(k, cfg, h.prefix, args.stagger) if k else []

    jobs = (one(h, k) for h, k in zip(hosts, shares.values(), strict=True))
    per_host = await asyncio.gather(*jobs)
    wall = time.monotonic() - t0
    other = machine_busy_s() - busy0 - (own_cpu_s(services) - own0)
    results: list[dict[str, Any]] = []
    for h, turn_s, res, host_id in zip(hosts, turn0, per_host, shares, strict=True):
        attribute_turn_cpu(res, proc_cpu_s(h.turns.pid) - turn_s)
        results.extend({**r, "host": host_id} for r in res)
    other_pct = round(100 * max(0.0, other) / wall, 1)
    for r in results:
        r["other_pct"] = other_pct  # the level's, for the table
    facts = {
        "n": n,
        "per_host": shares,
        "wall_s": round(wall, 1),
        "fakes_pct": round(100 * (proc_cpu_s(fakes.pid) - fakes0) / wall, 1),
        "other_pct": other_pct,
    }
    return results, facts


async def capacity(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Part (b): the levels on one host (core 0), then on two (cores 0 and 1)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("part (b) needs 2 CPUs")
    os.environ.update(dict.fromkeys(PROVIDER_KEYS, "bench-fake-key"))  # the fakes take any
    per_host = [int(x) for x in args.levels.split(",")]
    out: dict[str, Any] = {"levels_per_host": per_host, "configs": {}}
    if len(cpus) > 2:  # the fakes and this process keep off the hosts' cores
        os.sched_setaffinity(0, cpus[2:])
    out["harness_cpus"] = cpus[2:] or "unpinned (shares the hosts' cores)"
    fakes, urls = await start_fakes()
    hosts: list[Harness] = []
    try:
        for cpu in cpus[:2]:
            prefix = ["taskset", "-c", str(cpu)]
            turns, turn_url = await start_turn_service(prefix)
            hosts.append(Harness(fakes, urls, turns, turn_url, (cpu,)))
        with tempfile.TemporaryDirectory() as home:
            for k in (1, 2):
                rows: list[tuple[int, list[dict[str, Any]]]] = []
                levels = []
                for level in per_host:
                    results, facts = await capacity_level(level * k, hosts[:k], args, home)
                    rows.append((facts["n"], results))
                    levels.append({**facts, "results": results})
                    ok = [r for r in results if "error" not in r]
                    console.print(
                        f"{k} host(s), N={facts['n']} {facts['per_host']}: {len(ok)}/"
                        f"{facts['n']} ok, underruns {sum(r['underruns'] for r in ok)}; fakes "
                        f"{facts['fakes_pct']:.0f} %, other processes {facts['other_pct']:.0f} % "
                        f"of a core; {facts['wall_s']:.0f} s"
                    )
                table, best, _ = levels_table(
                    rows,
                    "sessions",
                    extra=[
                        ("CPU % incl. turn service", cpu_with_turns),
                        ("other procs % core", lambda ok: f"{ok[0]['other_pct']:.0f}"),
                    ],
                )
                table.title = f"{k} host(s), pinned to CPU {','.join(map(str, cpus[:k]))}"
                out["configs"][f"{k}"] = {
                    "best": best,
                    "cores": cpus[:k],
                    "levels": levels,
                    "table": table,
                }
    finally:
        for h in hosts:
            await h.close()
        if not hosts:
            if fakes.stdin is not None:
                fakes.stdin.close()
            await fakes.wait()
    return out


def underruns_per_session(results: list[dict[str, Any]]) -> float:
    """Mean underruns of the sessions that finished (0 when none did)."""
    ok = [r["underruns"] for r in results if "error" not in r]
    return statistics.mean(ok) if ok else 0.0


# --- main ------------------------------------------------------------------------------------


async def main() -> None:
    """Parse the options, run the parts, print the tables, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a short run: 3 sessions per path, levels 4 per host, 1 turn, "
        "stagger 4 s (about 4 min)",
    )
    ap.add_argument("--sessions", type=int, default=None, help="sessions per path in (a)")
    ap.add_argument("--persona", default="aviation-examiner")
    ap.add_argument("--levels", default=None, help="sessions per host in (b), comma list")
    ap.add_argument("--turns", type=int, default=None, help="learner turns per session in (b)")
    ap.add_argument("--stagger", type=float, default=None, help="see bench.capacity")
    ap.add_argument("--parts", default="spawn,capacity")
    ap.add_argument(
        "--nats-url",
        default=None,
        help="use this NATS server (default: start a private nats-server)",
    )
    ap.add_argument(
        "--database-url", default=None, help="the store of (a) (default: a SQLite file per path)"
    )
    ap.add_argument(
        "--limits-url",
        default="async+redis://127.0.0.1:6379",
        help="the API replica's shared rate counters (VOXTUTOR_LIMITS_URL)",
    )
    ap.add_argument("--json", type=Path, default=Path("bench/results/cluster.json"))
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (logs, homes, databases) and print it",
    )
    args = ap.parse_args()
    quick = args.quick
    args.sessions = args.sessions or (3 if quick else 10)
    args.levels = args.levels or ("4" if quick else "12,16")
    args.turns = args.turns or (1 if quick else 3)
    args.stagger = args.stagger if args.stagger is not None else (4.0 if quick else STAGGER_S)
    parts = set(args.parts.split(","))
    console = Console(width=160)
    raw: dict[str, Any] = {
        "args": {**vars(args), "json": str(args.json)},
        "cpus": len(os.sched_getaffinity(0)),
    }
    spawn: dict[str, dict[str, Any]] = {}
    cap: dict[str, Any] = {}
    workdir: Any = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="bench-cluster-"))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="bench-cluster-")
    )
    with workdir as tmp:
        root = Path(tmp)
        if args.keep:
            console.print(f"work directory: {root}")
        if "spawn" in parts:
            async with AsyncExitStack() as stack:
                nats_url = args.nats_url or await stack.enter_async_context(private_nats(root))
                llm_url = stack.enter_context(serve_llm_stub())
                for name in ("cluster", "single"):
                    db = args.database_url or f"sqlite+aiosqlite:///{root / name}.db"
                    console.print(f"(a) {name}: starting")
                    if name == "cluster":
                        res = await spawn_cluster(
                            root / name,
                            nats_url,
                            db,
                            llm_url,
                            args.persona,
                            args.sessions,
                            args.limits_url,
                        )
                    else:
                        res = await spawn_single(
                            root / name, db, llm_url, args.persona, args.sessions
                        )
                    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
                    console.print(
                        f"(a) {name}: {[r['ms'] for r in res['rows']]} ms; load average "
                        f"{res['loadavg_after'][0]} on {os.cpu_count()} CPUs"
                    )
                    spawn[name] = res
            raw["spawn"] = spawn
        if "capacity" in parts:
            cap = await capacity(args, console)
            raw["capacity"] = {
                "levels_per_host": cap["levels_per_host"],
                "harness_cpus": cap["harness_cpus"],
                "configs": {
                    k: {kk: vv for kk, vv in v.items() if kk != "table"}
                    for k, v in cap["configs"].items()
                },
            }
    if spawn:
        console.print(
            spawn_table(
                {
                    "API replica → 2 hosts (NATS)": spawn["cluster"],
                    "single process (default)": spawn["single"],
                }
            )
        )
        med = statistics.median(r["ms"] for r in spawn["cluster"]["rows"])
        console.print(
            f"through the dispatcher: median {med:.0f} ms against the target ≤ "
            f"{SPAWN_TARGET_MS:.0f} ms: {'met' if med <= SPAWN_TARGET_MS else 'NOT met'}"
        )
    if cap:
        for cfg in cap["configs"].values():
            console.print(cfg["table"])
        for k, cfg in cap["configs"].items():
            per = ", ".join(
                f"N={lv['n']} {underruns_per_session(lv['results']):.1f}" for lv in cfg["levels"]
            )
            console.print(f"underruns per session, {k} host(s): {per}")
        one, two = cap["configs"]["1"]["best"], cap["configs"]["2"]["best"]
        ratio = two / one if one else None
        raw["capacity"]["ratio"] = ratio
        verdict = "n/a" if ratio is None else ("met" if ratio >= RATIO_TARGET else "NOT met")
        console.print(
            f"largest N with no underruns: 1 host (1 core) {one}, 2 hosts (2 cores) {two}; "
            f"ratio {ratio if ratio is None else f'{ratio:.2f}'} against the target ≥ "
            f"{RATIO_TARGET}: {verdict}. Simulated hosts: capacity_session processes and a "
            "turn service pinned per host core, dispatched by rank(); fakes and benchmark "
            f"on CPUs {cap['harness_cpus']}."
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(raw, indent=1, default=str))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
