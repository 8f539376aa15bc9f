"""A local-tier session process reads its persona's opening into the LLM server at start.

The server warms every persona at its default CEFR level; a session at another level has a
system prompt of its own, which its process evaluates as soon as it starts, before the
learner connects, so the first turn does not pay for it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from config.personas import load_persona
from contracts.session_spec import SessionSpec
from pipelines.local import opening_messages
from pipelines.memory import RECORD_LABEL, LearnerMemory
from runtime.supervisor import SessionSupervisor
from store import Store
from testkit.providers.openai_fake import OpenAIFake

pytestmark = [pytest.mark.e2e]


async def warm_ups(tmp_path, level: str, mode: str = "conversation", **spec: object) -> list[dict]:
    """Spawn a local-tier German session on a fake LLM; the warm-up requests it sent."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    key, _ = await store.create_api_key("test")
    learner = await store.create_learner(key.id, "Pat", "de", level)
    sup = SessionSupervisor(store, max_sessions=1, log_dir=tmp_path / "logs")
    try:
        async with OpenAIFake(reply="Gut.") as llm:
            info, _ = await store.create_session(
                learner.id, key.id, "german-tutor", "local", "webrtc", mode
            )
            await sup.spawn(
                SessionSpec(
                    session_id=info.id,
                    persona="german-tutor",
                    tier="local",
                    transport="webrtc",
                    llm_base_url=llm.base_url,
                    cefr_level=level,
                    mode=mode,
                    **spec,  # type: ignore[arg-type]
                )
            )
            deadline = time.monotonic() + 30
            warm: list[dict] = []
            while time.monotonic() < deadline and not warm:
                warm = [r.body for r in llm.served("chat") if r.body.get("max_tokens") == 1]
                await asyncio.sleep(0.2)
            assert warm, [r.body for r in llm.served("chat")]
            await sup.end(info.id, "test done")
            return warm
    finally:
        await sup.shutdown()
        await store.close()


async def test_session_process_warms_its_opening_at_the_learners_level(tmp_path):
    warm = await warm_ups(tmp_path, "B1")
    expected = opening_messages(load_persona("german-tutor"), "B1")
    matched = [w for w in warm if w["messages"] == expected]
    assert matched, warm
    assert "B1" in matched[0]["messages"][0]["content"]


MEMORY = LearnerMemory(
    name="Pat",
    returning=True,
    sessions=2,
    interests=("Fußball",),
    weaknesses=(
        {
            "category": "case",
            "count": 3,
            "rule": "mit + Dativ",
            "original": "der",
            "corrected": "dem",
        },
    ),
    review=(
        {
            "id": 1,
            "kind": "gec",
            "prompt": "Ich fahre mit der Bus.",
            "answer": "Ich fahre mit dem Bus.",
            "original": "der Bus",
            "corrected": "dem Bus",
            "category": "case",
        },
    ),
    last_correction="dem Bus",
)


@pytest.mark.parametrize("mode", ["conversation", "review"])
async def test_a_session_process_starts_from_the_learners_memory(tmp_path, mode: str) -> None:
    """The spec's memory reaches the prompt: the instruction, the record, the greeting."""
    warm = await warm_ups(tmp_path, "A2", mode, memory=MEMORY.to_json())
    system, record, *_, greeting = warm[0]["messages"]
    assert "case" in system["content"] and "Pat" not in system["content"]
    assert record["role"] == "user" and RECORD_LABEL in record["content"]
    assert "Fußball" in record["content"]
    if mode == "review":
        assert greeting["content"].startswith("Hallo Pat! Heute wiederholen wir einen Satz")
        assert greeting["content"].endswith("Ich fahre mit der Bus.")
    else:
        assert greeting["content"].startswith("Hallo Pat, schön")
        assert "„dem Bus“" in greeting["content"]
