"""Confusable forms: each alternative of a closed-class word is scored in place."""

from __future__ import annotations

import pytest

from services.assessment.confusion import MARGIN, alternatives, best_substitution


class TableScorer:
    """Scores the window by the phrase it starts with, else ``other`` (stands in for the LM)."""

    def __init__(self, phrases: dict[str, float], other: float = -6.0):
        self.phrases, self.other = phrases, other
        self.calls: list[tuple[str, int]] = []

    def logprob(self, text: str, start: int) -> float:
        self.calls.append((text, start))
        window = text[start:]
        return next((v for p, v in self.phrases.items() if window.startswith(p)), self.other)


def test_alternatives_are_the_other_forms_of_the_family_capitalised_alike() -> None:
    assert alternatives("de", "Die") == ["Das", "Dem", "Den", "Der", "Des"]
    assert alternatives("de", "mir") == ["ich", "mich"]
    assert alternatives("de", "Auto") == [] and alternatives("en", "the") == []
    assert alternatives("cs", "v") == ["na"]


def test_the_most_likely_form_replaces_the_learners_when_it_gains_enough() -> None:
    scorer = TableScorer({"dem Bus": 0.0, "der Bus": -4.0})
    found = best_substitution("de", "Ich fahre mit der Bus.", scorer, "Ein Satz:")
    assert found is not None
    assert (found.original, found.replacement) == ("der", "dem")
    assert found.sentence == "Ich fahre mit dem Bus." and found.gain == pytest.approx(4.0)
    # The context is read first, and only the word and the next words are scored.
    text, start = next((t, s) for t, s in scorer.calls if t[s:].startswith("der"))
    assert text == "Ein Satz: Ich fahre mit der Bus"  # the sentence ends one word later
    assert {t[s:] for t, s in scorer.calls} >= {"Ich fahre mit", "Mich fahre mit"}


def test_a_small_gain_changes_nothing() -> None:
    scorer = TableScorer({"das Salz": -1.0, "den Salz": -1.0 + MARGIN / 2, "mir": 0.0})
    assert best_substitution("de", "Gib mir das Salz.", scorer) is None


def test_a_language_without_families_is_not_scored() -> None:
    scorer = TableScorer({})
    assert best_substitution("en", "I goes home.", scorer) is None and scorer.calls == []


def test_a_misplaced_pronoun_or_clitic_is_swapped_with_its_neighbour() -> None:
    german = TableScorer({"fahre ich": 0.0, "ich fahre": -3.0})
    found = best_substitution("de", "Morgen ich fahre nach Wien.", german)
    assert found is not None and found.sentence == "Morgen fahre ich nach Wien."
    assert (found.original, found.replacement) == ("ich fahre", "fahre ich")
    czech = TableScorer({"se jmenuju": 0.0, "Já se": 0.0, "Já jmenuju": -4.0})
    found = best_substitution("cs", "Já jmenuju se Anna.", czech)
    assert found is not None and found.sentence == "Já se jmenuju Anna."
    # Never across a comma: after "regnet," the pronoun is swapped with the verb after it.
    comma = TableScorer({"bleiben wir": 0.0, "wir bleiben": -3.0})
    found = best_substitution("de", "Wenn es regnet, wir bleiben hier.", comma)
    assert found is not None and found.sentence == "Wenn es regnet, bleiben wir hier."
    assert not any(t[s:].startswith("regnet, wir") for t, s in comma.calls)
