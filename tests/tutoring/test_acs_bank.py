"""The ACS question bank: complete, consistent, and refused when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from config.acs import PRIVATE_AIRPLANE, AcsError, load_acs_bank


def test_bank_covers_every_area_of_operation_with_sourced_questions() -> None:
    bank = load_acs_bank()
    assert bank.acs == "FAA-S-ACS-6C"
    assert list(bank.areas) == [
        "I",
        "II",
        "III",
        "IV",
        "V",
        "VI",
        "VII",
        "VIII",
        "IX",
        "X",
        "XI",
        "XII",
    ]
    assert len(bank.questions) >= 80
    for area in bank.areas:
        assert any(q.area == area for q in bank.questions), area
    for q in bank.questions:
        assert q.task in bank.tasks and q.id.startswith(q.task + ".")
        assert q.key_points and q.reference and q.source
    assert bank.get("PA.I.A.1").task == "PA.I.A"
    with pytest.raises(KeyError):
        bank.get("PA.XIII.Z.1")


def _write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(PRIVATE_AIRPLANE.read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "bank.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw["questions"].append(dict(raw["questions"][0])), "duplicate question"),
        (
            lambda raw: raw.update(
                questions=[q for q in raw["questions"] if not q["task"].startswith("PA.XII.")]
            ),
            "areas without a question",
        ),
        (
            lambda raw: raw["questions"][0].update(task="PA.I.Z", id="PA.I.Z.1"),
            "not in tasks",
        ),
        (lambda raw: raw["questions"][0].update(id="PA.II.A.99"), "not in its task"),
        (lambda raw: raw["questions"][0].pop("source"), "source"),
    ],
)
def test_an_inconsistent_bank_is_refused_with_the_reason(tmp_path: Path, edit, message) -> None:
    with pytest.raises(AcsError, match=message):
        load_acs_bank(_write(tmp_path, edit))
