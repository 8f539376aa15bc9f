"""A persona's tools: the schema the LLM sees and the handler that records each call.

Every persona tool (``tools:`` in ``config/personas/<id>.yaml``) is a note the model takes for
the session, such as an examiner's verdict on an ACS task or a tutor's note of a learner's
mistake. The handler logs the call, keeps it, awaits ``on_tool_call`` (the session can store
it) and answers the model with ``{"recorded": true}`` so the conversation goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.services.llm_service import FunctionCallParams, LLMService

from config.personas import Persona


@dataclass
class ToolCall:
    """One call the model made.

    Attributes:
        name: The tool's name (``record_acs_result``, ``note_mistake``).
        arguments: The arguments the model gave, as parsed JSON.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


OnToolCall = Callable[[ToolCall], Awaitable[None]]
"""Awaited with each call, before the model gets its result."""


def tools_schema(persona: Persona) -> ToolsSchema | None:
    """The persona's tools as Pipecat's provider-neutral schema, or ``None`` if it has none."""
    if not persona.tools:
        return None
    return ToolsSchema(
        standard_tools=[
            FunctionSchema(
                name=tool.name,
                description=tool.description,
                properties=tool.properties,
                required=tool.required,
            )
            for tool in persona.tools
        ]
    )


def register_tools(
    llm: LLMService[Any], persona: Persona, on_tool_call: OnToolCall | None = None
) -> list[ToolCall]:
    """Register a recording handler on ``llm`` for each of the persona's tools.

    Args:
        llm: The LLM service the tools are declared to.
        persona: Whose tools.
        on_tool_call: Awaited with each call (e.g. to store it).

    Returns:
        The list each call is appended to, in order.
    """
    calls: list[ToolCall] = []

    async def record(params: FunctionCallParams) -> None:
        call = ToolCall(params.function_name, dict(params.arguments))
        logger.info(f"{persona.id} called {call.name}({call.arguments})")
        calls.append(call)
        if on_tool_call is not None:
            await on_tool_call(call)
        await params.result_callback({"recorded": True})

    for tool in persona.tools:
        llm.register_function(tool.name, record)
    return calls
