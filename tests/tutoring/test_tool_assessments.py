"""The speech-to-speech tier's persona tool calls become the same assessment records."""

from __future__ import annotations

from config.acs import load_acs_bank
from pipelines.tools import ToolCall, assessment_from_tool_call


def test_a_noted_mistake_is_a_gec_assessment_with_its_category() -> None:
    call = ToolCall(
        "note_mistake",
        {
            "original": "Ich fahre mit der Bus.",
            "corrected": "Ich fahre mit dem Bus.",
            "rule": "mit takes the dative",
            "category": "case",
        },
    )
    a = assessment_from_tool_call(call)
    assert a is not None and a.kind == "gec"
    assert (a.text, a.corrected) == ("Ich fahre mit der Bus.", "Ich fahre mit dem Bus.")
    [error] = a.errors
    assert (error.original, error.corrected) == ("der", "dem")
    assert (error.rule, error.category) == ("mit takes the dative", "case")


def test_an_unknown_category_is_other_and_a_non_correction_is_no_record() -> None:
    made_up = ToolCall("note_mistake", {"original": "a b", "corrected": "a c", "category": "style"})
    a = assessment_from_tool_call(made_up)
    assert a is not None and a.errors[0].category == "other"
    same = ToolCall("note_mistake", {"original": "Gut.", "corrected": "Gut.", "rule": "x"})
    assert assessment_from_tool_call(same) is None


def test_an_acs_verdict_is_matched_to_the_bank_by_code_or_title() -> None:
    bank = load_acs_bank()
    by_code = ToolCall(
        "record_acs_result",
        {"task": "pa.i.b", "result": "unsatisfactory", "note": "Forgot the ELT inspection."},
    )
    a = assessment_from_tool_call(by_code, bank)
    assert a is not None and a.grade is not None
    assert (a.grade.task, a.grade.grade) == ("PA.I.B", "unsatisfactory")
    assert a.grade.missing == ("Forgot the ELT inspection.",)
    assert a.grade.source == bank.get(a.grade.question_id).source != ""
    by_title = ToolCall(
        "record_acs_result", {"task": "Airworthiness Requirements", "result": "satisfactory"}
    )
    b = assessment_from_tool_call(by_title, bank)
    assert b is not None and b.grade is not None and b.grade.task == "PA.I.B"
    assert b.grade.missing == ()


def test_a_verdict_outside_the_grades_or_another_tool_is_no_record() -> None:
    bank = load_acs_bank()
    assert (
        assessment_from_tool_call(ToolCall("record_acs_result", {"result": "great"}), bank) is None
    )
    assert assessment_from_tool_call(ToolCall("weather", {}), bank) is None
    unknown = ToolCall("record_acs_result", {"task": "Juggling", "result": "satisfactory"})
    a = assessment_from_tool_call(unknown, bank)
    assert (
        a is not None
        and a.grade is not None
        and (a.grade.task, a.grade.question_id)
        == (
            "Juggling",
            "",
        )
    )
