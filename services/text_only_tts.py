"""The last link of every TTS chain: no voice, but the reply still reaches the learner as text.

``TextOnlyTTSService`` is a Pipecat ``TTSService`` that synthesizes nothing. It goes through the
base class's usual steps for each sentence (announce it, open an audio context, push a
``TTSTextFrame`` after the "audio", close the context with ``TTSStoppedFrame``), so the
sentence reaches the client as RTVI ``bot-output`` (the RTVI observer reports the text frames
that leave the output transport) and the assistant aggregator stores it in the context, as
with any HTTP TTS (``push_text_frames=True``).

Each sentence yields one *empty* audio frame (0 bytes). Pipecat 1.14 reports every audio
context that completes without an audio frame as an error (``TTSService.
_record_context_audio_outcome``, three in a row write the service off) and leaves a context
that yielded no audio open until ``stop_frame_timeout_s``; an empty frame is no sound, and the
context closes as soon as the sentence is done.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService


class TextOnlyTTSService(TTSService):
    """A TTS that speaks nothing and lets the text through (see the module docstring).

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
        """Record ``text`` and yield one empty audio frame for it.

        Args:
            text: The sentence.
            context_id: The audio context Pipecat opened for it.
        """
        self.sentences.append(text)
        yield TTSAudioRawFrame(b"", self.sample_rate, 1, context_id=context_id)
