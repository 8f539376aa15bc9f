"""One Pipecat service per tier link: local, OpenAI, Anthropic, Deepgram, Cartesia, text-only.

:func:`build_link` turns a :class:`config.tiers.Link` into the real Pipecat service for a role
(``stt``, ``llm``, ``tts``), with the persona's language, voice, keyterms and system prompt.
Keys come from the environment (:data:`config.tiers.PROVIDER_KEY_ENV`) and endpoints from
settings (``VOXTUTOR_*_BASE_URL``), so tests reach loopback fakes of each provider's API.

A link with a backup behind it (``has_backup``) gets SDK clients with ``max_retries=0``: the
OpenAI and Anthropic SDKs otherwise retry a 429/5xx/dropped connection twice (0.5 s, 1 s)
before Pipecat sees an error, hiding the fault from the failover group, whose policy
(:class:`processors.failover.groups.FailoverPolicy`) should be the only retry layer. The last link
of a chain keeps the SDK's retries: nothing stands behind it.
"""

from __future__ import annotations

from typing import Any, Literal

# httpx (the OpenAI and Anthropic SDKs' client) imports anyio's asyncio backend on its first
# request: ~40-100 ms of CPU in the middle of the session's first reply. Import it with the
# builders instead, which a warm spare process does before any session.
import anyio._backends._asyncio  # noqa: F401
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transcriptions.language import Language

from config.personas import Persona
from config.settings import Settings, provider_key
from config.tiers import Link, TierError

Role = Literal["stt", "llm", "tts"]

DEEPGRAM_LANGUAGE = {"en": Language.EN_US, "de": Language.DE, "cs": Language.CS}
"""Deepgram wants a region for English (nova-3 ``en-US``); German and Czech are plain."""

DEEPGRAM_SPEAK_URL = "wss://api.deepgram.com"
"""Pipecat's default base of Deepgram's speak websocket."""

CARTESIA_TTS_URL = "wss://api.cartesia.ai/tts/websocket"
"""Pipecat's default Cartesia TTS websocket."""

PIPECAT_LANGUAGE = {"en": Language.EN, "de": Language.DE, "cs": Language.CS}
"""Pipecat's language for each persona language (Whisper, OpenAI STT, Cartesia)."""


def _key(link: Link) -> str:
    """Return the link's API key from the environment.

    Raises:
        TierError: the key's variable is unset (names the variable, never a value).
    """
    name = link.key_env
    value = provider_key(name) if name else None
    if not value:
        raise TierError(f"{link.provider} needs {name} to be set")
    return value


def _max_retries(has_backup: bool) -> dict[str, Any]:
    """``{"max_retries": 0}`` for a link with a backup, else nothing (the SDK's default)."""
    return {"max_retries": 0} if has_backup else {}


def _without_sdk_retries(service: FrameProcessor, has_backup: bool) -> FrameProcessor:
    """Rebuild an OpenAI-SDK service's client with ``max_retries=0`` if the link has a backup.

    Pipecat 1.14's OpenAI STT, LLM and TTS services build their ``AsyncOpenAI`` client in
    ``__init__`` (``self._client``) and take no retry setting; ``with_options`` copies the
    client with the same key, URL and HTTP client.
    """
    client = getattr(service, "_client", None)
    if has_backup and client is not None and hasattr(client, "with_options"):
        service._client = client.with_options(max_retries=0)  # type: ignore[attr-defined]
    return service


def _websocket_url(url: str) -> str:
    """``http(s)://`` → ``ws(s)://`` (Deepgram's speak websocket takes a ws base URL)."""
    if url.startswith("https://"):
        return "wss://" + url.removeprefix("https://")
    if url.startswith("http://"):
        return "ws://" + url.removeprefix("http://")
    return url


def build_stt(
    link: Link,
    persona: Persona,
    settings: Settings,
    *,
    has_backup: bool = False,
    is_backup: bool = False,
) -> FrameProcessor:
    """The STT service for ``link`` (16-bit PCM in at the pipeline rate, transcripts out).

    ``has_backup``: another link follows in the chain (SDK retries off, see the module doc).
    ``is_backup``: the link is not its chain's primary; a local model then loads only when
    the link first takes over.

    Raises:
        TierError: the provider's key is missing or the provider has no STT.
        weights.registry.ModelNotInstalledError: ``local`` and Whisper is not assembled.
    """
    language = persona.language
    if link.provider == "local":
        from pipelines.local import whisper_stt

        return whisper_stt(persona, settings.home, lazy=is_backup)
    if link.provider == "deepgram":
        from pipecat.services.deepgram.stt import DeepgramSTTService

        from services.deepgram_stt import BatchedDeepgramSTTService

        return BatchedDeepgramSTTService(
            api_key=_key(link),
            base_url=settings.deepgram_base_url or "",
            settings=DeepgramSTTService.Settings(
                model=link.model,
                language=DEEPGRAM_LANGUAGE[language],
                # Nova-3 keyterm prompting with the persona's terms (METAR, NOTAM, VOR, ...):
                # https://developers.deepgram.com/docs/keyterm
                keyterm=list(persona.stt_keyterms) or None,
                smart_format=True,
                interim_results=True,
            ),
        )
    if link.provider == "openai":
        from pipecat.services.openai.stt import OpenAISTTService

        stt = OpenAISTTService(
            api_key=_key(link),
            base_url=settings.openai_base_url,
            settings=OpenAISTTService.Settings(
                model=link.model,
                language=PIPECAT_LANGUAGE[language],
                # The transcription prompt biases spelling toward the persona's vocabulary.
                prompt=", ".join(persona.stt_keyterms) or None,
            ),
        )
        return _without_sdk_retries(stt, has_backup)
    raise TierError(f"{link.provider} has no STT service")


def build_llm(
    link: Link,
    persona: Persona,
    settings: Settings,
    *,
    local_base_url: str,
    level: str | None,
    has_backup: bool = False,
) -> FrameProcessor:
    """The LLM service for ``link``, carrying the persona's system prompt for ``level``.

    Args:
        link: The chain link.
        persona: Supplies the system prompt.
        settings: Reply cap (``llm_max_tokens``) and endpoints.
        local_base_url: The local tier's OpenAI-compatible server (``local`` links).
        level: The learner's CEFR level, or ``None`` for the persona default.
        has_backup: Another link follows in the chain (SDK retries off, see the module doc).

    Raises:
        TierError: the provider's key is missing or the provider has no LLM.
    """
    system = persona.render_system_prompt(level)
    if link.provider == "local":
        from pipelines.local import llama_cpp_llm

        return _without_sdk_retries(llama_cpp_llm(settings, local_base_url, system), has_backup)
    if link.provider == "openai":
        from pipecat.services.openai.llm import OpenAILLMService

        llm = OpenAILLMService(
            api_key=_key(link),
            base_url=settings.openai_base_url,
            settings=OpenAILLMService.Settings(
                model=link.model,
                system_instruction=system,
                max_tokens=settings.llm_max_tokens,
                temperature=0.3,
            ),
        )
        return _without_sdk_retries(llm, has_backup)
    if link.provider == "anthropic":
        from anthropic import AsyncAnthropic
        from pipecat.services.anthropic.llm import AnthropicLLMService

        key = _key(link)
        return AnthropicLLMService(
            api_key=key,
            # Pipecat builds its own client without a base URL; pass one that has it.
            client=AsyncAnthropic(
                api_key=key, base_url=settings.anthropic_base_url, **_max_retries(has_backup)
            ),
            settings=AnthropicLLMService.Settings(
                model=link.model,
                system_instruction=system,
                max_tokens=settings.llm_max_tokens,
                temperature=0.3,
            ),
        )
    raise TierError(f"{link.provider} has no LLM service")


def build_tts(
    link: Link,
    persona: Persona,
    settings: Settings,
    *,
    has_backup: bool = False,
    is_backup: bool = False,
) -> FrameProcessor:
    """The TTS service for ``link`` speaking the persona's language with the link's voice.

    ``has_backup``: another link follows in the chain (SDK retries off, see the module doc).
    ``is_backup``: the link is not its chain's primary; a local voice then loads only when
    the link first takes over.

    Raises:
        TierError: the key is missing, or the link has no voice for the persona's language.
        weights.registry.ModelNotInstalledError: ``local`` English and Piper is not assembled.
    """
    language = persona.language
    if link.provider == "local":
        from pipelines.local import local_tts

        return local_tts(persona, settings.home, lazy=is_backup)
    if link.provider == "text":
        from services.text_only_tts import TextOnlyTTSService

        return TextOnlyTTSService()
    voice = link.voices.get(language)
    if voice is None:
        raise TierError(f"{link.provider} {link.model} has no voice for {language!r}")
    if link.provider == "openai":
        from pipecat.services.openai.tts import OpenAITTSService

        tts = OpenAITTSService(
            api_key=_key(link),
            base_url=settings.openai_base_url,
            settings=OpenAITTSService.Settings(model=link.model, voice=voice),
        )
        return _without_sdk_retries(tts, has_backup)
    if link.provider == "deepgram":
        from pipecat.services.deepgram.tts import DeepgramTTSService

        return DeepgramTTSService(
            api_key=_key(link),
            base_url=_websocket_url(settings.deepgram_base_url or DEEPGRAM_SPEAK_URL),
            settings=DeepgramTTSService.Settings(voice=voice),
        )
    if link.provider == "cartesia":
        from pipecat.services.cartesia.tts import CartesiaTTSService

        return CartesiaTTSService(
            api_key=_key(link),
            url=settings.cartesia_url or CARTESIA_TTS_URL,
            settings=CartesiaTTSService.Settings(
                model=link.model, voice=voice, language=PIPECAT_LANGUAGE[language]
            ),
        )
    raise TierError(f"{link.provider} has no TTS service")


def build_link(
    role: Role,
    link: Link,
    persona: Persona,
    settings: Settings,
    *,
    local_base_url: str = "",
    level: str | None = None,
    has_backup: bool = False,
    is_backup: bool = False,
) -> FrameProcessor:
    """Build the service for one link of a ``role`` chain (dispatches to the builders above).

    ``has_backup``: another link follows the link in its chain; its OpenAI/Anthropic SDK
    client is then built with ``max_retries=0`` (see the module docstring).
    ``is_backup``: the link stands behind another; a local STT or TTS model then loads when
    the link first takes over instead of now (Whisper base and a Piper voice are ~145 MB
    resident together, which a cloud session that never fails over should not carry).

    Raises:
        TierError: as the role's builder.
    """
    if role == "stt":
        return build_stt(link, persona, settings, has_backup=has_backup, is_backup=is_backup)
    if role == "llm":
        return build_llm(
            link,
            persona,
            settings,
            local_base_url=local_base_url,
            level=level,
            has_backup=has_backup,
        )
    return build_tts(link, persona, settings, has_backup=has_backup, is_backup=is_backup)
