"""Piper TTS for the local tier: Pipecat's ``PiperTTSService`` that can load its voice late.

Pipecat's service loads the ONNX voice in ``__init__`` (~1.3 s and ~70 MB resident for a
medium voice on 2 cores). That is right for the local tier, whose voice speaks every turn, but
a cloud tier keeps Piper only as a failover backup that most sessions never use. With
``lazy=True`` the voice loads in a worker thread on the first sentence instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService
from piper import PiperVoice


class LocalPiperTTSService(PiperTTSService):
    """A Piper voice from an assembled model directory; loaded now or on first use.

    Args:
        model_dir: Directory holding ``<voice>.onnx`` and ``<voice>.onnx.json``
            (``voxtutor models install``); nothing is downloaded.
        voice: The Piper voice name, e.g. ``en_US-joe-medium`` (22050 Hz output, resampled
            by Pipecat to the pipeline's output rate).
        lazy: Load the voice on the first sentence instead of now.
        **kwargs: Passed to Pipecat's ``TTSService``.

    Raises:
        FileNotFoundError: ``<model_dir>/<voice>.onnx`` does not exist.
    """

    def __init__(self, *, model_dir: Path, voice: str, lazy: bool = False, **kwargs: Any):
        # PiperTTSService.__init__ (pipecat-ai 1.14.0) only builds the settings, downloads a
        # missing voice and loads it; we do the first, refuse the second and time the third.
        settings = PiperTTSService.Settings(model=None, voice=voice, language=None)
        TTSService.__init__(
            self, push_start_frame=True, push_stop_frames=True, settings=settings, **kwargs
        )
        self._model_file = Path(model_dir) / f"{voice}.onnx"
        if not self._model_file.exists():
            raise FileNotFoundError(f"Piper voice {voice!r} is not in {model_dir}")
        # None until a lazy voice loads (run_tts checks before the base class uses it).
        self._loading: asyncio.Future[PiperVoice] | None = None
        self._voice: PiperVoice | None = None if lazy else PiperVoice.load(self._model_file)  # type: ignore[assignment]

    @property
    def loaded(self) -> bool:
        """Whether the voice is in memory (a lazy service loads on its first sentence)."""
        return self._voice is not None

    async def _load_once(self) -> PiperVoice:
        """Load the voice in a worker thread, once; a cancelled caller does not lose it."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(
                asyncio.to_thread(PiperVoice.load, self._model_file)
            )
        return await asyncio.shield(self._loading)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Speak ``text`` (loading the voice first if it is lazy and not loaded yet).

        Yields:
            The audio frames of Pipecat's Piper service, or one ``ErrorFrame`` if the voice
            cannot be loaded (so a failover group moves on to its next link).
        """
        if self._voice is None:
            try:
                self._voice = await self._load_once()
            except Exception as e:
                logger.error(f"{self}: could not load Piper voice {self._model_file}: {e}")
                yield ErrorFrame(error=f"Piper voice failed to load: {e}")
                return
        async for frame in super().run_tts(text, context_id):
            yield frame
