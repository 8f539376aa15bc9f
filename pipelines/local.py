"""The ``local`` provider's services: faster-whisper base, llama.cpp, Piper / espeak-ng.

:mod:`pipelines.providers` builds every link of a tier, ``local`` ones through the helpers
here; :func:`preload` loads them ahead of a session and :func:`local_llm` runs the shared
llama.cpp server. Everything loads from models assembled by ``voxtutor models install``;
nothing is downloaded. English speaks with Piper ``en_US-joe-medium``. German and Czech have
no packaged neural voice: German speaks with SVOX Pico, Czech with Festival's Czech voices
(both far clearer than espeak-ng in ``bench.voices``), and either falls back to espeak-ng when
its Debian package is absent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from loguru import logger
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService

from config.personas import Persona
from config.settings import Settings
from pipelines.providers import PIPECAT_LANGUAGE
from services.espeak_tts import LANGUAGE_TO_VOICE, EspeakTTSService
from services.festival_tts import FestivalTTSService
from services.llama_server import MODEL_ALIAS, LlamaServer, warm_up
from services.pico_tts import PicoTTSService
from services.piper_tts import LocalPiperTTSService
from services.whisper_stt import LocalWhisperSTTService
from weights.registry import PIPER_MODEL, WHISPER_MODEL, model_path


@dataclass(frozen=True)
class _Language:
    """The parts of a persona STT needs (used to preload before the persona is known)."""

    language: str
    stt_keyterms: tuple[str, ...] = ()


_ENGLISH_PLACEHOLDER = _Language("en")


def whisper_stt(
    persona: Persona | _Language, home: Path | None = None, *, lazy: bool = False
) -> STTService:
    """Whisper base with the language pinned to the persona and greedy decoding.

    ``lazy``: load the model on the first segment (a failover backup), not now.

    Raises:
        weights.registry.ModelNotInstalledError: Whisper base is not assembled.
    """
    settings = WhisperSTTService.Settings(
        model=str(model_path(WHISPER_MODEL, home)),
        language=PIPECAT_LANGUAGE[persona.language],
        hotwords=" ".join(persona.stt_keyterms) or None,
    )
    return LocalWhisperSTTService(settings=settings, device="cpu", compute_type="int8", lazy=lazy)


def llama_cpp_llm(settings: Settings, base_url: str, system_instruction: str) -> OpenAILLMService:
    """An OpenAI-compatible LLM client pointed at ``base_url`` (the local llama.cpp server).

    Args:
        settings: Supplies the reply cap (``llm_max_tokens``, tokens).
        base_url: e.g. ``http://127.0.0.1:39123/v1``; any OpenAI-compatible server works.
        system_instruction: The persona's rendered system prompt.
    """
    return OpenAILLMService(
        api_key="local",  # llama.cpp ignores it; the SDK requires a value
        base_url=base_url,
        settings=OpenAILLMService.Settings(
            model=MODEL_ALIAS,
            system_instruction=system_instruction,
            temperature=0.3,
            max_tokens=settings.llm_max_tokens,
        ),
    )


_PREBUILT_PIPER: dict[str, LocalPiperTTSService] = {}
"""Piper services built ahead of time by :func:`preload` (each is used by one session)."""


def _piper(voice: str, home: Path | None, lazy: bool = False) -> LocalPiperTTSService:
    return LocalPiperTTSService(model_dir=model_path(PIPER_MODEL, home), voice=voice, lazy=lazy)


def preload(settings: Settings, piper_voice: str = "en_US-joe-medium") -> None:
    """Load the slow parts of the local tier before a session is known (~2 s on 2 cores).

    Loads and warms Whisper base (shared by every language) and builds one Piper service
    (its ONNX session takes ~1.3 s to create). A warm spare session process calls this so
    that spawning a session takes only the persona-specific rest.

    Raises:
        weights.registry.ModelNotInstalledError: a model is not installed.
    """
    whisper_stt(_ENGLISH_PLACEHOLDER, settings.home)
    _PREBUILT_PIPER.setdefault(piper_voice, _piper(piper_voice, settings.home))


def local_tts(persona: Persona, home: Path | None = None, *, lazy: bool = False) -> TTSService:
    """The persona's local voice (:attr:`config.personas.Persona.voice_engine`).

    Piper for English; SVOX Pico or Festival where the persona names them and they are
    installed, else espeak-ng for the persona's language (logged as a warning).
    ``lazy``: load the Piper voice on the first sentence (a failover backup), not now;
    the other voices load nothing ahead of time (Festival starts with the pipeline).

    Raises:
        weights.registry.ModelNotInstalledError: the Piper voice is not installed.
        FileNotFoundError: espeak-ng is missing (German/Czech without Pico/Festival).
    """
    engine, voice = persona.voice_engine
    if engine == "piper":
        if lazy:
            return _piper(voice, home, lazy=True)
        return _PREBUILT_PIPER.pop(voice, None) or _piper(voice, home)
    try:
        if engine == "pico":
            return PicoTTSService(voice=voice)
        if engine == "festival":
            return FestivalTTSService(voice=voice)
    except FileNotFoundError as e:
        voice = LANGUAGE_TO_VOICE[persona.language]
        logger.warning(f"{e}; {persona.name} speaks with espeak-ng {voice!r} instead")
    return EspeakTTSService(settings=EspeakTTSService.Settings(voice=voice))


def opening_messages(
    persona: Persona, level: str | None = None, record: Sequence[dict[str, str]] = ()
) -> list[dict[str, str]]:
    """The messages a session's first LLM request starts with, as the LLM service sends them.

    System prompt (at ``level``, default the persona's CEFR level), the learner record
    (:func:`pipelines.memory.memory_messages`), few-shot turns, greeting.
    Evaluating them ahead (:func:`warm_persona_prompts`) leaves a learner turn only its own
    tokens to read.
    """
    return [
        {"role": "system", "content": persona.render_system_prompt(level or persona.cefr_level)},
        *record,
        *persona.initial_messages(),
        {"role": "assistant", "content": persona.greeting},
    ]


async def warm_persona_prompts(
    base_url: str, openings: dict[str, list[dict[str, str]]]
) -> dict[str, float]:
    """Evaluate each opening in the LLM server once, one after another.

    llama-cpp-python's prompt cache (``services.llama_server.PROMPT_CACHE_BYTES``) keeps the
    evaluated state of each, so a session's first turn reads only the learner's tokens instead
    of the ~300-500-token persona prompt (10 s on 2 cores when nothing was warmed).

    Args:
        base_url: The server's OpenAI-compatible URL.
        openings: Name → messages (:func:`opening_messages`).

    Returns:
        Name → seconds the warm-up took; a failed one is logged and left out.
    """
    took: dict[str, float] = {}
    for name, messages in openings.items():
        try:
            took[name] = await warm_up(base_url, messages)
        except httpx.HTTPError as e:
            logger.warning(f"LLM warm-up of {name} failed, its first turn will be slower: {e}")
            continue
        logger.info(f"LLM warm-up of {name} (prompt evaluation) took {took[name]:.2f} s")
    return took


@contextlib.asynccontextmanager
async def local_llm(settings: Settings) -> AsyncIterator[str]:
    """Yield an OpenAI-compatible base URL: ``llm_base_url`` or a started llama.cpp server.

    Raises:
        weights.registry.ModelNotInstalledError: the GGUF is not installed.
        services.llama_server.LLMServerError: the server did not become ready.
    """
    if settings.llm_base_url:
        yield settings.llm_base_url
        return
    server = LlamaServer(
        model_path(settings.llm_model, settings.home),
        log_path=settings.home / "logs" / "llama-server.log",
        host=settings.llm_host,
        port=settings.llm_port,
        threads=settings.llm_threads,
        context_tokens=settings.llm_context_tokens,
        ready_timeout_s=settings.llm_ready_timeout_s,
    )
    async with server:
        yield server.base_url
