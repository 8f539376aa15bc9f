"""Spawn-to-ready latency: API call → session process ready to hear, median and p95.

Runs the real app (``server.create_app`` with its default runtime: llama.cpp server, session
supervisor with a warm spare process) in-process, creates N sessions one after another
through ``POST /api/v1/sessions`` and times each call (it returns once the session's process
is ready for the browser's offer), ending each session before the next. As a baseline in
the same run, it times N spawns by a supervisor without a spare process (a cold Python
process per session). The project's target: median ≤ 1.5 s with a warm server.

Usage: ``python -m bench.spawn [--sessions N] [--persona ID]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from config.settings import Settings
from contracts.session_spec import SessionSpec
from runtime.supervisor import SessionSupervisor
from server import create_app
from store import Store


def p95(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]
    )


async def wait_ended(http: httpx.AsyncClient, sid: str, headers: dict[str, str]) -> None:
    for _ in range(120):
        r = await http.get(f"/api/v1/sessions/{sid}", headers=headers)
        if r.json()["status"] in ("ended", "failed"):
            return
        await asyncio.sleep(0.25)


async def through_api(settings: Settings, persona: str, n: int) -> list[float]:
    async with await Store.open(settings.store_url) as store:
        _, key = await store.create_api_key("bench")
    headers = {"Authorization": f"Bearer {key}"}
    app = create_app(settings)
    times: list[float] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://vox", timeout=120
        ) as http:
            r = await http.post(
                "/api/v1/learners", json={"name": "Bench", "target_language": "en"}, headers=headers
            )
            learner = r.json()["id"]
            await asyncio.sleep(8)  # let the first spare preload, as on a warm server
            for _ in range(n):
                t0 = time.perf_counter()
                r = await http.post(
                    "/api/v1/sessions",
                    json={"persona": persona, "tier": "local", "transport": "webrtc",
                          "learner_id": learner},
                    headers=headers,
                )  # fmt: skip
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
                sid = r.json()["session_id"]
                await http.delete(f"/api/v1/sessions/{sid}", headers=headers)
                await wait_ended(http, sid, headers)
                await asyncio.sleep(6)  # the next spare preloads while the server is idle
    return times


async def cold_baseline(settings: Settings, persona: str, n: int) -> list[float]:
    from pipelines.local import local_llm

    times: list[float] = []
    async with await Store.open(settings.store_url) as store, local_llm(settings) as url:
        key, _ = await store.create_api_key("cold")
        learner = await store.create_learner(key.id, "Cold", "en")
        sup = SessionSupervisor(store, max_sessions=1, log_dir=settings.home / "logs" / "bench")
        for _ in range(n):
            info, _token = await store.create_session(
                learner.id, key.id, persona, "local", "webrtc"
            )
            t0 = time.perf_counter()
            await sup.spawn(
                SessionSpec(info.id, persona, "local", "webrtc", settings.store_url, url)
            )
            times.append(time.perf_counter() - t0)
            await sup.shutdown()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--persona", default="aviation-examiner")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            llm_model="qwen2.5-coder-0.5b",
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            max_sessions=2,
        )
        warm = await through_api(settings, args.persona, args.sessions)
        cold = await cold_baseline(settings, args.persona, args.sessions)
    table = Table(title=f"spawn-to-ready, {args.persona}, {args.sessions} sessions (s)")
    for col in ("path", "median", "p95", "max"):
        table.add_column(col, justify="right")
    for name, v in (("API, warm spare", warm), ("supervisor, cold process", cold)):
        table.add_row(name, f"{statistics.median(v):.3f}", f"{p95(v):.3f}", f"{max(v):.3f}")
    console = Console()
    console.print(table)
    ratio = statistics.median(warm) / statistics.median(cold)
    console.print(f"warm/cold median ratio {ratio:.3f}; target: API median ≤ 1.5 s")


if __name__ == "__main__":
    asyncio.run(main())
