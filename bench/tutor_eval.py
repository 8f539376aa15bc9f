"""How well the tutors correct and the examiner grades: ``python -m bench.tutor_eval``.

Runs the item sets in ``bench/tutor_eval/`` (written for this project: German and Czech
sentences with one planted A1-B1 error or none, examiner answers that are right, partly
right or wrong) through the code path of ``voxtutor assess``
(:func:`pipelines.assessment.assess_texts`) and prints per persona:

- tutors: planted errors corrected (the checked correction equals the expected sentence,
  ignoring punctuation and capitals), correct sentences "corrected" (false corrections),
  corrections the checks dropped;
- examiner: grades right, wrong answers graded other than satisfactory, right answers graded
  satisfactory, and whether the reply after an unsatisfactory grade states the reference;
- the median time the assessment adds to a turn before the tutor can speak, ms, and for
  tutors the median time naming the rules takes afterwards (while the lead is spoken).

The project's targets (local 1.5B model): German ≥ 75 % corrected, Czech ≥ 60 %, false
corrections ≤ 10 %; examiner: wrong answers not satisfactory ≥ 85 %, right answers
satisfactory ≥ 90 %. Nothing is asserted: numbers are printed next to the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from config.acs import load_acs_bank
from config.personas import load_persona
from config.settings import Settings
from pipelines.assessment import TurnAssessor, turn_assessor
from services.assessment.dictionary import words

ITEMS = Path(__file__).resolve().parent / "tutor_eval"
RESULTS = Path(__file__).resolve().parent / "results"
SETS = {
    "german-tutor": "german.yaml",
    "czech-tutor": "czech.yaml",
    "aviation-examiner": "examiner.yaml",
}


def same(a: str, b: str) -> bool:
    """Whether two sentences are the same words (punctuation and capitals ignored)."""
    return [w.casefold() for w in words(a)] == [w.casefold() for w in words(b)]


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f} %)" if d else "-"


async def tutor(
    persona_id: str, items: list[dict[str, Any]], assess: TurnAssessor
) -> dict[str, Any]:
    planted = [i for i in items if i["category"] != "none"]
    controls = [i for i in items if i["category"] == "none"]
    texts = [i["text"] for i in items]
    rows, latencies, explained = [], [], []
    for text in texts:
        assessment, line = await assess(text)
        rows.append((assessment, line))
        if assessment is not None and assessment.latency_ms is not None:
            latencies.append(assessment.latency_ms)
        if assessment is not None and "explain_ms" in assessment.extra:
            explained.append(assessment.extra["explain_ms"])
    by_text = {line["text"]: (a, line) for a, line in rows}
    right = sum(same(by_text[i["text"]][1]["corrected"], i["expected"]) for i in planted)
    false = sum(not same(by_text[i["text"]][1]["corrected"], i["text"]) for i in controls)
    dropped = sum(1 for a, _ in rows if a is not None and a.dropped)
    misses = [
        {"text": i["text"], "expected": i["expected"], "got": by_text[i["text"]][1]["corrected"]}
        for i in items
        if not same(by_text[i["text"]][1]["corrected"], i["expected"])
    ]
    return {
        "persona": persona_id,
        "corrected": (right, len(planted)),
        "false_corrections": (false, len(controls)),
        "dropped_by_checks": dropped,
        "median_ms": statistics.median(latencies) if latencies else None,
        "median_explain_ms": statistics.median(explained) if explained else None,
        "misses": misses,
    }


async def examiner(items: list[dict[str, Any]], assess: TurnAssessor) -> dict[str, Any]:
    bank = load_acs_bank()
    right = wrong_caught = wrong_total = ok_sat = ok_total = states_fact = unsat = 0
    latencies, misses = [], []
    for item in items:
        q = bank.get(item["question"])
        for assessment, line in [await assess(item["answer"], q.id)]:
            got = line["grade"]
            if assessment is not None and assessment.latency_ms is not None:
                latencies.append(assessment.latency_ms)
            right += got == item["grade"]
            if item["grade"] == "unsatisfactory":
                wrong_total += 1
                wrong_caught += got != "satisfactory"
            if item["grade"] == "satisfactory":
                ok_total += 1
                ok_sat += got == "satisfactory"
            if got == "unsatisfactory":
                unsat += 1
                states_fact += q.reference in line["reply"]
            if got != item["grade"]:
                misses.append(
                    {"question": q.id, "answer": item["answer"], "want": item["grade"], "got": got}
                )
    return {
        "persona": "aviation-examiner",
        "grades_right": (right, len(items)),
        "wrong_not_satisfactory": (wrong_caught, wrong_total),
        "right_satisfactory": (ok_sat, ok_total),
        "unsatisfactory_reply_states_fact": (states_fact, unsat),
        "median_ms": statistics.median(latencies) if latencies else None,
        "misses": misses,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persona", choices=[*SETS, "all"], default="all")
    parser.add_argument("--limit", type=int, default=0, help="first N items per set (0 = all)")
    parser.add_argument("--llm-base-url", default=None, help="an already running server")
    args = parser.parse_args()
    personas = list(SETS) if args.persona == "all" else [args.persona]
    results = []
    t0 = time.perf_counter()
    for pid in personas:
        items = yaml.safe_load((ITEMS / SETS[pid]).read_text(encoding="utf-8"))["items"]
        items = items[: args.limit] if args.limit else items
        persona = load_persona(pid)
        async with turn_assessor(persona, Settings(), llm_base_url=args.llm_base_url) as assess:
            if pid == "aviation-examiner":
                results.append(await examiner(items, assess))
            else:
                results.append(await tutor(pid, items, assess))
    console = Console()
    table = Table("persona", "measure", "result", "target", title="tutor_eval")
    for r in results:
        if "corrected" in r:
            target = "≥ 75 %" if r["persona"] == "german-tutor" else "≥ 60 %"
            table.add_row(r["persona"], "planted errors corrected", pct(*r["corrected"]), target)
            table.add_row("", "correct sentences changed", pct(*r["false_corrections"]), "≤ 10 %")
            table.add_row("", "corrections dropped by checks", str(r["dropped_by_checks"]), "")
        else:
            table.add_row(r["persona"], "grades right", pct(*r["grades_right"]), "")
            table.add_row(
                "", "wrong → not satisfactory", pct(*r["wrong_not_satisfactory"]), "≥ 85 %"
            )
            table.add_row("", "right → satisfactory", pct(*r["right_satisfactory"]), "≥ 90 %")
            table.add_row(
                "",
                "unsat. reply states the fact",
                pct(*r["unsatisfactory_reply_states_fact"]),
                "all",
            )
        table.add_row("", "median added latency", f"{r['median_ms']} ms", "")
        if r.get("median_explain_ms") is not None:
            table.add_row("", "median rule naming (after)", f"{r['median_explain_ms']} ms", "")
    console.print(table)
    console.print(
        f"[dim]{time.perf_counter() - t0:.0f} s; misses in bench/results/tutor_eval.json[/]"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tutor_eval.json").write_text(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
