"""Sentence aggregation between the LLM and the TTS, aware of aviation, German and Czech text.

``SentenceAggregator`` is a Pipecat text aggregator, plugged in as
``LLMTextProcessor(text_aggregator=SentenceAggregator())``. It collects the streamed LLM tokens
and releases each sentence as soon as it is known to be complete, so speech synthesis starts
early, while never splitting inside abbreviations (English, German and Czech), decimals, FAA
references, ordinals or list markers. Fragments shorter than ``min_chars`` (20) are joined
with the next sentence, a colon is a soft boundary once the buffer is longer than
``colon_chars`` (80), and a buffer without any boundary is cut on a word boundary at
``max_chars`` (200). The first piece of a response may end at a clause boundary (a comma,
semicolon or dash followed by whitespace) once it has ``first_clause_chars`` characters
(sessions use 24) and three words, so the voice starts on "Good question, ..." instead of
waiting for the whole first sentence. These defaults are this project's rules; all lengths
are in characters. The aggregator never rewrites text: every piece is a stripped slice of the
input, and joining the pieces with single spaces gives back the whitespace-normalised input.
"""

import re
from collections.abc import AsyncIterator
from typing import ClassVar

from pipecat.utils.text.base_text_aggregator import Aggregation, BaseTextAggregator, TextType

# Characters that may open a word ('"Next', "(See") or close a sentence ('land." Then').
_OPENERS = "\"'„“‚‘«»([*¿¡"
_CLOSERS = "\"'”“’‘»«)]*"
# A candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace.
_CANDIDATE = re.compile(rf"([.!?…]+)[{re.escape(_CLOSERS)}]*\s+")
_COLON = re.compile(r":\s+")
FIRST_CLAUSE_CHARS = 24
"""``first_clause_chars`` of a session's aggregator: long enough for "Good question, ..." to be
one piece, short enough that the voice starts after about six tokens."""
_CLAUSE = re.compile(r"(?:[,;]|\s[–—-])\s+")
_SPACE = re.compile(r"\s+")
_ORDINAL = re.compile(r"\d+\.")
_WORD = re.compile(r"([^\W\d_]*)(.?)", re.DOTALL)


class SentenceAggregator(BaseTextAggregator):
    """Aggregates streamed LLM text into sentences for the TTS, one as soon as it is complete.

    A boundary is terminal punctuation (``.``, ``!``, ``?``, ``…`` or ``...``), optionally
    followed by closing quotes or brackets, then whitespace. ``!`` and ``?`` end a sentence at
    that whitespace. A period or an ellipsis is judged on the next word (lookahead), so a
    period at the end of the buffer (``122.``, ``e.g.``, ``in.``) waits for more text:

    - followed by a lowercase word, it never ends a sentence (``etc. and``, ``3 p.m. until``,
      ``usw. und``, ``atd. a``, ``Hg. before``), in any language;
    - after a word in ``NEVER_TERMINAL`` (``e.g.``, ``Dr.``, ``z.B.``, ``např.`` ...), after a
      single letter (initials, ``z. B.``, ``d. h.``, ``č.``) or after a text matching one of
      ``NO_BREAK_PATTERNS`` (list markers ``(1).``, ``a).``; an enumerator such as ``1.`` at
      the start of the buffer or a line, or after ``?``, ``!`` or ``:``), it never ends one;
    - after a word in ``NEVER_BEFORE_WORD`` followed by one of its words (``in. Hg.``), or after
      a number followed by a digit (``3. 5. 2024``) or a month in ``MONTHS`` (``am 3. Mai``),
      it never ends a sentence;
    - otherwise, followed by an uppercase letter, a digit or a symbol, it ends one
      (``etc. Next``, ``usw. Dann``, ``91.205. The``, ``Das kostet 5. Dann``).

    Decimals and references (``122.8``, ``14 CFR 91.205``, ``AIM 7-1-11``) never split because
    their periods are not followed by whitespace. Text is processed one character at a time,
    so the pieces do not depend on how the stream is chunked into tokens.

    The word sets and patterns are class attributes: a persona can extend them in a subclass,
    e.g. ``NEVER_TERMINAL = SentenceAggregator.NEVER_TERMINAL | {"ft."}``. Words are compared
    lowercased, including their final period.

    Args:
        min_chars: Shortest piece emitted before the end of the response, in characters. A
            shorter sentence ("Yes.") stays buffered and is joined with the next one.
        max_chars: Buffer length, in characters, beyond which the text is cut without a
            sentence boundary: at the last whitespace at or before ``max_chars`` (a single
            word longer than that is kept whole and cut at the whitespace after it).
        colon_chars: Buffer length, in characters, beyond which a colon followed by whitespace
            is a soft boundary (default 80).
        first_clause_chars: Shortest first clause of a response, in characters, that a
            clause boundary may end (three words are needed too); ``None`` (the default)
            waits for the first whole sentence. Sessions use :data:`FIRST_CLAUSE_CHARS`.

    Raises:
        ValueError: If the lengths are negative or ``max_chars`` is not above ``min_chars``.
    """

    NEVER_TERMINAL: ClassVar[frozenset[str]] = frozenset(
        {
            # English and aviation.
            *("e.g.", "i.e.", "vs.", "approx.", "cf.", "ca.", "no.", "st."),
            *("dr.", "mr.", "mrs.", "ms.", "prof.", "jr.", "sr.", "inc.", "ltd."),
            *("min.", "max.", "alt.", "hdg."),
            # German.
            *("z.b.", "d.h.", "u.a.", "bzw.", "nr.", "evtl.", "ggf.", "hr.", "fr."),
            # Czech.
            *("tzn.", "např.", "tj.", "apod.", "př.", "str.", "č."),
        }
    )
    NEVER_BEFORE_WORD: ClassVar[dict[str, frozenset[str]]] = {"in.": frozenset({"hg"})}
    MONTHS: ClassVar[frozenset[str]] = frozenset(
        {
            *("januar", "jänner", "februar", "märz", "april", "mai", "juni", "juli"),
            *("august", "september", "oktober", "november", "dezember"),
            *("jan", "feb", "mär", "apr", "jun", "jul", "aug", "sep", "sept", "okt", "nov", "dez"),
        }
    )
    NO_BREAK_PATTERNS: ClassVar[tuple[re.Pattern[str], ...]] = (
        # List markers: "(1).", "1).", "(a).", "a).", "A).".
        re.compile(r"(?:\(\d+\)|\d+\)|\([a-zA-Z]\)|[a-zA-Z]\))\.$"),
        # An enumerator "1." at the start of the buffer or a line, or after "?", "!" or ":".
        re.compile(r"(?:^|\n|[!?:]\s+)\d{1,3}\.$"),
        # A single letter: initials ("John F. Kennedy"), "z. B.", "d. h.", "u. a.", "č.".
        re.compile(r"(?:^|[\s\"'„“‚‘«»(\[])[^\W\d_]\.$"),
    )

    def __init__(
        self,
        *,
        min_chars: int = 20,
        max_chars: int = 200,
        colon_chars: int = 80,
        first_clause_chars: int | None = None,
    ):
        super().__init__(aggregation_type=TextType.SENTENCE)
        if (
            min(min_chars, max_chars, colon_chars, first_clause_chars or 0) < 0
            or max_chars <= min_chars
        ):
            raise ValueError(
                f"need 0 <= min_chars < max_chars and colon_chars >= 0, got "
                f"min_chars={min_chars}, max_chars={max_chars}, colon_chars={colon_chars}"
            )
        self._min_chars = min_chars
        self._max_chars = max_chars
        self._colon_chars = colon_chars
        self._first_clause_chars = first_clause_chars
        # True until the first piece of the current response has been released.
        self._first = True
        self._text = ""
        # Buffer offset up to which candidate boundaries have been judged.
        self._scan = 0

    @property
    def text(self) -> Aggregation:
        """The text buffered so far, stripped, as a sentence aggregation."""
        return Aggregation(text=self._text.strip(), type=TextType.SENTENCE)

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        """Add streamed text and yield every piece that became complete.

        Args:
            text: The next chunk of LLM output, of any length.

        Yields:
            Sentence aggregations, stripped of surrounding whitespace.
        """
        for char in text:
            if not self._text and char.isspace():
                continue
            self._text += char
            while (cut := self._next_cut()) is not None:
                piece = self._text[:cut].strip()
                self._text = self._text[cut:].lstrip()
                self._scan = 0
                self._first = False
                yield Aggregation(text=piece, type=TextType.SENTENCE)

    async def flush(self) -> Aggregation | None:
        """Return the rest of the buffer at the end of a response, however short.

        Returns:
            The remaining text as a sentence aggregation, or None if nothing is buffered.
        """
        rest = self._text.strip()
        await self.reset()
        return Aggregation(text=rest, type=TextType.SENTENCE) if rest else None

    async def handle_interruption(self) -> None:
        """Discard the buffered text: the user interrupted, it will not be spoken."""
        await self.reset()

    async def reset(self) -> None:
        """Discard the buffered text and return to the initial state."""
        self._text = ""
        self._scan = 0
        self._first = True

    def _next_cut(self) -> int | None:
        """Return the buffer offset that ends the next piece, or None to keep buffering."""
        buf = self._text
        while (match := _CANDIDATE.search(buf, self._scan)) is not None:
            ends = self._ends_sentence(buf[: match.end(1)], match.group(1), buf[match.end() :])
            if ends is None:
                break  # Judge this candidate again when more text arrives.
            self._scan = match.end()
            if ends and len(buf[: match.end()].strip()) >= self._min_chars:
                return match.end()
        # A clause boundary ends in whitespace, so only a new whitespace can complete one.
        if self._first and self._first_clause_chars is not None and buf[-1:].isspace():
            for clause in _CLAUSE.finditer(buf):
                head = buf[: clause.start() + 1].strip()
                if len(head) >= self._first_clause_chars and len(head.split()) >= 3:
                    return clause.end()
        if len(buf) > self._colon_chars:
            for colon in _COLON.finditer(buf):
                if len(buf[: colon.start() + 1].strip()) >= self._min_chars:
                    return colon.end()
        if len(buf) > self._max_chars:
            cut = None
            for space in _SPACE.finditer(buf):
                if space.start() > self._max_chars:
                    return cut if cut is not None else space.end()
                if len(buf[: space.start()].strip()) >= self._min_chars:
                    cut = space.end()
            return cut
        return None

    def _ends_sentence(self, before: str, punct: str, after: str) -> bool | None:
        """Judge a candidate boundary.

        Args:
            before: The buffer up to and including the terminal punctuation.
            punct: The terminal punctuation itself (".", "?!", "...", "…").
            after: The buffer after the whitespace that follows the punctuation.

        Returns:
            True if a sentence ends here, False if not, None if the following text must be
            seen first.
        """
        if "!" in punct or "?" in punct:
            return True
        following = after.lstrip(_OPENERS)
        if not following:
            return None
        first = following[0]
        if first.islower():
            return False
        if not punct.endswith(".") or punct.endswith(".."):
            return True  # An ellipsis before an uppercase word.
        token = before.rsplit(None, 1)[-1].lstrip(_OPENERS).lower()
        if token in self.NEVER_TERMINAL or any(p.search(before) for p in self.NO_BREAK_PATTERNS):
            return False
        words: frozenset[str] = self.NEVER_BEFORE_WORD.get(token, frozenset())
        if _ORDINAL.fullmatch(token):
            if first.isdigit():
                return False  # A date such as "3. 5. 2024".
            words = words | self.MONTHS
        word_match = _WORD.match(following)
        word, word_end = (word_match[1].lower(), word_match[2]) if word_match else ("", "")
        if not words or not word:
            return True
        if not word_end:
            # The word is still streaming: wait while it may become one of the words.
            return None if any(w.startswith(word) for w in words) else True
        return word not in words
