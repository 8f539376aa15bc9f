"""Each persona's opening prompt is evaluated in the LLM server before a session needs it."""

from __future__ import annotations

from config.personas import list_personas, load_persona
from pipelines.local import opening_messages, warm_persona_prompts
from testkit.providers.base import WireFault
from testkit.providers.openai_fake import OpenAIFake


def test_opening_is_what_the_session_sends_first():
    persona = load_persona("german-tutor")
    opening = opening_messages(persona, "B1")
    assert opening[0] == {"role": "system", "content": persona.render_system_prompt("B1")}
    assert opening[1:-1] == persona.initial_messages()
    assert opening[-1] == {"role": "assistant", "content": persona.greeting}
    assert "B1" in opening[0]["content"] and "B1" not in opening_messages(persona)[0]["content"]


async def test_every_persona_is_warmed_once_and_a_failure_skips_only_that_one():
    openings = {pid: opening_messages(load_persona(pid)) for pid in list_personas()}
    async with OpenAIFake(reply="x") as llm:
        llm.inject("chat", WireFault.HTTP_5XX)  # the first persona's request fails
        took = await warm_persona_prompts(llm.base_url, openings)
        bodies = [r.body for r in llm.served("chat")]

    assert [b["messages"] for b in bodies] == list(openings.values())
    assert all(b["max_tokens"] == 1 for b in bodies)
    first, *rest = openings
    assert set(took) == set(rest) and first not in took
