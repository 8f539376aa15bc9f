"""What the learner memory costs: prompt size, first-turn prompt evaluation, model read, report.

For learners with 0 (the baseline: a new learner, no memory), 10, 100 and 1,000 stored
mistakes (long sentences and rules, two categories) it prints:

- the opening prompt a session sends (system prompt, learner record, few-shot turns,
  greeting) in characters and in the local model's tokens;
- how long the local LLM server takes to evaluate that opening cold (what a session's
  warm-up, or else its first turn, pays), on the default 1.5B model;
- how long reading the learner model and due items from SQLite takes (the API does it for
  every session start);
- how long the report job takes on the local model for a ten-turn session, and its summary.

Usage: ``python -m bench.memory``. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from llama_cpp import Llama
from rich.console import Console
from rich.table import Table

from config.personas import load_persona
from config.settings import Settings, get_settings
from pipelines.local import local_llm, opening_messages
from pipelines.memory import memory_from_model, memory_messages, persona_for
from runtime.report_jobs import ReportWorker
from services.llama_server import warm_up
from store import Store
from testkit.memory import learner_with_mistakes
from weights.registry import model_path

SIZES = (0, 10, 100, 1000)


async def seed(store: Store, key_id: str, n: int) -> tuple[str, str]:
    """A learner with ``n`` mistakes over one ended session (ten learner turns)."""
    return await learner_with_mistakes(
        store,
        key_id,
        n,
        name=f"Learner {n}",
        interests=["Fußball"],
        wrong="Am Montag {i} fahre ich mit der Bus zu meine Oma nach Hamburg und Berlin.",
        rule="mit always takes the dative case in German " * 2,
        learner_turns=10,
    )


async def main() -> None:
    """Seed the learners, then measure and print."""
    settings = get_settings()
    persona = load_persona("german-tutor")
    vocab = Llama(
        str(model_path(settings.llm_model, settings.home)), vocab_only=True, verbose=False
    )

    def tokens(text: str) -> int:
        return len(vocab.tokenize(text.encode("utf-8"), add_bos=False))

    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as home:
        store = await Store.open(f"sqlite:///{Path(home) / 'bench.db'}")
        key, _ = await store.create_api_key("bench")
        learners = {n: await seed(store, key.id, n) for n in SIZES}
        openings = {}
        for n, (lid, _sid) in learners.items():
            t0 = time.perf_counter()
            model = await store.learner_model(lid)
            due = await store.due_review_items(lid)
            read_ms = (time.perf_counter() - t0) * 1000
            memory = memory_from_model(model, [d.to_dict() for d in due]) if n else None
            mine = persona_for(persona, memory)
            openings[n] = opening_messages(mine, "A2", memory_messages(memory))
            text = "\n".join(m["content"] for m in openings[n])
            rows.append([n, len(text), tokens(text), read_ms])
        bench_settings = Settings(home=settings.home, reports=False)
        async with local_llm(bench_settings) as base_url:
            evals = []
            for n in SIZES:
                await warm_up(base_url, [{"role": "user", "content": "x"}])  # reset the cache
                evals.append(await warm_up(base_url, openings[n]))
            sid = learners[10][1]
            t0 = time.perf_counter()
            await ReportWorker(store, bench_settings, base_url).run_one(sid)
            report_s = time.perf_counter() - t0
            job = await store.get_report_job(sid)
        await store.close()
    table = Table(title=f"learner memory ({settings.llm_model}, 2 cores)")
    for col in ("mistakes", "opening chars", "opening tokens", "model read ms", "cold eval s"):
        table.add_column(col, justify="right")
    for row, ev in zip(rows, evals, strict=True):
        label = "0 (baseline: no memory)" if row[0] == 0 else str(row[0])
        table.add_row(label, str(row[1]), str(row[2]), f"{row[3]:.0f}", f"{ev:.2f}")
    console.print(table)
    report = job.report if job and job.report else {}
    console.print(
        f"report job, ten-turn session: {report_s:.1f} s, status "
        f"{job.status if job else None}, summary by {report.get('written_by')}: "
        f"{report.get('summary', '')!r}"
    )


if __name__ == "__main__":
    asyncio.run(main())
