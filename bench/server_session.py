"""Voice-to-voice of a real server session on the local tier, first turn on its own.

``bench.voice_to_voice`` measures ``voxtutor session`` (a file transport). This measures what
``voxtutor serve`` runs for a browser: one llama.cpp server (the default 1.5B model) and the
smart-turn service, as :func:`api.runtime.default_runtime` starts them; the persona prompts
warmed in that server as it does; a session started from the warm ``local`` spare
(``runtime.session_process``: Whisper, the tutoring step, Piper) talking to aiortc playing the
browser: the greeting, then a LibriVox clip per learner turn. The stored turns' ``latency_ms``
(learner's last word → first bot audio, Pipecat's ``UserBotLatencyObserver``) are the numbers.

It runs twice in one go, each with a fresh LLM server: without the persona prompt warm-up
(``VOXTUTOR_LLM_WARM_UP=false``: what a server session's first turn cost before) and with it.

Usage: ``python -m bench.server_session [--turns 4] [--persona aviation-examiner]``. About
4 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.voice_to_voice import load_clips, median_p95
from config.personas import list_personas, load_persona
from config.settings import Settings
from contracts.session_spec import SessionSpec
from pipelines.local import local_llm, opening_messages, warm_persona_prompts
from runtime.supervisor import SessionSupervisor, spare_kind
from services.turn_service import TurnService
from store import Store
from testkit.webrtc_peer import SpeechTrack, connect
from transports.file import load_learner_audio

GAP_S = 22.0
"""Silence after each clip: the examiner's reply (verdict, then the next question) fits in it."""


async def run(persona: str, turns: int, warm: bool) -> list[int]:
    """One server session; the latency (ms) of each answered learner turn, in order."""
    os.environ["VOXTUTOR_LLM_WARM_UP"] = "true" if warm else "false"
    settings = Settings()
    clips = [p for p, _ in load_clips()][:turns]
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp}/vox.db")
        key, _ = await store.create_api_key("bench")
        learner = await store.create_learner(key.id, "Pat", "en")
        async with local_llm(settings) as base_url, TurnService() as turn_service:
            if warm:  # what default_runtime does at start
                openings = {p: opening_messages(load_persona(p)) for p in list_personas()}
                await warm_persona_prompts(base_url, openings)
            sup = SessionSupervisor(
                store,
                max_sessions=1,
                log_dir=Path(tmp) / "logs",
                spares=(spare_kind("local", "webrtc"),),
                turn_url=turn_service.url,
            )
            try:
                sup.start_spare()
                await sup.wait_spares()
                info, _ = await store.create_session(learner.id, key.id, persona, "local", "webrtc")
                spec = SessionSpec(
                    session_id=info.id,
                    persona=persona,
                    tier="local",
                    transport="webrtc",
                    llm_base_url=base_url,
                )
                await sup.spawn(spec)
                gap = np.zeros(int(48000 * GAP_S), dtype=np.int16)
                speech = np.concatenate(
                    [
                        np.concatenate([np.repeat(load_learner_audio(c, 16000), 3), gap])
                        for c in clips
                    ]
                )  # 16 → 48 kHz
                pc, _ = await connect(sup, info.id, SpeechTrack(speech, delay_s=10.0))
                deadline = time.monotonic() + 60 + (GAP_S + 10) * turns
                latencies: list[int] = []
                while time.monotonic() < deadline and len(latencies) < turns:
                    await asyncio.sleep(1)
                    stored = await store.list_turns(info.id)
                    latencies = [t.latency_ms for t in stored if t.role == "bot" and t.latency_ms]
                await pc.close()
            finally:
                await sup.shutdown()
        await store.close()
    return latencies


def main() -> None:
    """Parse the arguments, run without and with the warm-up, print the table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--persona", default="aviation-examiner")
    args = ap.parse_args()
    rows: dict[str, Any] = {}
    for warm in (False, True):
        rows["warm-up on" if warm else "warm-up off"] = asyncio.run(
            run(args.persona, args.turns, warm)
        )
    table = Table(title=f"Server session, local tier, {args.persona}, {os.cpu_count()} cores")
    for col in ("configuration", "first turn ms", "later median ms", "later p95 ms", "all"):
        table.add_column(col, justify="right")
    for name, lat in rows.items():
        med, p95 = median_p95([float(v) for v in lat[1:]])
        table.add_row(
            name,
            str(lat[0]) if lat else "–",
            "–" if med is None else f"{med:.0f}",
            "–" if p95 is None else f"{p95:.0f}",
            " ".join(map(str, lat)),
        )
    Console(width=140).print(table)
    if all(rows.values()):
        print(f"median of all turns: {[statistics.median(v) for v in rows.values()]}")


if __name__ == "__main__":
    main()
