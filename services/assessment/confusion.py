"""Closed-class word forms a learner confuses, each alternative checked by the local model.

A learner picks the wrong form of a small, closed set far more often than anything else: a
German article or possessive for the noun's gender and case (``die Auto``, ``mit der Bus``,
``bei meine Tante``), a pronoun's case, a contraction, a preposition of a fixed phrase
(``zu Berlin``, ``warten für``); a Czech ``v``/``na``, demonstrative
or present-tense form of ``být``/``mít``/``jít`` (not the past tense's gender, which
is the speaker's own); and the place of a German subject pronoun
or a Czech clitic (``Morgen ich fahre``, ``jmenuju se``). A 1.5B model asked to rewrite the
sentence misses most of these, but when each alternative is put in place and the few words
after it are scored (:class:`services.assessment.next_token.WindowScorer`), the right form
is clearly the most likely: on ``bench/tutor_eval/german.yaml`` it found 12 of the 14
gender and case errors. Only the forms of one family are tried for a word (``der`` → ``die
das den dem des``), so a replacement is always a real word of the same kind.

A substitution is kept only when it raises the window's log-probability by at least
:data:`MARGIN` nats: on the German set, correct sentences' best alternatives gained at most
1.64 (``an den See`` → ``auf den See``), the right ones 2.5 and more. The Czech model is
weaker: there, wrong and right changes gain alike (1.8-7.6 against 0.1-9.9), so Czech
substitutions are fewer and less sure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

FAMILIES: dict[str, tuple[tuple[str, ...], ...]] = {
    "de": tuple(
        tuple(f.split())
        for f in (
            "der die das den dem des",
            "ein eine einen einem einer eines",
            "kein keine keinen keinem keiner keines",
            "mein meine meinen meinem meiner meines",
            "dein deine deinen deinem deiner deines",
            "sein seine seinen seinem seiner seines",
            "ihr ihre ihren ihrem ihrer ihres",
            "unser unsere unseren unserem unserer unseres",
            "dieser diese diesen diesem dieses",
            "in im ins",
            "an am ans",
            "zu zum zur",
            "bei beim",
            "von vom",
            "ich mich mir",
            "du dich dir",
            "er ihn ihm",
            "zu nach",
            "für auf über an",
            "in an auf",
        )
    ),
    "cs": tuple(
        tuple(f.split())
        for f in (
            "v na",
            "ten ta to ty ti",
            "jsem jsi je jsme jste jsou",
            "mám máš má máme máte mají",
            "jdu jdeš jde jdeme jdete jdou",
        )
    ),
}
"""Per language, the word families whose forms a learner confuses (lower case)."""

SWAPS: dict[str, tuple[frozenset[str], int]] = {
    "de": (frozenset("ich du er sie es wir ihr".split()), +1),
    "cs": (frozenset("se si jsem jsi jsme jste".split()), -1),
}
"""Per language, words a learner puts on the wrong side of their neighbour, and which
neighbour: German subject pronouns before the finite verb after a fronted word (``Morgen
ich fahre`` → ``Morgen fahre ich``: swapped with the next word); Czech clitics after the
verb (``jmenuju se`` → ``se jmenuju``: swapped with the word before)."""

MARGIN = 2.0
"""Least gain in log-probability (nats) over the learner's words for a substitution."""
WINDOW_WORDS = 2
"""Words after the substituted one that are scored with it (the noun it agrees with)."""

_WORD = re.compile(r"\w+")


class Scorer(Protocol):
    """Scores the tokens of a text from a character offset on (``WindowScorer``)."""

    def logprob(self, text: str, start: int) -> float:
        """Log-probability of ``text``'s tokens from character ``start`` on."""
        ...


@dataclass(frozen=True)
class Substitution:
    """The best alternative form found in a sentence.

    Attributes:
        sentence: The sentence with the form replaced.
        original: The learner's word.
        replacement: The form put in its place.
        gain: How much more likely the window became, nats.
    """

    sentence: str
    original: str
    replacement: str
    gain: float


def alternatives(language: str, word: str) -> list[str]:
    """The other forms of ``word``'s families, capitalised like ``word``; ``[]`` if none."""
    lower = word.lower()
    found: set[str] = set()
    for family in FAMILIES.get(language, ()):
        if lower in family:
            found.update(family)
    found.discard(lower)
    cap = word[:1].isupper()
    return [f[:1].upper() + f[1:] if cap else f for f in sorted(found)]


def best_substitution(
    language: str, sentence: str, scorer: Scorer, context: str = ""
) -> Substitution | None:
    """The one substitution of a confusable form that makes ``sentence`` most likely.

    Each word with :func:`alternatives` is replaced by each of them in turn, and each word
    of :data:`SWAPS` is swapped with its neighbour; the changed words and the
    :data:`WINDOW_WORDS` words after them are scored after ``context`` (e.g. "A correct
    German sentence:") and the rest of the sentence before them.

    Returns:
        The best substitution gaining at least :data:`MARGIN`, or ``None``.

    Raises:
        ValueError: the sentence is too long for the scorer.
    """
    lead = f"{context} " if context else ""
    spans = list(_WORD.finditer(sentence))
    best: Substitution | None = None
    for i, m in enumerate(spans):
        end = spans[min(i + WINDOW_WORDS, len(spans) - 1)].end()
        start = len(lead) + m.start()
        said: float | None = None
        for option in alternatives(language, m.group()):
            if said is None:
                said = scorer.logprob(lead + sentence[:end], start)
            changed = sentence[: m.start()] + option + sentence[m.end() :]
            shift = len(option) - len(m.group())
            gain = scorer.logprob(lead + changed[: end + shift], start) - said
            if gain >= MARGIN and (best is None or gain > best.gain):
                best = Substitution(changed, m.group(), option, gain)
    for a, b in _swaps(language, sentence, spans):
        end = spans[min(b + WINDOW_WORDS, len(spans) - 1)].end()
        first, second = spans[a], spans[b]
        start = len(lead) + first.start()
        said = scorer.logprob(lead + sentence[:end], start)
        left, right = second.group(), first.group()
        if a == 0 and first.group()[:1].isupper():  # keep the sentence's capital first
            left, right = left[:1].upper() + left[1:], right[:1].lower() + right[1:]
        between = sentence[first.end() : second.start()]
        changed = sentence[: first.start()] + left + between + right + sentence[second.end() :]
        gain = scorer.logprob(lead + changed[:end], start) - said
        if gain >= MARGIN and (best is None or gain > best.gain):
            original = sentence[first.start() : second.end()]
            best = Substitution(changed, original, changed[first.start() : second.end()], gain)
    return best


def gain(sentence: str, changed: str, scorer: Scorer, context: str = "") -> float:
    """How much more likely ``changed`` is than ``sentence``, nats, from where they differ.

    Both are scored after ``context`` from their first differing character to the end.

    Raises:
        ValueError: a sentence too long for the scorer.
    """
    lead = f"{context} " if context else ""
    start = next(
        (i for i, (a, b) in enumerate(zip(sentence, changed, strict=False)) if a != b),
        min(len(sentence), len(changed)),
    )
    start = sentence.rfind(" ", 0, start) + 1  # from the start of the word
    said = scorer.logprob(lead + sentence, len(lead) + start)
    return scorer.logprob(lead + changed, len(lead) + start) - said


def _swaps(language: str, sentence: str, spans: list[re.Match[str]]) -> list[tuple[int, int]]:
    """Pairs of adjacent word indices (left, right) to try swapped (:data:`SWAPS`)."""
    words, direction = SWAPS.get(language, (frozenset(), 0))
    pairs = []
    for i, m in enumerate(spans):
        j = i + direction
        if m.group().lower() not in words or not 0 <= j < len(spans) or i == 0 and direction > 0:
            continue
        a, b = min(i, j), max(i, j)
        if sentence[spans[a].end() : spans[b].start()] == " ":  # not across a comma
            pairs.append((a, b))
    return pairs
