"""Backups built on first use (``DeferredService``) in the real session pipeline.

A session carries its backups as stand-ins; the first failover that reaches one builds and
starts the real service. What must hold: nothing built before it is needed, the reply whole
once it is, a backup that cannot be built skipped like a failed provider, a backup's own
fault moving the group on, and an LLM's function registrations reaching the LLM built later.
"""

from __future__ import annotations

from typing import Any

from pipecat.services.llm_service import FunctionCallParams

from processors.failover.deferred import DeferredLLMService, DeferredService, deferred
from processors.failover.groups import failover_llm, failover_tts
from services.text_only_tts import TextOnlyTTSService
from testkit.failover_fakes import ScriptedLLM, ScriptedTTS, ServiceFault
from testkit.failover_rig import POLICY, REPLY, SENTENCES, run_session, user_says

S1, S2, S3 = SENTENCES


def counted(make: Any) -> tuple[Any, list[Any]]:
    """A builder that records what it built (and how often it was called)."""
    built: list[Any] = []

    def build() -> Any:
        service = make()
        built.append(service)
        return service

    return build, built


async def test_a_deferred_backup_is_built_once_on_failover_and_finishes_the_reply(tmp_path):
    primary = ScriptedTTS(1)
    primary.inject(ServiceFault.SERVER, after=2, skip=1)  # the second sentence fails
    build, built = counted(lambda: ScriptedTTS(2))
    standin = deferred("tts", build, modules=("json",), provider="deepgram")
    group = failover_tts(
        [("cartesia", primary), ("deepgram", standin), ("text", TextOnlyTTSService())], POLICY
    )
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=ScriptedLLM(REPLY), tts=group
    )
    assert run.watch.sentences == SENTENCES and run.assistant() == [REPLY]
    [backup] = built
    assert standin.built and standin.inner is backup
    # The failed sentence, whole, once, by the backup, and the rest after it.
    assert backup.requests == [S2, S3]
    assert run.watch.audio_before()[S2][2] == backup.chunks_for(S2)
    [notice] = run.watch.notices
    assert (notice["from"], notice["to"], notice["reason"]) == (
        "cartesia",
        "deepgram",
        "server_error",
    )


async def test_an_unused_backup_is_never_built(tmp_path):
    build, built = counted(lambda: ScriptedTTS(2))
    standin = deferred("tts", build, modules=(), provider="deepgram")
    group = failover_tts([("cartesia", ScriptedTTS(1)), ("deepgram", standin)], POLICY)
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=ScriptedLLM(REPLY), tts=group
    )
    assert run.watch.sentences == SENTENCES
    assert built == [] and not standin.built


async def test_a_backup_that_cannot_be_built_is_skipped_for_the_next(tmp_path):
    primary = ScriptedTTS(1)
    primary.inject(ServiceFault.SERVER, after=2, skip=1)

    def broken() -> ScriptedTTS:
        raise ImportError("no module named 'openai'")

    build, built = counted(lambda: ScriptedTTS(3))
    group = failover_tts(
        [
            ("cartesia", primary),
            ("openai", deferred("tts", broken, modules=(), provider="openai")),
            ("local", deferred("tts", build, modules=(), provider="local")),
        ],
        POLICY,
    )
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=ScriptedLLM(REPLY), tts=group
    )
    assert run.watch.sentences == SENTENCES and run.assistant() == [REPLY]
    [local] = built
    assert local.requests == [S2, S3]
    [notice] = run.watch.notices
    assert (notice["from"], notice["to"]) == ("cartesia", "local")


async def test_a_fault_of_a_built_backup_moves_the_group_on(tmp_path):
    primary = ScriptedTTS(1)
    primary.inject(ServiceFault.SERVER, after=2, skip=1)

    def flaky() -> ScriptedTTS:
        backup = ScriptedTTS(2)
        backup.inject(ServiceFault.SERVER, after=1)  # its error must count as the stand-in's
        return backup

    text = TextOnlyTTSService()
    group = failover_tts(
        [
            ("cartesia", primary),
            ("deepgram", deferred("tts", flaky, modules=(), provider="deepgram")),
            ("text", text),
        ],
        POLICY,
    )
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=ScriptedLLM(REPLY), tts=group
    )
    assert run.assistant() == [REPLY]
    # The backup's error names the fault (a watchdog would only see a cut sentence later).
    assert [(n["from"], n["to"], n["reason"]) for n in run.watch.notices] == [
        ("cartesia", "deepgram", "server_error"),
        ("deepgram", "text", "server_error"),
    ]
    assert text.sentences  # the rest of the reply reached the learner as text


class ToolLLM(ScriptedLLM):
    """A scripted LLM that keeps what is registered on it and the tools synced to it."""

    def __init__(self) -> None:
        super().__init__(REPLY)
        self.functions: dict[str | None, Any] = {}
        self.synced: list[Any] = []

    def register_function(self, function_name: str | None, handler: Any, **kwargs: Any) -> None:
        self.functions[function_name] = handler

    def _sync_registered_tool_handlers(self, tools: Any) -> None:
        self.synced.append(tools)


async def test_functions_registered_before_the_build_reach_the_built_llm(tmp_path):
    primary = ToolLLM()
    primary.inject(ServiceFault.SERVER, after=3)
    build, built = counted(ToolLLM)
    standin = deferred("llm", build, modules=(), provider="openai")
    assert isinstance(standin, DeferredLLMService)
    [group] = failover_llm([("anthropic", primary), ("openai", standin)], POLICY)

    async def lookup(params: FunctionCallParams) -> None:
        await params.result_callback({"metar": "KPDX 211953Z 18005KT 10SM"})

    group.register_function("get_metar", lookup)  # Pipecat's LLMSwitcher: on every LLM
    for turn in range(50):  # the switcher syncs tools on every turn's context
        group._sync_registered_tool_handlers([f"tools of turn {turn}"])
    assert built == []
    run = await run_session(
        tmp_path, [user_says("Co mám udělat?"), 2.5], llm=group, tts=ScriptedTTS(1)
    )
    assert run.assistant() == [REPLY]
    [backup] = built
    assert backup.functions == {"get_metar": lookup} == primary.functions
    # 51 syncs came before the build (ours, then the turn's context): only the latest is
    # replayed, not all of them.
    assert len(primary.synced) >= 51 and primary.synced[49] == ["tools of turn 49"]
    assert backup.synced[0] == primary.synced[50] and len(backup.synced) < 5
    # Registered after the build: straight through.
    group.register_function("get_taf", lookup)
    assert set(backup.functions) == {"get_metar", "get_taf"}


def test_a_stand_in_knows_nothing_until_built() -> None:
    standin = DeferredService(lambda: ScriptedTTS(2), provider="deepgram")
    assert not standin.built and standin.inner is None
    assert standin.is_usable and standin.produces_audio
