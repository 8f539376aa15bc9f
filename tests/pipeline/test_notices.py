"""The live notices the learner app shows for an assessed turn (``pipelines.notices``)."""

from __future__ import annotations

from contracts.assessment import AcsGrade, Assessment, Correction
from pipelines.notices import acs_area, assessment_notices


def test_each_correction_and_a_grade_become_one_message_each() -> None:
    gec = Assessment(
        kind="gec",
        text="Ich fahre mit der Bus.",
        corrected="Ich fahre mit dem Bus.",
        errors=(Correction("der Bus", "dem Bus", "mit takes the dative", "case"),),
    )
    assert assessment_notices(gec, 3) == [
        {
            "type": "correction",
            "turn_index": 3,
            "original": "der Bus",
            "corrected": "dem Bus",
            "category": "case",
            "rule": "mit takes the dative",
        }
    ]
    grade = AcsGrade("PA.I.B.2", "PA.I.B", "q?", "unsatisfactory", ("medical",), "ref", "14 CFR")
    acs = Assessment(kind="acs", text="I need nothing.", grade=grade)
    assert assessment_notices(acs, 5) == [
        {
            "type": "acs-grade",
            "turn_index": 5,
            "area": "I",
            "task": "PA.I.B",
            "grade": "unsatisfactory",
        }
    ]
    assert assessment_notices(Assessment(kind="gec", text="Gut.", corrected="Gut."), 1) == []
    assert acs_area("XYZ") == "XYZ"
