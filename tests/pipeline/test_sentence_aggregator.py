"""SentenceAggregator: sentence boundaries for the TTS, aware of aviation, German and Czech."""

import random
import re
from collections.abc import Callable

import pytest
from pipecat.frames.frames import (
    AggregatedTextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_text_processor import LLMTextProcessor
from pipecat.tests.utils import run_test

from processors.sentence_aggregator import SentenceAggregator

Chunker = Callable[[str], list[str]]

CHUNKERS: dict[str, Chunker] = {
    "chars": list,
    "3-chars": lambda text: [text[i : i + 3] for i in range(0, len(text), 3)],
    "word-then-space": lambda text: re.findall(r"\S+\s*", text),
    "space-then-word": lambda text: re.findall(r"\s*\S+|\s+$", text),
    "whole": lambda text: [text],
}


async def stream(text: str, chunker: Chunker = list, **kwargs: int) -> list[str]:
    """Stream `text` through a fresh aggregator in chunks, flush, and return the pieces."""
    aggregator = SentenceAggregator(**kwargs)
    pieces = []
    for chunk in chunker(text):
        pieces += [aggregation.text async for aggregation in aggregator.aggregate(chunk)]
    rest = await aggregator.flush()
    if rest is not None:
        pieces.append(rest.text)
    return pieces


def normalised(text: str) -> str:
    return " ".join(text.split())


LONG_WORDS = " ".join(["altimeter"] * 30)  # 299 characters, no punctuation.

# (id, input, expected pieces, constructor kwargs)
CASES: list[tuple[str, str, list[str], dict[str, int]]] = [
    # Rule 1: complete sentences are emitted one by one.
    (
        "two-sentences",
        "The tower frequency is 118.3 MHz. Contact them before entering the airspace.",
        ["The tower frequency is 118.3 MHz.", "Contact them before entering the airspace."],
        {},
    ),
    (
        "question-and-exclamation",
        "What is the ceiling for class D? Good question, it is usually 2500 feet AGL! Next.",
        [
            "What is the ceiling for class D?",
            "Good question, it is usually 2500 feet AGL!",
            "Next.",
        ],
        {},
    ),
    (
        "ellipsis-before-uppercase",
        "Let me think about this one… The answer is the VOR receiver check.",
        ["Let me think about this one…", "The answer is the VOR receiver check."],
        {},
    ),
    (
        "ellipsis-before-lowercase",
        "Well, let me think about that... you know, for a second. Then we go on with it.",
        ["Well, let me think about that... you know, for a second.", "Then we go on with it."],
        {},
    ),
    (
        "closing-quote",
        'The controller said "cleared to land." Then you read it back to the tower.',
        ['The controller said "cleared to land."', "Then you read it back to the tower."],
        {},
    ),
    (
        "newline-kept-inside-piece",
        "First line of the answer\ncontinues here. Next sentence starts here.",
        ["First line of the answer\ncontinues here.", "Next sentence starts here."],
        {},
    ),
    # Rule 2: abbreviations.
    (
        "e.g.-before-uppercase",
        "Use a checklist, e.g. The one from the POH, for every flight. Then brief everyone.",
        ["Use a checklist, e.g. The one from the POH, for every flight.", "Then brief everyone."],
        {},
    ),
    (
        "i.e.-vs.-approx.",
        "The pitot tube, i.e. The ram air inlet, feeds the airspeed indicator. Compare VFR vs. "
        "IFR minimums, it takes approx. Ten minutes. Good.",
        [
            "The pitot tube, i.e. The ram air inlet, feeds the airspeed indicator.",
            "Compare VFR vs. IFR minimums, it takes approx. Ten minutes.",
            "Good.",
        ],
        {},
    ),
    (
        "titles-and-companies",
        "Your examiner is Dr. Novak from Flight Ltd. In Prague, with Mr. Jones and Mrs. Smith "
        "of Avia Inc. And Sr. Lopez. They meet at St. Vitus.",
        [
            "Your examiner is Dr. Novak from Flight Ltd. In Prague, with Mr. Jones and Mrs. Smith "
            "of Avia Inc. And Sr. Lopez.",
            "They meet at St. Vitus.",
        ],
        {},
    ),
    (
        "aviation-abbreviations-before-digits",
        "Fly hdg. 270 at alt. 3500 and keep min. 80 knots, max. 120 knots, see No. 5, cf. 7. "
        "Then descend.",
        [
            "Fly hdg. 270 at alt. 3500 and keep min. 80 knots, max. 120 knots, see No. 5, cf. 7.",
            "Then descend.",
        ],
        {},
    ),
    (
        "in.-Hg.-before-lowercase",
        "Set the altimeter to 29.92 in. Hg. before takeoff. Then check the heading indicator.",
        ["Set the altimeter to 29.92 in. Hg. before takeoff.", "Then check the heading indicator."],
        {},
    ),
    (
        "in.-Hg.-ends-sentence",
        "Standard pressure is 29.92 in. Hg. The standard temperature is 15 degrees Celsius.",
        ["Standard pressure is 29.92 in. Hg.", "The standard temperature is 15 degrees Celsius."],
        {},
    ),
    (
        "in.-ends-sentence",
        "You will see the runway when you come in. Then flare gently above the numbers.",
        ["You will see the runway when you come in.", "Then flare gently above the numbers."],
        {},
    ),
    (
        "etc.-before-lowercase",
        "Check fuel, oil, tires, etc. before every flight of the day. That is the preflight.",
        ["Check fuel, oil, tires, etc. before every flight of the day.", "That is the preflight."],
        {},
    ),
    (
        "etc.-before-uppercase",
        "Check fuel, oil, tires, etc. Next question is about weather.",
        ["Check fuel, oil, tires, etc.", "Next question is about weather."],
        {},
    ),
    (
        "initials",
        "The first flight was made by Orville W. Wright in 1903. It lasted twelve seconds.",
        ["The first flight was made by Orville W. Wright in 1903.", "It lasted twelve seconds."],
        {},
    ),
    # Rule 3: decimals, FAA references, times.
    (
        "decimal-frequency",
        "Contact unicom on 122.8 and announce your position. Then enter the downwind leg.",
        ["Contact unicom on 122.8 and announce your position.", "Then enter the downwind leg."],
        {},
    ),
    (
        "14-CFR-91.205-ends-sentence",
        "Required equipment is listed in 14 CFR 91.205. Let us go through it item by item.",
        ["Required equipment is listed in 14 CFR 91.205.", "Let us go through it item by item."],
        {},
    ),
    (
        "AIM-and-AC-references",
        "Read AIM 7-1-11 about flight information services. Then review AC 61-65 and AC 00-6B.",
        [
            "Read AIM 7-1-11 about flight information services.",
            "Then review AC 61-65 and AC 00-6B.",
        ],
        {},
    ),
    (
        "CFR-part-and-FAR",
        "Currency is in 14 CFR Part 61.57 and FAR 91.103 covers preflight action. Any questions?",
        [
            "Currency is in 14 CFR Part 61.57 and FAR 91.103 covers preflight action.",
            "Any questions?",
        ],
        {},
    ),
    (
        "version-number",
        "The app version 2.4.1 added the new charts for you. Update it before the flight.",
        ["The app version 2.4.1 added the new charts for you.", "Update it before the flight."],
        {},
    ),
    (
        "number-ends-sentence",
        "The answer is runway 122. Next we look at the frequency chart.",
        ["The answer is runway 122.", "Next we look at the frequency chart."],
        {},
    ),
    (
        "p.m.-before-lowercase",
        "The TAF is valid from 3 p.m. until midnight local time. Check it before departure.",
        ["The TAF is valid from 3 p.m. until midnight local time.", "Check it before departure."],
        {},
    ),
    (
        "a.m.-ends-sentence",
        "We depart tomorrow at 9 a.m. Be at the airport one hour early.",
        ["We depart tomorrow at 9 a.m.", "Be at the airport one hour early."],
        {},
    ),
    # Rule 4: list markers.
    (
        "list-markers",
        "The first item is listed as (1). The second item is listed as a). Then A). Then 1). "
        "Then (a). Both matter.",
        [
            "The first item is listed as (1). The second item is listed as a). Then A). Then 1). "
            "Then (a). Both matter."
        ],
        {},
    ),
    (
        "enumeration-at-line-start",
        "Here are the preflight steps.\n1. Check the fuel quantity.\n2. Check the oil level.",
        ["Here are the preflight steps.", "1. Check the fuel quantity.", "2. Check the oil level."],
        {},
    ),
    (
        "enumeration-after-colon",
        "Remember the preflight steps:\n1. Check the fuel quantity.\n2. Check the oil level.",
        [
            "Remember the preflight steps:\n1. Check the fuel quantity.",
            "2. Check the oil level.",
        ],
        {},
    ),
    # Rule 5: German ordinals.
    (
        "ordinal-before-month",
        "Wir treffen uns am 3. Mai am Flughafen. Die Prüfung ist am 14. Oktober in Wien.",
        ["Wir treffen uns am 3. Mai am Flughafen.", "Die Prüfung ist am 14. Oktober in Wien."],
        {},
    ),
    (
        "ordinal-before-lowercase",
        "Das ist der 2. wichtigste Punkt für die Prüfung. Gut gemacht, weiter so.",
        ["Das ist der 2. wichtigste Punkt für die Prüfung.", "Gut gemacht, weiter so."],
        {},
    ),
    (
        "number-before-capitalised-word",
        "Das kostet heute genau 5. Dann zahlen wir alles zusammen.",
        ["Das kostet heute genau 5.", "Dann zahlen wir alles zusammen."],
        {},
    ),
    (
        "date-with-periods",
        "Die Prüfung findet am 3. 5. 2024 in Wien statt. Bitte sei pünktlich dort.",
        ["Die Prüfung findet am 3. 5. 2024 in Wien statt.", "Bitte sei pünktlich dort."],
        {},
    ),
    # German abbreviations.
    (
        "z.B.-and-z. B.",
        "Bring Unterlagen mit, z.B. Karten und z. B. Das Flugbuch. Danke schön für alles.",
        ["Bring Unterlagen mit, z.B. Karten und z. B. Das Flugbuch.", "Danke schön für alles."],
        {},
    ),
    (
        "d.h.-and-d. h.",
        "Der Motor läuft rau, d.h. Sie landen sofort, d. h. Heute noch. Das ist ein Notfall.",
        ["Der Motor läuft rau, d.h. Sie landen sofort, d. h. Heute noch.", "Das ist ein Notfall."],
        {},
    ),
    (
        "usw.-before-lowercase",
        "Wir lernen Verben, Nomen usw. und üben sie jeden Tag. Dann machen wir eine Pause.",
        ["Wir lernen Verben, Nomen usw. und üben sie jeden Tag.", "Dann machen wir eine Pause."],
        {},
    ),
    (
        "usw.-before-uppercase",
        "Wir lernen Verben, Nomen, Adjektive usw. Dann machen wir eine Pause.",
        ["Wir lernen Verben, Nomen, Adjektive usw.", "Dann machen wir eine Pause."],
        {},
    ),
    (
        "german-abbreviations",
        "Fragen Sie Hr. Müller bzw. Fr. Schmidt, evtl. Nr. Zwei, ggf. Raum Drei, ca. Zehn u.a. "
        "Leute. Danke schön für alles.",
        [
            "Fragen Sie Hr. Müller bzw. Fr. Schmidt, evtl. Nr. Zwei, ggf. Raum Drei, ca. Zehn u.a. "
            "Leute.",
            "Danke schön für alles.",
        ],
        {},
    ),
    # Czech abbreviations.
    (
        "např.-and-tzn.",
        "Učíme se slovesa, např. Být a mít, tzn. Základ gramatiky. To je pro dnešek všechno.",
        [
            "Učíme se slovesa, např. Být a mít, tzn. Základ gramatiky.",
            "To je pro dnešek všechno.",
        ],
        {},
    ),
    (
        "atd.-before-uppercase",
        "Máme jablka, hrušky, švestky atd. Další otázka prosím.",
        ["Máme jablka, hrušky, švestky atd.", "Další otázka prosím."],
        {},
    ),
    (
        "atd.-before-lowercase",
        "Máme jablka, hrušky atd. a také zeleninu na trhu. Další otázka prosím.",
        ["Máme jablka, hrušky atd. a také zeleninu na trhu.", "Další otázka prosím."],
        {},
    ),
    (
        "czech-abbreviations",
        "Viz str. 5, č. 3, tj. Cvičení B, př. Dva apod. Hotovo. To je vše pro dnešek.",
        ["Viz str. 5, č. 3, tj. Cvičení B, př. Dva apod. Hotovo.", "To je vše pro dnešek."],
        {},
    ),
    # Rule 6: fragments shorter than min_chars are joined with the next sentence.
    (
        "short-fragment-joined",
        "Yes. That is correct, the answer is 122.8 MHz. Now tell me about VFR minimums.",
        ["Yes. That is correct, the answer is 122.8 MHz.", "Now tell me about VFR minimums."],
        {},
    ),
    (
        "several-short-fragments-joined",
        "Yes! Correct. Good. The density altitude increases with temperature. Right.",
        ["Yes! Correct. Good. The density altitude increases with temperature.", "Right."],
        {},
    ),
    (
        "custom-min-chars",
        "Yes. That is right. Next one.",
        ["Yes.", "That is right.", "Next one."],
        {"min_chars": 0},
    ),
    # Rule 7: a buffer without boundary is cut at the last whitespace at or before max_chars.
    (
        "max-chars-word-boundary",
        LONG_WORDS,
        [" ".join(["altimeter"] * 20), " ".join(["altimeter"] * 10)],
        {},
    ),
    (
        "custom-max-chars",
        "one two three four five six seven eight nine ten eleven twelve",
        ["one two three four five six seven", "eight nine ten eleven twelve"],
        {"min_chars": 5, "max_chars": 34},
    ),
    # Rule 9: a colon is a soft boundary once the buffer exceeds 80 characters.
    (
        "colon-after-80-chars",
        "Here are the three things every student pilot must carry on a solo cross-country "
        "flight: the student pilot certificate, the medical, and a photo ID.",
        [
            "Here are the three things every student pilot must carry on a solo cross-country "
            "flight:",
            "the student pilot certificate, the medical, and a photo ID.",
        ],
        {},
    ),
    (
        "colon-early-then-buffer-exceeds-80",
        "The two items to remember are: fuel and weather, which together cause most of the "
        "accidents in general aviation.",
        [
            "The two items to remember are:",
            "fuel and weather, which together cause most of the accidents in general aviation.",
        ],
        {},
    ),
    (
        "colon-in-short-buffer",
        "Remember this rule: fly the airplane first. Then talk to the tower.",
        ["Remember this rule: fly the airplane first.", "Then talk to the tower."],
        {},
    ),
    (
        "colon-too-close-to-start",
        "Note: the magnetic compass is only reliable in straight and level unaccelerated flight, "
        "so use it carefully.",
        [
            "Note: the magnetic compass is only reliable in straight and level unaccelerated "
            "flight, so use it carefully."
        ],
        {},
    ),
    (
        "time-colon-is-no-boundary",
        "The briefing starts at 14:30 in the main hangar next to the tower and the fuel station "
        "and it ends at 15:30 sharp.",
        [
            "The briefing starts at 14:30 in the main hangar next to the tower and the fuel "
            "station and it ends at 15:30 sharp."
        ],
        {},
    ),
    # Rule 8: the end of the response flushes the rest, however short.
    ("flush-short-rest", "Roger.", ["Roger."], {}),
    ("flush-whitespace-only", "  \n ", [], {}),
]


@pytest.mark.parametrize("chunker", CHUNKERS.values(), ids=CHUNKERS.keys())
@pytest.mark.parametrize(
    ("text", "expected", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_pieces(
    text: str, expected: list[str], kwargs: dict[str, int], chunker: Chunker
) -> None:
    pieces = await stream(text, chunker, **kwargs)
    assert pieces == expected
    assert normalised(" ".join(pieces)) == normalised(text)


async def test_sentence_is_emitted_as_soon_as_the_next_word_starts() -> None:
    aggregator = SentenceAggregator()
    assert [a async for a in aggregator.aggregate("The frequency is 122.")] == []
    assert [a async for a in aggregator.aggregate("8 MHz, e.g.")] == []
    assert [a async for a in aggregator.aggregate(" The tower. ")] == []
    emitted = [a async for a in aggregator.aggregate("C")]
    assert [a.text for a in emitted] == ["The frequency is 122.8 MHz, e.g. The tower."]
    assert aggregator.text.text == "C"


async def test_question_mark_is_emitted_at_the_following_whitespace() -> None:
    aggregator = SentenceAggregator()
    assert [a async for a in aggregator.aggregate("What is the tower frequency?")] == []
    emitted = [a.text async for a in aggregator.aggregate(" ")]
    assert emitted == ["What is the tower frequency?"]


async def test_max_chars_piece_never_exceeds_limit_and_cuts_at_last_space() -> None:
    text = " ".join(f"w{i:03d}x" for i in range(100))  # 6-character words.
    pieces = await stream(text)
    assert all(len(p) <= 200 for p in pieces)
    assert pieces[0] == text[: text.rfind(" ", 0, 201)]
    assert " ".join(pieces) == text


async def test_word_longer_than_max_chars_is_not_split() -> None:
    word = "x" * 250
    pieces = await stream(f"Intro {word} and the tail of the sentence.")
    assert pieces == [f"Intro {word}", "and the tail of the sentence."]


async def test_interruption_clears_the_buffer() -> None:
    aggregator = SentenceAggregator()
    assert [a async for a in aggregator.aggregate("The first answer is not finished and")] == []
    await aggregator.handle_interruption()
    assert aggregator.text.text == ""
    emitted = [a.text async for a in aggregator.aggregate("A new answer is complete now. Ok")]
    assert emitted == ["A new answer is complete now."]
    rest = await aggregator.flush()
    assert rest is not None and rest.text == "Ok"
    assert await aggregator.flush() is None


async def test_interruption_drops_a_pending_lookahead() -> None:
    aggregator = SentenceAggregator()
    assert [a async for a in aggregator.aggregate("Wir treffen uns am 3. ")] == []
    await aggregator.handle_interruption()
    emitted = [a.text async for a in aggregator.aggregate("Mai ist ein schöner Monat. Ja")]
    assert emitted == ["Mai ist ein schöner Monat."]


async def test_reset_clears_the_buffer() -> None:
    aggregator = SentenceAggregator()
    assert [a async for a in aggregator.aggregate("Some text that was never spoken")] == []
    await aggregator.reset()
    assert await aggregator.flush() is None


def test_invalid_lengths_are_rejected() -> None:
    with pytest.raises(ValueError):
        SentenceAggregator(min_chars=50, max_chars=50)
    with pytest.raises(ValueError):
        SentenceAggregator(min_chars=-1)


async def test_persona_can_extend_abbreviations() -> None:
    class FeetAggregator(SentenceAggregator):
        NEVER_TERMINAL = SentenceAggregator.NEVER_TERMINAL | {"ft."}

    text = "Now climb straight ahead to 3000 ft. Then level off and reduce power. Good."
    assert await stream(text) == [
        "Now climb straight ahead to 3000 ft.",
        "Then level off and reduce power.",
        "Good.",
    ]
    aggregator = FeetAggregator()
    pieces = [a.text async for a in aggregator.aggregate(text)]
    assert pieces == ["Now climb straight ahead to 3000 ft. Then level off and reduce power."]


@pytest.mark.parametrize("seed", range(40))
async def test_random_concatenations_lose_and_duplicate_nothing(seed: int) -> None:
    rng = random.Random(seed)
    pool = [text for _, text, _, kwargs in CASES if not kwargs and text.strip()]
    text = "".join(s + rng.choice([" ", "  ", "\n", " \n "]) for s in rng.sample(pool, 5))

    def random_chunks(t: str) -> list[str]:
        chunks, i = [], 0
        while i < len(t):
            size = rng.randint(1, 12)
            chunks.append(t[i : i + size])
            i += size
        return chunks

    pieces = await stream(text, random_chunks)
    assert normalised(" ".join(pieces)) == normalised(text)
    assert all(p == p.strip() and p in text for p in pieces)
    assert all(20 <= len(p) for p in pieces[:-1])
    assert all(len(p) <= 200 for p in pieces)
    assert pieces == await stream(text, list)


async def test_in_pipeline_with_llm_text_processor() -> None:
    text = (
        "Yes. The frequency is 122.8 MHz, e.g. The CTAF. Set 29.92 in. Hg. before takeoff. "
        "Read 14 CFR 91.205 too. Done."
    )
    tokens = re.findall(r"\s*\S+", text)
    frames = [
        LLMFullResponseStartFrame(),
        *[LLMTextFrame(text=token) for token in tokens],
        LLMFullResponseEndFrame(),
    ]
    down, _ = await run_test(
        Pipeline([LLMTextProcessor(text_aggregator=SentenceAggregator())]),
        frames_to_send=frames,
    )
    texts = [f.text for f in down if type(f) is AggregatedTextFrame]
    assert texts == [
        "Yes. The frequency is 122.8 MHz, e.g. The CTAF.",
        "Set 29.92 in. Hg. before takeoff.",
        "Read 14 CFR 91.205 too.",
        "Done.",
    ]
    assert not any(isinstance(f, LLMTextFrame) for f in down)


async def pieces_of(aggregator: SentenceAggregator, text: str) -> list[str]:
    out = []
    for token in re.findall(r"\s*\S+", text):
        out += [a.text async for a in aggregator.aggregate(token)]
    rest = await aggregator.flush()
    return out + ([rest.text] if rest else [])


async def test_first_clause_of_a_response_is_released_at_its_comma() -> None:
    aggregator = SentenceAggregator(first_clause_chars=24)
    reply = "That is a good question, and the answer is 30 minutes, day VFR. Next, fuel."
    assert await pieces_of(aggregator, reply) == [
        "That is a good question,",
        # Later commas are not boundaries: the sentence rules hold after the first piece.
        "and the answer is 30 minutes, day VFR.",
        "Next, fuel.",
    ]
    # The next response starts over with a first clause of its own.
    assert (await pieces_of(aggregator, "Richtig, du hast das sehr gut gemacht. Weiter."))[0] == (
        "Richtig, du hast das sehr gut gemacht."
    )
    assert (await pieces_of(aggregator, "Nach der Landung, also am Boden – was prüfst du?")) == [
        "Nach der Landung, also am Boden –",
        "was prüfst du?",
    ]


async def test_first_clause_needs_its_length_and_three_words() -> None:
    aggregator = SentenceAggregator(first_clause_chars=24)
    # "Richtig," is too short; "1,5" has no space after its comma; so the sentence decides.
    assert await pieces_of(aggregator, "Richtig, 1,5 Liter sind korrekt. Gut.") == [
        "Richtig, 1,5 Liter sind korrekt.",
        "Gut.",
    ]
    assert await pieces_of(aggregator, "Supercalifragilisticexpialidocious, yes indeed.") == [
        "Supercalifragilisticexpialidocious, yes indeed."
    ]


async def test_an_interruption_restores_the_first_clause_rule() -> None:
    aggregator = SentenceAggregator(first_clause_chars=24)
    assert [a.text async for a in aggregator.aggregate("One more sentence here. And then, ")] == [
        "One more sentence here."
    ]
    await aggregator.handle_interruption()
    got = [a.text async for a in aggregator.aggregate("After that interruption, we go on ")]
    assert got == ["After that interruption,"]
