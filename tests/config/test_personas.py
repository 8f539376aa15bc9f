"""Personas: the shipped files load and render; bad files fail with the file and field named."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
import yaml

from config.personas import (
    PERSONA_DIR,
    Persona,
    PersonaError,
    list_personas,
    load_persona,
    parse_persona_file,
)

SHIPPED = ["aviation-examiner", "czech-tutor", "german-tutor"]
TUTORS = ["czech-tutor", "german-tutor"]


def shipped_data(persona_id: str) -> dict:
    return yaml.safe_load((PERSONA_DIR / f"{persona_id}.yaml").read_text(encoding="utf-8"))


def write_persona(directory: Path, data: object, name: str | None = None) -> Path:
    """Write ``data`` as ``<name or data['id']>.yaml`` in ``directory``."""
    stem = name or data["id"]  # type: ignore[index]
    path = directory / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def tutor_data(**changes: object) -> dict:
    """A valid German tutor, with ``changes`` applied (``None`` deletes the field)."""
    data = shipped_data("german-tutor")
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def persona_error(directory: Path, data: object, name: str | None = None) -> str:
    path = write_persona(directory, data, name)
    with pytest.raises(PersonaError) as exc:
        load_persona(path.stem, directory=directory)
    return str(exc.value)


# -- the shipped personas -------------------------------------------------------------------


def test_the_three_shipped_personas_are_listed():
    assert list_personas() == SHIPPED


@pytest.mark.parametrize("persona_id", SHIPPED)
def test_shipped_persona_loads_with_its_id_and_renders_without_placeholders(persona_id):
    persona = load_persona(persona_id)

    assert persona.id == persona_id
    prompt = persona.render_system_prompt()
    assert persona.name in prompt
    assert not re.search(r"\{\w*\}", prompt), "an unfilled placeholder is left in the prompt"
    assert prompt == prompt.strip()


@pytest.mark.parametrize("persona_id", TUTORS)
def test_tutor_prompt_contains_the_requested_level_or_the_default(persona_id):
    persona = load_persona(persona_id)
    other = "C2" if persona.cefr_level != "C2" else "A1"

    assert persona.cefr_level in persona.render_system_prompt()
    requested = persona.render_system_prompt(other)
    assert other in requested
    assert persona.cefr_level not in requested


def test_examiner_prompt_lists_every_acs_area():
    persona = load_persona("aviation-examiner")

    prompt = persona.render_system_prompt()
    assert persona.acs_areas, "the examiner ships without ACS areas"
    for area in persona.acs_areas:
        assert area in prompt


@pytest.mark.parametrize("persona_id", SHIPPED)
def test_initial_messages_alternate_learner_and_assistant_from_the_examples(persona_id):
    persona = load_persona(persona_id)

    messages = persona.initial_messages()
    assert len(messages) == 2 * len(persona.examples) >= 4
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(persona.examples)
    assert [m["content"] for m in messages[::2]] == [e.learner for e in persona.examples]
    assert [m["content"] for m in messages[1::2]] == [e.reply for e in persona.examples]
    assert persona.greeting not in [m["content"] for m in messages]


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


@pytest.mark.parametrize("persona_id", TUTORS)
def test_tutor_examples_include_a_correction_that_repeats_the_fixed_sentence_first(persona_id):
    persona = load_persona(persona_id)

    corrections = [
        ex
        for ex in persona.examples
        if first_sentence(ex.reply) != ex.learner
        and difflib.SequenceMatcher(None, first_sentence(ex.reply), ex.learner).ratio() > 0.7
    ]
    assert corrections, "no few-shot example opens its reply with the corrected sentence"
    # The correction is followed by a question that keeps the conversation going.
    assert all(ex.reply.rstrip().endswith("?") for ex in corrections)


@pytest.mark.parametrize("persona_id", TUTORS)
def test_tutor_examples_include_a_correct_sentence_left_uncorrected(persona_id):
    persona = load_persona(persona_id)

    assert any(
        difflib.SequenceMatcher(None, first_sentence(ex.reply), ex.learner).ratio() < 0.5
        for ex in persona.examples
    )


# -- validation -----------------------------------------------------------------------------


def test_a_valid_persona_file_outside_the_package_loads(tmp_path):
    write_persona(tmp_path, tutor_data(id="my-tutor", cefr_level="B1"))

    persona = load_persona("my-tutor", directory=tmp_path)
    assert isinstance(persona, Persona)
    assert persona.cefr_level == "B1"
    assert list_personas(tmp_path) == ["my-tutor"]


def test_missing_field_names_the_field_and_the_file(tmp_path):
    message = persona_error(tmp_path, tutor_data(greeting=None))

    assert "greeting: field is missing" in message
    assert str(tmp_path / "german-tutor.yaml") in message


def test_every_invalid_field_is_reported_on_its_own_line(tmp_path):
    message = persona_error(tmp_path, tutor_data(greeting=None, name=None))

    lines = message.splitlines()
    assert "  greeting: field is missing" in lines
    assert "  name: field is missing" in lines


def test_misspelt_field_is_named_as_unknown(tmp_path):
    data = tutor_data(greeting=None)
    data["greting"] = "Hallo!"

    message = persona_error(tmp_path, data)
    assert "greting:" in message
    assert "greeting: field is missing" in message


def test_unknown_language_names_the_allowed_languages(tmp_path):
    message = persona_error(tmp_path, tutor_data(language="fr", voice="fr"))

    assert "language: 'fr' is not a supported language" in message
    assert "en, de, cs" in message


@pytest.mark.parametrize(
    ("language", "voice"),
    [("de", "cs"), ("cs", "de+m3"), ("en", "de"), ("de", "en_US-joe-medium")],
)
def test_voice_that_does_not_speak_the_language_is_refused(tmp_path, language, voice):
    message = persona_error(tmp_path, tutor_data(language=language, voice=voice))

    assert f"voice {voice!r} does not speak" in message
    assert str(tmp_path / "german-tutor.yaml") in message


@pytest.mark.parametrize(("language", "voice"), [("de", "de+m3"), ("cs", "cs"), ("en", "en_GB-x")])
def test_voice_variant_of_the_language_is_accepted(tmp_path, language, voice):
    write_persona(tmp_path, tutor_data(language=language, voice=voice))

    assert load_persona("german-tutor", directory=tmp_path).voice == voice


def test_examiner_without_acs_areas_is_refused(tmp_path):
    data = shipped_data("aviation-examiner")
    del data["acs_areas"]

    message = persona_error(tmp_path, data)
    assert "an examiner needs acs_areas" in message
    assert str(tmp_path / "aviation-examiner.yaml") in message


def test_tutor_needs_no_acs_areas(tmp_path):
    write_persona(tmp_path, tutor_data(acs_areas=None))

    assert load_persona("german-tutor", directory=tmp_path).acs_areas == ()


def test_id_different_from_the_file_name_is_refused(tmp_path):
    message = persona_error(tmp_path, tutor_data(id="german-tutor"), name="deutsch")

    assert "id 'german-tutor' must equal 'deutsch'" in message
    assert str(tmp_path / "deutsch.yaml") in message


def test_misspelt_prompt_placeholder_fails_at_load_time_not_mid_session(tmp_path):
    prompt = "Du bist {name}, eine Lehrerin für Niveau {levl}. Antworte auf Deutsch."

    message = persona_error(tmp_path, tutor_data(system_prompt=prompt))
    assert "system_prompt:" in message
    assert "{levl}" in message
    assert "{level}" in message


def test_stray_brace_in_prompt_fails_at_load_time(tmp_path):
    prompt = "Du bist {name}. Benutze nie das Zeichen } in deinen Antworten."

    message = persona_error(tmp_path, tutor_data(system_prompt=prompt))
    assert "system_prompt: " in message
    assert "not a valid template" in message


def test_doubled_braces_in_prompt_render_as_literal_braces(tmp_path):
    prompt = "Du bist {name} auf Niveau {level}. Sag nie {{Platzhalter}} laut."
    write_persona(tmp_path, tutor_data(system_prompt=prompt))

    rendered = load_persona("german-tutor", directory=tmp_path).render_system_prompt("B2")
    assert rendered == "Du bist Lena auf Niveau B2. Sag nie {Platzhalter} laut."


def test_file_that_is_not_yaml_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: broken\nname: [unclosed\n", encoding="utf-8")

    with pytest.raises(PersonaError, match="is not valid YAML") as exc:
        load_persona("broken", directory=tmp_path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("content", ["- id: german-tutor\n- name: Lena\n", "just a sentence\n", ""])
def test_file_that_is_not_a_mapping_is_refused(tmp_path, content):
    path = tmp_path / "german-tutor.yaml"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(PersonaError, match="must hold a mapping of fields") as exc:
        parse_persona_file(path)
    assert str(path) in str(exc.value)


def test_unreadable_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "ghost.yaml"

    with pytest.raises(PersonaError, match="cannot read persona file") as exc:
        parse_persona_file(path)
    assert str(path) in str(exc.value)


def test_unknown_persona_id_lists_the_known_ones():
    with pytest.raises(PersonaError) as exc:
        load_persona("french-tutor")

    message = str(exc.value)
    assert "unknown persona 'french-tutor'" in message
    assert "known personas: aviation-examiner, czech-tutor, german-tutor" in message


def test_unknown_persona_in_an_empty_directory_says_there_are_none(tmp_path):
    with pytest.raises(PersonaError, match="known personas: none"):
        load_persona("german-tutor", directory=tmp_path)


# -- tools ----------------------------------------------------------------------------------


def test_shipped_personas_declare_their_recording_tools():
    examiner, tutors = load_persona("aviation-examiner"), [load_persona(p) for p in TUTORS]

    [acs] = examiner.tools
    assert acs.name == "record_acs_result"
    assert acs.required == ["area", "task", "result"]
    assert acs.properties["result"]["enum"] == ["satisfactory", "unsatisfactory"]
    for tutor in tutors:
        assert [(t.name, t.required) for t in tutor.tools] == [
            ("note_mistake", ["original", "corrected", "rule"])
        ]


def test_a_persona_without_tools_has_none(tmp_path):
    write_persona(tmp_path, tutor_data(tools=None))

    assert load_persona("german-tutor", directory=tmp_path).tools == ()


def tool(**changes: object) -> dict:
    data = {
        "name": "note_mistake",
        "description": "Note a mistake.",
        "parameters": {
            "type": "object",
            "properties": {"original": {"type": "string"}, "level": {"enum": ["A1", "A2"]}},
            "required": ["original"],
        },
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (tool(name="note mistake"), "tools.0.name"),
        (tool(parameters={"type": "string"}), "parameters must be a JSON Schema with type: object"),
        (
            tool(parameters={"type": "object", "properties": {"x": {"description": "?"}}}),
            "argument 'x' needs a JSON Schema type or an enum",
        ),
        (
            tool(parameters={"type": "object", "properties": {}, "required": ["x"]}),
            "parameters.required must list some of parameters.properties",
        ),
    ],
)
def test_invalid_tool_is_refused_naming_the_field(tmp_path, bad, message):
    error = persona_error(tmp_path, tutor_data(tools=[bad]))

    assert message in error
    assert "tools.0" in error


def test_two_tools_with_one_name_are_refused(tmp_path):
    error = persona_error(tmp_path, tutor_data(tools=[tool(), tool(description="Again.")]))

    assert "tool names must be unique" in error
