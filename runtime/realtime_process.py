"""The session process's speech-to-speech sessions (``kind: speech_to_speech`` tiers).

:func:`runtime.session_process.run` builds a cascaded session for a pipeline tier and asks
:func:`build_realtime_session_in_process` for the rest: the same transport, turn recorder
(``on_turn``), idle timeout and usage meter, on :func:`pipelines.realtime.
build_realtime_session`. The greeting, the farewell of an ``end`` request and the closing line
of a quota go through the model's own voice (``RealtimeSessionPipeline.greet`` / ``say_goodbye``):
there is no TTS. Turn taking is the provider's server VAD, so a phone call's turn strategies
are not used.

Usage: Pipecat's ``OpenAIRealtimeLLMService`` reports each ``response.done``'s ``usage`` as
LLM usage metrics (text and audio tokens in and out, cached tokens), which the usage meter
stores under the tier's provider and model (``llm``, ``openai``, ``gpt-realtime``). Each
persona tool call (an ACS verdict, a noted mistake) is stored as a ``tool_call`` session event
as it happens, and as the same assessment record the cascaded tiers' tutoring step writes
(a mistake, an ACS result), on the learner turn it was made after.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from config.tiers import get_tier

if TYPE_CHECKING:
    from pipecat.transports.base_transport import BaseTransport

    from config.personas import Persona
    from config.settings import Settings
    from contracts.session_spec import SessionSpec
    from contracts.turns import TurnRecord
    from contracts.writer import SessionWriter
    from pipelines.realtime import RealtimeSessionPipeline


def is_speech_to_speech(tier: str) -> bool:
    """Whether ``tier`` runs on one speech-to-speech model (``config/tiers.yaml`` ``kind``).

    Raises:
        config.tiers.TierError: unknown tier.
    """
    return get_tier(tier).kind == "speech_to_speech"


def build_realtime_session_in_process(
    spec: SessionSpec,
    persona: Persona,
    settings: Settings,
    store: SessionWriter,
    transport: BaseTransport,
    *,
    on_turn: Callable[[TurnRecord], Awaitable[None]],
    **_phone: Any,
) -> RealtimeSessionPipeline:
    """Build the session process's speech-to-speech session, usage meter attached.

    Args:
        spec: The session (tier, CEFR level, idle timeout, id for the usage rows).
        persona: The tutor or examiner.
        settings: ``openai_realtime_url`` and ``speech_timeout_ms``.
        store: Where the usage meter writes its rows and tool calls are stored as events.
        transport: WebRTC, Daily or a phone call's websocket.
        on_turn: Awaited with each turn as soon as it completes.
        **_phone: A phone call's ``user_turn_strategies`` and ``rtvi``; unused (server VAD
            takes turns).

    Returns:
        The session; run its worker, ``greet()`` on connect, ``say_goodbye()`` to end.

    Raises:
        config.tiers.TierError: not a speech-to-speech tier, no voice for the persona's
            language, or the provider key unset.
    """
    from config.acs import load_acs_bank
    from contracts.events import TOOL_CALL
    from observers.usage_meter import usage_observer
    from pipelines.realtime import build_realtime_session
    from pipelines.tiers import TierServices
    from pipelines.tools import ToolCall, assessment_from_tool_call

    tier = get_tier(spec.tier)
    bank = load_acs_bank() if persona.role == "examiner" else None
    last_learner: list[int] = []

    async def recording_turn(turn: TurnRecord) -> None:
        if turn.role == "learner":
            last_learner[:] = [turn.index]
        await on_turn(turn)

    async def on_tool_call(call: ToolCall) -> None:
        data = {"name": call.name, "arguments": call.arguments}
        await store.add_session_event(spec.session_id, TOOL_CALL, data)
        assessment = assessment_from_tool_call(call, bank)
        if assessment is not None:
            index = last_learner[0] if last_learner else None
            await store.add_assessment(spec.session_id, assessment.to_dict(), index)

    session = build_realtime_session(
        persona,
        transport=transport,
        settings=settings,
        tier=tier.name,
        level=spec.cefr_level,
        idle_timeout_secs=spec.idle_timeout_s,
        on_turn=recording_turn,
        on_tool_call=on_tool_call,
    )
    assert session.llm is not None and tier.realtime is not None
    # Named by the tier (the service class lives in the project's services/, which the
    # meter would otherwise take for a local one).
    services = TierServices(
        tier=tier, stt=[], llm=[session.llm], tts=[], providers={"llm": [tier.realtime.provider]}
    )
    session.worker.add_observer(usage_observer(store, spec.session_id, services))
    return session
