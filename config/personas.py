"""Personas: who the bot is in a session, validated from ``config/personas/<id>.yaml``.

A persona fixes the language (which pins STT, picks the TTS voice and the turn strategy), the
default CEFR level, the greeting the bot opens with, the system prompt and few-shot examples
the LLM sees, and the STT keyterms. Files are validated strictly so a typo fails at load
time with the file and field named, never mid-session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PERSONA_DIR = Path(__file__).parent / "personas"

Language = Literal["en", "de", "cs"]
CefrLevel = Literal["A1", "A2", "B1", "B2", "C1", "C2"]
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "de": "German", "cs": "Czech"}
DEFAULT_FAREWELLS: dict[str, str] = {
    "en": "Thank you, that's all for today. Goodbye!",
    "de": "Danke, das war's für heute. Tschüss!",
    "cs": "Děkuji, to je pro dnešek všechno. Ahoj!",
}
"""What the bot says when a session is ended from outside, per language."""
PROMPT_PLACEHOLDERS = ("level", "language", "name", "acs_areas")
"""What ``system_prompt`` may refer to as ``{placeholder}``."""


class PersonaError(ValueError):
    """A persona is unknown or its file is invalid; the message names the file and fields."""


class Example(BaseModel):
    """One few-shot exchange shown to the LLM before the conversation.

    Attributes:
        learner: What the learner says (may contain a mistake).
        reply: The ideal spoken reply (correction first, then the conversation goes on).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    learner: str = Field(min_length=1)
    reply: str = Field(min_length=1)


JSON_SCHEMA_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object"})
"""JSON Schema ``type`` values a tool argument may declare (https://json-schema.org)."""


class Tool(BaseModel):
    """A function the LLM may call during a session (the realtime tier declares them).

    Follows OpenAI's function tool shape,
    https://platform.openai.com/docs/api-reference/realtime-client-events/session/update
    (``{"type": "function", "name", "description", "parameters"}``).

    Attributes:
        name: Function name: letters, digits, ``_`` and ``-``, at most 64 characters.
        description: What the function does and when the model should call it.
        parameters: JSON Schema of the arguments: ``type: object`` with ``properties`` (each
            one a schema with a ``type`` or an ``enum``) and ``required`` naming some of them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if schema.get("type") != "object":
            raise ValueError("parameters must be a JSON Schema with type: object")
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError("parameters.properties must map argument names to schemas")
        for arg, spec in properties.items():
            ok = isinstance(spec, dict) and (
                spec.get("type") in JSON_SCHEMA_TYPES or "enum" in spec
            )
            if not ok:
                raise ValueError(f"argument {arg!r} needs a JSON Schema type or an enum")
        required = schema.get("required", [])
        if not isinstance(required, list) or not set(required) <= set(properties):
            raise ValueError("parameters.required must list some of parameters.properties")
        return schema

    @property
    def properties(self) -> dict[str, Any]:
        """The argument schemas by name."""
        return dict(self.parameters.get("properties", {}))

    @property
    def required(self) -> list[str]:
        """The names of the arguments the model must give."""
        return list(self.parameters.get("required", []))


class Persona(BaseModel):
    """A tutor or examiner definition.

    Attributes:
        id: Slug, equal to the file name without ``.yaml``.
        name: The name the bot uses for itself ("Honzík").
        role: ``tutor`` corrects and converses; ``examiner`` runs an oral exam.
        language: ISO 639-1 code of the language spoken in the session (en, de, cs).
        cefr_level: Default CEFR level the tutor speaks at when the learner has none.
        greeting: First sentence the bot says, before the learner speaks.
        system_prompt: LLM instructions; ``{level}``, ``{language}`` and ``{name}`` are filled
            in by :meth:`render_system_prompt`.
        examples: Few-shot exchanges (small local models need them to correct reliably).
        stt_keyterms: Terms STT should favour (Whisper hotwords, Deepgram keyterms).
        voice: Local-tier voice, ``engine:name`` or a bare name: a Piper voice for English
            (``en_US-joe-medium``); for German ``pico:de-DE`` (SVOX Pico) or an espeak-ng
            voice (``de``, ``espeak:de+m3``); for Czech ``festival:czech_dita`` /
            ``festival:czech_machac`` or an espeak-ng voice (``cs``). A Pico or Festival
            voice that is not installed falls back to espeak-ng (see :attr:`voice_engine`).
        acs_areas: For examiners, the ACS areas of operation to cover (FAA-S-ACS-6C).
        farewell: Goodbye spoken when the session is ended; a language default if unset.
        tools: Functions the LLM may call (names unique), e.g. to record an exam result.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1)
    role: Literal["tutor", "examiner"]
    language: Language
    cefr_level: CefrLevel = "A2"
    greeting: str = Field(min_length=1)
    system_prompt: str = Field(min_length=20)
    examples: tuple[Example, ...] = ()
    stt_keyterms: tuple[str, ...] = ()
    voice: str = Field(min_length=1)
    acs_areas: tuple[str, ...] = ()
    farewell: str | None = None
    tools: tuple[Tool, ...] = ()

    @property
    def farewell_text(self) -> str:
        """The goodbye spoken when the session is ended: ``farewell`` or a language default."""
        return self.farewell or DEFAULT_FAREWELLS[self.language]

    @field_validator("system_prompt")
    @classmethod
    def _known_placeholders(cls, prompt: str) -> str:
        # A typo such as {levl} must fail here, not as a KeyError when the session starts.
        try:
            prompt.format(**dict.fromkeys(PROMPT_PLACEHOLDERS, ""))
        except KeyError as e:
            allowed = ", ".join(f"{{{p}}}" for p in PROMPT_PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{e.args[0]}}}; use {allowed}") from None
        except (IndexError, ValueError) as e:
            raise ValueError(f"not a valid template ({e}); write a literal brace twice") from None
        return prompt

    @property
    def voice_engine(self) -> tuple[str, str]:
        """``(engine, voice)`` of :attr:`voice`.

        The engine is ``piper``, ``pico``, ``festival`` or ``espeak``; a bare name is Piper
        for English and espeak-ng otherwise.
        """
        engine, sep, name = self.voice.partition(":")
        if sep:
            return engine, name
        return ("piper" if self.language == "en" else "espeak"), self.voice

    @model_validator(mode="after")
    def _voice_speaks_language(self) -> Persona:
        engine, name = self.voice_engine
        if self.language == "en":
            ok = engine == "piper" and name.startswith("en_")
            hint = "a Piper voice such as en_US-joe-medium"
        elif self.language == "de":
            ok = (engine == "pico" and name == "de-DE") or (
                engine == "espeak" and name.split("+", 1)[0] == "de"
            )
            hint = "pico:de-DE or an espeak-ng voice such as 'de'"
        else:
            ok = (engine == "festival" and name.startswith("czech_")) or (
                engine == "espeak" and name.split("+", 1)[0] == "cs"
            )
            hint = "festival:czech_dita or an espeak-ng voice such as 'cs'"
        if not ok:
            raise ValueError(
                f"voice {self.voice!r} does not speak {LANGUAGE_NAMES[self.language]}; use {hint}"
            )
        if self.role == "examiner" and not self.acs_areas:
            raise ValueError("an examiner needs acs_areas (the ACS areas of operation to cover)")
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique: {names}")
        return self

    def render_system_prompt(self, level: str | None = None) -> str:
        """Return the system prompt with level, language and name filled in.

        Args:
            level: The learner's CEFR level; the persona default when ``None``.
        """
        prompt = self.system_prompt.format(
            level=level or self.cefr_level,
            language=LANGUAGE_NAMES[self.language],
            name=self.name,
            acs_areas="; ".join(self.acs_areas),
        )
        return prompt.strip()

    def initial_messages(self) -> list[dict[str, str]]:
        """Return the few-shot turns a session's LLM context starts with.

        The system prompt is not included (it goes to the LLM service as its system
        instruction, see :meth:`render_system_prompt`), nor is the greeting (appended when
        spoken).

        Returns:
            OpenAI-style messages (``role``/``content`` dicts), learner and tutor alternating.
        """
        messages: list[dict[str, str]] = []
        for ex in self.examples:
            messages.append({"role": "user", "content": ex.learner})
            messages.append({"role": "assistant", "content": ex.reply})
        return messages


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(file)"
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "field is missing"
        elif e["type"] == "literal_error" and loc == "language":
            msg = f"{e['input']!r} is not a supported language; choose one of en, de, cs"
        lines.append(f"  {loc}: {msg}")
    return f"invalid persona file {path}:\n" + "\n".join(lines)


def parse_persona_file(path: Path) -> Persona:
    """Load and validate one persona file.

    Args:
        path: A YAML file holding one persona.

    Raises:
        PersonaError: The file is missing, not YAML, not a mapping, fails validation, or its
            ``id`` differs from the file name. The message names the file and each field.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PersonaError(f"cannot read persona file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise PersonaError(f"persona file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise PersonaError(f"persona file {path} must hold a mapping of fields")
    try:
        persona = Persona.model_validate(data)
    except ValidationError as e:
        raise PersonaError(_format_validation_error(path, e)) from None
    if persona.id != path.stem:
        raise PersonaError(f"persona file {path}: id {persona.id!r} must equal {path.stem!r}")
    return persona


def list_personas(directory: Path = PERSONA_DIR) -> list[str]:
    """Return the ids of the personas defined in ``directory``, sorted."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_persona(persona_id: str, directory: Path = PERSONA_DIR) -> Persona:
    """Load a persona by id.

    Raises:
        PersonaError: No such persona (the message lists the known ones) or its file is
            invalid.
    """
    path = directory / f"{persona_id}.yaml"
    if not path.is_file():
        known = ", ".join(list_personas(directory)) or "none"
        raise PersonaError(f"unknown persona {persona_id!r}; known personas: {known}")
    return parse_persona_file(path)
