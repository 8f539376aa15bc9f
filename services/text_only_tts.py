"""The last link of every TTS chain: no voice, but the reply still reaches the learner as text.

``TextOnlyTTSService`` is a Pipecat ``TTSService`` that synthesizes nothing. It goes through the
base class's usual steps for each sentence (announce it, open an audio context, push a
``TTSTextFrame`` after the "audio", close the context with ``TTSStoppedFrame``), so the
sentence reaches the client as RTVI ``bot-output`` (the RTVI observer reports the text frames
that leave the output transport) and the assistant aggregator stores it in the context, as
with any HTTP TTS (``push_text_frames=True``).

Each sentence yields :data:`SILENCE_MS` of silence, nothing audible. Pipecat 1.14 needs some
audio: its RTVI observer holds bot text back until the bot starts speaking
(``RTVIObserver._handle_aggregated_llm_text``), and the output transport reports speaking
only while audio plays, so text with no audio at all never reaches the client; it also
reports every audio context that completes without audio as an error (three in a row write
the service off) and keeps such a context open until ``stop_frame_timeout_s``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

SILENCE_MS = 40
"""Milliseconds of silence per sentence (one chunk of Pipecat's output transport)."""


class TextOnlyTTSService(TTSService):
    """A TTS that says nothing and lets the text through (see the module docstring).

    Attributes:
        produces_audio: Always False; failover groups skip their cut-sentence check for it.
        sentences: The sentences it was given, in order (for logs and tests).
    """

    produces_audio = False

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("push_start_frame", True)
        kwargs.setdefault("push_stop_frames", True)
        kwargs.setdefault("settings", TTSSettings(model=None, voice=None, language=None))
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.sentences: list[str] = []

    def can_generate_metrics(self) -> bool:
        """No provider, nothing to time."""
        return False

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Record ``text`` and yield :data:`SILENCE_MS` of silence for it.

        Args:
            text: The sentence.
            context_id: The audio context Pipecat opened for it.
        """
        self.sentences.append(text)
        silence = bytes(2 * self.sample_rate * SILENCE_MS // 1000)
        yield TTSAudioRawFrame(silence, self.sample_rate, 1, context_id=context_id)
