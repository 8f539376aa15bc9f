"""Memory of real server session processes: ``runtime.session_process`` on a cloud tier over WebRTC.

``bench.capacity`` and ``bench.phone`` measure the pipeline behind a file transport or the
phone socket. This measures what ``voxtutor serve`` runs for a browser: the session starts
from the warm ``cloud`` spare (imports done), builds the tier's real failover chains (for
``dpe_live``: Deepgram → OpenAI → local Whisper, Claude → OpenAI → local, Cartesia → Deepgram
→ OpenAI → Piper → text) against the loopback fakes, asks the shared smart-turn service, and
talks to aiortc playing the browser: the greeting, then a LibriVox clip per learner turn.
The session process's RSS is sampled every 0.2 s until ``--turns`` replies are stored.

With ``--transport twilio`` the session is a phone call instead: it starts from the ``phone``
spare and a protocol-level Twilio caller (``bench.phone.Caller``) talks to the session's media
socket directly (the server's relay is left out).

Usage: ``python -m bench.session_memory [--tier dpe_live] [--turns 3] [--transport webrtc|
twilio]``. Takes about 1 min.
Prints the idle cloud spare's RSS, the session's RSS when ready, its peak and last sampled
RSS, its PSS at the end, and the turns stored. The project's target: ≤ 200 MB per session.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from bench.capacity import CLIP, memory_mb, start_fakes
from contracts.session_spec import SessionSpec
from runtime.supervisor import SessionSupervisor
from store import Store
from transports.file import load_learner_audio

SETTING_OF_FAKE = {
    "openai_base_url": "VOXTUTOR_OPENAI_BASE_URL",
    "anthropic_base_url": "VOXTUTOR_ANTHROPIC_BASE_URL",
    "deepgram_base_url": "VOXTUTOR_DEEPGRAM_BASE_URL",
    "cartesia_url": "VOXTUTOR_CARTESIA_URL",
}
"""The fakes' endpoints → the variables the session process reads them from."""


async def run(tier: str, turns: int, transport: str, console: Console) -> None:
    """Start one session as the server does and report its memory (see the module doc)."""
    from bench.phone import Caller, Speech
    from runtime.supervisor import spare_kind
    from services.turn_service import TurnService
    from testkit.phone_support import CarrierCall
    from testkit.webrtc_peer import SpeechTrack, connect

    fakes, urls = await start_fakes()
    for key, var in SETTING_OF_FAKE.items():
        os.environ[var] = urls[key]
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        os.environ[name] = "bench-fake-key"  # the fakes accept any key
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/vox.db"
        store = await Store.open(url)
        key, _ = await store.create_api_key("bench")
        learner = await store.create_learner(key.id, "Pat", "en")
        async with TurnService() as turn_service:
            sup = SessionSupervisor(
                store,
                max_sessions=1,
                log_dir=Path(tmp) / "logs",
                spares=(spare_kind(tier, transport),),
                turn_url=turn_service.url,
            )
            try:
                sup.start_spare()
                await sup.wait_spares()
                await asyncio.sleep(2)  # let the spare settle, as on an idle server
                [spare_pid] = sup.spare_pids().values()
                spare_rss, _ = memory_mb(spare_pid)
                info, _ = await store.create_session(
                    learner.id, key.id, "aviation-examiner", tier, transport
                )
                spec = SessionSpec(
                    session_id=info.id,
                    persona="aviation-examiner",
                    tier=tier,
                    transport=transport,  # type: ignore[arg-type]
                    llm_base_url="http://127.0.0.1:9/v1",  # the local LLM backup stays unused
                )
                await sup.spawn(spec)
                pid = sup.pid(info.id)
                assert pid is not None
                ready_rss, _ = memory_mb(pid)
                samples: list[float] = []

                async def sample() -> None:
                    while True:
                        samples.append(memory_mb(pid)[0])
                        await asyncio.sleep(0.2)

                sampler = asyncio.create_task(sample())
                answered = 0
                if transport == "webrtc":
                    # The learner speaks after the greeting, then after each reply (12 s apart).
                    clip = np.repeat(load_learner_audio(CLIP, 16000), 3)  # 16 → 48 kHz
                    gap = np.zeros(48000 * 12, dtype=np.int16)
                    speech = np.concatenate([np.concatenate([clip, gap]) for _ in range(turns)])
                    pc, _ = await connect(sup, info.id, SpeechTrack(speech, delay_s=8.0))
                    deadline = time.monotonic() + 30 + 15 * turns
                    while time.monotonic() < deadline and answered < turns:
                        await asyncio.sleep(1)
                        stored = await store.list_turns(info.id)
                        answered = sum(1 for t in stored if t.role == "bot" and t.latency_ms)
                    await pc.close()
                else:
                    url = sup.ready_info(info.id)["phone_url"]
                    caller = Caller(CarrierCall(transport, url, call_id="CAbench"))
                    await caller.run(Speech.load(CLIP), turns, 0.0)
                    answered = caller.answered
                _, pss = memory_mb(pid)
                sampler.cancel()
            finally:
                await sup.shutdown()
        await store.close()
    if fakes.stdin is not None:
        fakes.stdin.close()
    await fakes.wait()
    console.print(
        f"{tier} over {transport}: spare idle {spare_rss:.0f} MB RSS; session ready "
        f"{ready_rss:.0f} MB; during {answered} answered turns peak {max(samples):.0f} MB, "
        f"last {samples[-1]:.0f} MB; PSS at the end {pss:.0f} MB (target ≤ 200 MB RSS)"
    )


def main() -> None:
    """Parse the arguments and run (see the module docstring)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--tier", default="dpe_live")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--transport", choices=["webrtc", "twilio"], default="webrtc")
    args = ap.parse_args()
    asyncio.run(run(args.tier, args.turns, args.transport, Console(width=160)))


if __name__ == "__main__":
    main()
