"""A persona's tools: the schema the LLM sees and the handler that records each call.

Every persona tool (``tools:`` in ``config/personas/<id>.yaml``) is a note the model takes for
the session, such as an examiner's verdict on an ACS task or a tutor's note of a learner's
mistake. The handler logs the call, keeps it, awaits ``on_tool_call`` (the session can store
it) and answers the model with ``{"recorded": true}`` so the conversation goes on.

On the speech-to-speech tier the model assesses the learner itself, through these tools:
:func:`assessment_from_tool_call` turns a call into the same :class:`Assessment` record the
cascaded tiers' assessment step makes, so mistakes and ACS results are stored alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.services.llm_service import FunctionCallParams, LLMService

from config.acs import AcsBank
from config.personas import Persona
from contracts.assessment import ERROR_CATEGORIES, GRADES, AcsGrade, Assessment, Correction
from services.assessment.gec import changed_spans


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


def _category(value: object) -> str:
    text = str(value or "").strip().lower().replace(" ", "_")
    return text if text in ERROR_CATEGORIES else "other"


def assessment_from_tool_call(call: ToolCall, bank: AcsBank | None = None) -> Assessment | None:
    """The assessment record a persona tool call stands for, or ``None`` for another tool.

    ``note_mistake`` (``original``, ``corrected``, ``rule``, optional ``category``) gives a
    ``gec`` assessment of ``original`` with a correction per changed span of words (the
    whole sentence when only punctuation changed); ``record_acs_result`` (``task``
    code or name, ``result``, optional ``note``) gives an ``acs`` one, its task matched to
    ``bank`` (a task code such as ``PA.I.B``, else the task's name) for the reference and
    source. Arguments the model got wrong (a grade outside :data:`GRADES`, an empty sentence)
    give ``None``: a malformed note is not a record.
    """
    args = call.arguments
    if call.name == "note_mistake":
        original = str(args.get("original", "")).strip()
        corrected = str(args.get("corrected", "")).strip()
        if not original or not corrected or original == corrected:
            return None
        rule, category = str(args.get("rule", "")).strip(), _category(args.get("category"))
        spans = changed_spans(original, corrected) or [(original, corrected)]
        errors = tuple(Correction(said, fixed, rule, category) for said, fixed in spans)
        return Assessment(
            kind="gec", text=original, corrected=corrected, errors=errors, extra={"tool": True}
        )
    if call.name == "record_acs_result":
        grade = str(args.get("result", "")).strip().lower()
        if grade not in GRADES:
            return None
        task = str(args.get("task", "")).strip()
        question = bank.find_task(task) if bank is not None else None
        note = str(args.get("note", "")).strip()
        result = AcsGrade(
            question_id=question.id if question else "",
            task=question.task if question else task,
            question=question.question if question else "",
            grade=grade,
            missing=(note,) if note and grade != "satisfactory" else (),
            reference=question.reference if question else "",
            source=question.source if question else "",
        )
        return Assessment(kind="acs", text=note, grade=result, extra={"tool": True})
    return None
