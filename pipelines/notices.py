"""What the learner's app is told, live, about an assessed turn (RTVI ``server-message``).

The learner's app (``web/``) shows each correction inline in the transcript (what was said
struck through, the correction, the rule) and the examiner's grades as chips, as the turn is
assessed, over the session's RTVI data channel. The same data is stored
(``store.assessments``) and served afterwards (``GET /api/v1/me/sessions/{id}``).

Messages (the ``data`` of an ``RTVIServerMessageFrame``):

- ``{"type": "correction", "turn_index", "original", "corrected", "category", "rule"}``
- ``{"type": "acs-grade", "turn_index", "area", "task", "grade"}`` (``area``: the ACS area's
  Roman numeral from the task code, e.g. ``I`` of ``PA.I.A``)
"""

from __future__ import annotations

from typing import Any

from contracts.assessment import Assessment


def acs_area(task: str) -> str:
    """The ACS area of a task code (``PA.I.A`` → ``I``; a code without one → itself)."""
    parts = task.split(".")
    return parts[1] if len(parts) >= 3 else task


def assessment_notices(assessment: Assessment, turn_index: int | None) -> list[dict[str, Any]]:
    """The messages announcing ``assessment`` of learner turn ``turn_index`` (may be empty)."""
    notes: list[dict[str, Any]] = [
        {
            "type": "correction",
            "turn_index": turn_index,
            "original": e.original,
            "corrected": e.corrected,
            "category": e.category,
            "rule": e.rule,
        }
        for e in assessment.errors
    ]
    if assessment.grade is not None:
        g = assessment.grade
        notes.append(
            {
                "type": "acs-grade",
                "turn_index": turn_index,
                "area": acs_area(g.task),
                "task": g.task,
                "grade": g.grade,
            }
        )
    return notes
