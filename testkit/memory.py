"""Learners with a stored history, for the memory tests and ``bench.memory``."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.assessment import Assessment, Correction
from store import Store


async def learner_with_mistakes(
    store: Store,
    key_id: str,
    n: int,
    *,
    name: str = "Eva",
    interests: Sequence[str] = (),
    wrong: str = "Ich fahre mit der Bus Nummer {i} " + "sehr lange " * 20,
    rule: str = "mit takes the dative " * 10,
    learner_turns: int = 0,
) -> tuple[str, str]:
    """A German learner with ``n`` mistakes in one ended session; ``(learner id, session id)``.

    Mistake ``i`` is ``der Bus {i}`` → ``dem Bus {i}`` in the sentence ``wrong`` (formatted
    with ``i``), its category ``case`` or ``gender`` in turn; ``learner_turns`` learner turns
    (each after a bot turn) are stored too.
    """
    learner = await store.create_learner(key_id, name, "de", interests=list(interests))
    session, _ = await store.create_session(learner.id, key_id, "german-tutor", "local", "file")
    for i in range(learner_turns):
        await store.add_turn(session.id, {"index": 2 * i, "role": "bot", "text": "Und dann?"})
        said = f"Ich fahre jeden Tag mit der Bus zur Arbeit, Nummer {i}."
        await store.add_turn(session.id, {"index": 2 * i + 1, "role": "learner", "text": said})
    for i in range(n):
        sentence = wrong.format(i=i)
        correction = Correction(f"der Bus {i}", f"dem Bus {i}", rule, ("case", "gender")[i % 2])
        a = Assessment(
            kind="gec",
            text=sentence,
            corrected=sentence.replace("der Bus", "dem Bus"),
            errors=(correction,),
        )
        turn = i % learner_turns if learner_turns else i
        await store.add_assessment(session.id, a.to_dict(), turn)
    await store.set_session_status(session.id, "ended")
    return learner.id, session.id
