"""The lean smart-turn analyzer: Pipecat's model and predictions, less memory between turns."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

from config.personas import load_persona
from config.settings import Settings
from pipelines.turn_taking import LeanSmartTurnAnalyzer, turn_strategies


def speech(path: Path) -> np.ndarray:
    """A 16 kHz mono WAV as float32 in [-1, 1]."""
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768


def test_lean_analyzer_predicts_exactly_as_pipecats(librivox: dict[Path, str]) -> None:
    pipecat, lean = LocalSmartTurnAnalyzerV3(), LeanSmartTurnAnalyzer()
    assert not lean._session.get_session_options().enable_cpu_mem_arena
    for path in sorted(librivox):
        audio = speech(path)
        # The whole sentence, and the same cut off mid-sentence.
        for clip in (audio, audio[: len(audio) // 2]):
            ours, theirs = lean._predict_endpoint(clip), pipecat._predict_endpoint(clip)
            assert ours["prediction"] == theirs["prediction"]
            assert abs(ours["probability"] - theirs["probability"]) < 1e-5


def test_english_and_german_end_turns_with_the_lean_analyzer() -> None:
    settings = Settings()
    for persona, lean in (
        ("aviation-examiner", True),
        ("german-tutor", True),
        ("czech-tutor", False),
    ):
        [stop] = turn_strategies(load_persona(persona), settings).stop
        analyzer = getattr(stop, "_turn_analyzer", None)
        assert isinstance(analyzer, LeanSmartTurnAnalyzer) is lean, persona
