"""The language's Hunspell dictionary: is every word a correction introduces a real word?

A corrected sentence from a small model sometimes contains a word that does not exist
("gegeht", "Prahe"); such a correction is dropped before it is spoken. The dictionaries are
Debian's (``hunspell-de-de``, ``hunspell-cs``, in ``/usr/share/hunspell``), read by the
Hunspell C library through ``pyhunspell`` (the ``hunspell`` package). Loaded once per
process, off the event loop: 0.2 s and ~8 MB (German) or ~29 MB (Czech) resident; the
pure-Python port ``spylls`` took 4 s and 220 MB for Czech.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache
from pathlib import Path

from hunspell import HunSpell

HUNSPELL_DIR = Path("/usr/share/hunspell")
DICTIONARIES = {"de": "de_DE", "cs": "cs_CZ", "en": "en_US"}
"""Persona language → Hunspell dictionary name (Debian hunspell-de-de, hunspell-cs,
hunspell-en-us)."""
WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")
"""A word: letters (any script), possibly joined by a hyphen or apostrophe."""

_lock = threading.Lock()


class DictionaryMissingError(RuntimeError):
    """The language's Hunspell files are not installed (``scripts/setup.sh`` installs them)."""


class Dictionary:
    """One language's Hunspell dictionary.

    Args:
        speller: The loaded Hunspell object.
    """

    def __init__(self, speller: HunSpell):
        self._speller = speller

    def lookup(self, word: str) -> bool:
        """Whether Hunspell knows ``word`` (as spelled; affixes and compounds included)."""
        try:
            return bool(self._speller.spell(word))
        except UnicodeError:  # a character the dictionary's encoding lacks
            return False


@lru_cache(maxsize=4)
def _load(name: str) -> Dictionary:
    base = HUNSPELL_DIR / name
    if not base.with_suffix(".dic").is_file():
        raise DictionaryMissingError(f"{base}.dic is missing: apt-get install hunspell-*")
    return Dictionary(HunSpell(str(base.with_suffix(".dic")), str(base.with_suffix(".aff"))))


def load_dictionary(language: str) -> Dictionary:
    """The Hunspell dictionary of ``language`` (``de``, ``cs``, ``en``), loaded once.

    Blocking (~0.2 s the first time); thread-safe.

    Raises:
        KeyError: no dictionary is configured for ``language``.
        DictionaryMissingError: its files are not installed.
    """
    with _lock:
        return _load(DICTIONARIES[language])


def words(text: str) -> list[str]:
    """The words of ``text`` in order (punctuation and numbers left out)."""
    return WORD.findall(text)


ACCENTS = {
    "cs": {
        "a": "á", "e": "éě", "i": "í", "o": "ó", "u": "úů", "y": "ý", "c": "č", "d": "ď",
        "n": "ň", "r": "ř", "s": "š", "t": "ť", "z": "ž",
    },
    "de": {"a": "ä", "o": "ö", "u": "ü"},
}  # fmt: skip
"""Letters a learner types without their diacritics, and what they may stand for."""
MAX_VARIANTS = 512
"""Most spellings tried for one word (a long Czech word has many candidate letters)."""


def _variants(word: str, accents: dict[str, str]) -> list[str]:
    """Spellings of ``word`` with diacritics added or changed, fewest changes first."""
    options = []
    for c in word:
        base = unicodedata.normalize("NFKD", c)[0]
        lower = base.lower()
        alts = {lower, *accents.get(lower, "")}
        alts = {a.upper() if c.isupper() else a for a in alts}
        options.append(sorted(alts, key=lambda a: a != c))
    out = [""]
    for letters in options:
        out = [prefix + a for prefix in out for a in letters][:MAX_VARIANTS]
    return [v for v in out if v != word]


def diacritic_fixes(language: str, text: str) -> dict[str, str]:
    """Unknown words of ``text`` that are a known word with its diacritics missing or wrong.

    ``Muj`` → ``Můj``, ``dekuju`` → ``děkuju``, ``fur`` → ``für``: only the same letters with
    other diacritics count, so a real word is never replaced by a guess, and each candidate
    costs one dictionary lookup (no Hunspell suggestion search, which is far slower).

    Raises:
        KeyError: no dictionary for ``language``.
        DictionaryMissingError: its files are not installed.
    """
    d = load_dictionary(language)
    accents = ACCENTS.get(language, {})
    fixes = {}
    for w in words(text):
        if d.lookup(w) or d.lookup(w.lower()):
            continue
        for candidate in _variants(w, accents):
            if d.lookup(candidate):
                fixes[w] = candidate
                break
    return fixes


def unknown_words(language: str, text: str) -> list[str]:
    """The words of ``text`` the language's dictionary does not know, in order.

    A word counts as known in its own spelling or, at the start of a sentence, lower-cased.

    Raises:
        KeyError: no dictionary for ``language``.
        DictionaryMissingError: its files are not installed.
    """
    d = load_dictionary(language)
    return [w for w in words(text) if not (d.lookup(w) or d.lookup(w.lower()))]
