"""The private-pilot ACS question bank the examiner asks from (``config/acs/*.yaml``).

Data, validated here: every area of operation of the Private Pilot – Airplane ACS
(FAA-S-ACS-6C, https://www.faa.gov/training_testing/testing/acs) with its tasks, and for each
question the reference answer, the key points a satisfactory answer covers and the source
(a 14 CFR section, an AIM paragraph or a handbook chapter). The examiner grades answers
against the reference, not against the model's own knowledge.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ACS_DIR = Path(__file__).with_name("acs")
PRIVATE_AIRPLANE = ACS_DIR / "private_airplane.yaml"
TASK_CODE = re.compile(r"^PA\.(?P<area>[IVX]+)\.(?P<letter>[A-Z])$")
"""An ACS task code: ``PA.<area numeral>.<task letter>`` (e.g. ``PA.I.B``)."""


class AcsError(ValueError):
    """The question bank is unreadable or invalid; the message says where."""


class AcsQuestion(BaseModel):
    """One oral-exam question.

    Attributes:
        id: ``<task code>.<n>`` (e.g. ``PA.I.A.1``), unique in the bank.
        task: Its ACS task code.
        question: What the examiner asks.
        reference: The satisfactory answer, 1-3 sentences.
        key_points: What a satisfactory answer must cover (2-4 short phrases).
        source: 14 CFR section, AIM paragraph or handbook chapter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^PA\.[IVX]+\.[A-Z]\.[0-9]+$")
    task: str
    question: str = Field(min_length=10)
    reference: str = Field(min_length=10)
    key_points: tuple[str, ...] = Field(min_length=1, max_length=6)
    source: str = Field(min_length=3)

    @property
    def area(self) -> str:
        """The area of operation's roman numeral (``I`` … ``XII``)."""
        return self.task.split(".")[1]

    @model_validator(mode="after")
    def _id_in_task(self) -> AcsQuestion:
        if not self.id.startswith(self.task + "."):
            raise ValueError(f"question {self.id} is not in its task {self.task}")
        return self


class AcsBank(BaseModel):
    """A question bank: areas, tasks and questions, every area covered.

    Attributes:
        acs: The ACS edition (e.g. ``FAA-S-ACS-6C``).
        title: The ACS's title.
        areas: Roman numeral → area of operation title, in ACS order.
        tasks: Task code → task title.
        questions: The questions, in file order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    acs: str
    title: str
    areas: dict[str, str]
    tasks: dict[str, str]
    questions: tuple[AcsQuestion, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> AcsBank:
        for code in self.tasks:
            m = TASK_CODE.match(code)
            if m is None or m["area"] not in self.areas:
                raise ValueError(f"task {code!r} is not PA.<area>.<letter> of a listed area")
        ids = [q.id for q in self.questions]
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"duplicate question ids: {sorted({i for i in ids if ids.count(i) > 1})}"
            )
        for q in self.questions:
            if q.task not in self.tasks:
                raise ValueError(f"question {q.id}: task {q.task} is not in tasks")
        empty = [a for a in self.areas if not any(q.area == a for q in self.questions)]
        if empty:
            raise ValueError(f"areas without a question: {empty}")
        return self

    def get(self, question_id: str) -> AcsQuestion:
        """The question ``question_id``.

        Raises:
            KeyError: no such question.
        """
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(question_id)

    def find_task(self, task: str) -> AcsQuestion | None:
        """The first question of ``task``: a task code (``PA.I.B``) or its title, any case.

        Returns ``None`` when no task has that code or title.
        """
        wanted = task.strip().casefold()
        codes = [c for c, title in self.tasks.items() if wanted in (c.casefold(), title.casefold())]
        for q in self.questions:
            if codes and q.task == codes[0]:
                return q
        return None


@lru_cache(maxsize=4)
def load_acs_bank(path: Path = PRIVATE_AIRPLANE) -> AcsBank:
    """Load and validate a question bank (cached per path).

    Raises:
        AcsError: unreadable YAML or an invalid bank (the message names the problem).
    """
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return AcsBank.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as e:
        raise AcsError(f"{path}: {e}") from e
