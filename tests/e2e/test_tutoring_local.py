"""Tutoring end to end on the real local model: typed turns, ``voxtutor assess``, checks hold.

The model here is the fast 0.5B one (the quality of the default 1.5B model is measured by
``bench/tutor_eval.py``, not asserted): these tests prove the wiring and the checks, which
hold whatever the model says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from config.personas import load_persona
from config.settings import Settings
from contracts.assessment import GRADES
from pipelines.assessment import turn_assessor
from pipelines.file_session import run_file_session
from services.assessment.dictionary import unknown_words
from transports.file import FileTransportParams, TypedTurn

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SCORED = Settings(llm_model="qwen2.5-coder-0.5b", assessment_scorer=True)
"""The in-process scorers on the same small model as the server."""


async def test_tutor_corrections_only_ever_bring_in_dictionary_words(llm_url: str) -> None:
    sentences = ["Der Wetter ist heute schön.", "Ich wohne seit zwei Jahren in Berlin."]
    persona = load_persona("german-tutor")
    async with turn_assessor(persona, SCORED, llm_base_url=llm_url) as assess:
        for text in sentences:
            assessment, line = await assess(text)
            assert set(line) == {"text", "corrected", "errors", "reply"} and line["text"] == text
            assert assessment is not None and assessment.latency_ms is not None
            if line["errors"]:
                assert line["reply"] == line["corrected"] != text
                new = set(unknown_words("de", line["corrected"])) - set(unknown_words("de", text))
                assert not new
            else:
                assert line["corrected"] == text and line["reply"] == ""


async def test_examiner_grades_against_the_bank_and_teaches_after_a_wrong_answer(
    llm_url: str,
) -> None:
    persona = load_persona("aviation-examiner")
    async with turn_assessor(persona, SCORED, llm_base_url=llm_url) as assess:
        assessment, line = await assess(
            "Vx is the speed for the best rate of climb.", "What is Vx?"
        )
    assert line["task"] and line["question"] and line["grade"] in GRADES
    assert assessment is not None and assessment.grade is not None
    # Graded from the local model's verdict probabilities, read in this process.
    p = assessment.extra["p"]
    assert set(p) == {"wrong", "incomplete", "correct"} and abs(sum(p.values()) - 1) < 0.01
    if line["grade"] == "unsatisfactory":
        assert assessment.grade.reference in line["reply"]


async def test_a_typed_turn_is_assessed_and_answered_without_stt(
    llm_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "typed"
    result = await run_file_session(
        "german-tutor",
        [TypedTurn("Ich habe gestern in die Kino gegangen.")],
        out,
        Settings(),
        llm_base_url=llm_url,
        params=FileTransportParams(reply_timeout_s=60),
    )
    transcript = json.loads((out / "transcript.json").read_text())
    assert transcript["inputs"][0]["typed"] == "Ich habe gestern in die Kino gegangen."
    learner = [t for t in transcript["turns"] if t["role"] == "learner"]
    assert [t["text"] for t in learner] == ["Ich habe gestern in die Kino gegangen."]
    assessment = learner[0]["assessment"]
    assert assessment["kind"] == "gec" and assessment["text"] == learner[0]["text"]
    bot = [t for t in result.turns if t.role == "bot"]
    assert len(bot) >= 2 and bot[-1].text.strip()  # the greeting, then an answer


def test_assess_refuses_an_unknown_persona_and_an_examiner_without_question() -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["assess", "--persona", "pirate", "Arr."])
    assert r.exit_code == 2 and "pirate" in r.output
    r = runner.invoke(app, ["assess", "--persona", "aviation-examiner", "Vx is best angle."])
    assert r.exit_code == 2 and "--question" in r.output


async def test_the_window_scorer_reads_the_same_probability_whatever_it_read_before() -> None:
    from pipelines.assessment import local_window_scorer
    from services.assessment.gec import CONTEXT

    scorer = local_window_scorer(SCORED, "de")
    assert scorer is not None
    start = len(CONTEXT["de"]) + len(" Ich fahre mit ")
    said = scorer.logprob(CONTEXT["de"] + " Ich fahre mit der Bus", start)
    right = scorer.logprob(CONTEXT["de"] + " Ich fahre mit dem Bus", start)
    other = scorer.logprob("Etwas ganz anderes: der Bus", len("Etwas ganz anderes: "))
    again = scorer.logprob(CONTEXT["de"] + " Ich fahre mit der Bus", start)
    assert said < 0 and right < 0 and said != right and other != said
    assert abs(again - said) < 1e-3  # the kept prefix is reused correctly
