"""How intelligible and how fast each local German and Czech voice is.

Each voice speaks the same tutor sentences (below: what Lena and Honzík say in a lesson);
Whisper base (the local tier's STT, faster-whisper int8, greedy, language pinned) transcribes
the speech back, and the word error rate (jiwer, lower-cased, punctuation removed) against the
text is the voice's **round-trip WER**. The real-time factor is synthesis time over speech
duration, through the same services a session uses (one Festival process for all sentences,
as in a session). Whisper base is weak in Czech, so compare Czech voices only with each other.

Voices: espeak-ng (today's fallback and the baseline) against SVOX Pico for German and
Festival's two Czech voices; MBROLA German (``mb-de7``) too when ``mbrola-de7`` is installed.

Run from the repository root: ``python -m bench.voices``. Raw numbers go to
``bench/results/voices.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from faster_whisper import WhisperModel
from rich.console import Console
from rich.table import Table

from services.espeak_tts import EspeakTTSService
from services.festival_tts import FestivalTTSService, festival_available
from services.pico_tts import PicoTTSService, find_pico
from services.wav_voice_tts import pcm_chunks
from weights.registry import WHISPER_MODEL, model_path

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 16000  # Hz: what Whisper reads

SENTENCES = {
    "de": [
        "Fast richtig! Man sagt: Ich fahre mit dem Bus zur Arbeit.",
        "Nach mit steht immer der Dativ.",
        "Gestern bin ich mit meinem Freund in die Stadt gefahren.",
        "Was hast du am Wochenende gemacht?",
        "Das Verb steht im Hauptsatz an zweiter Stelle.",
        "Sehr gut, das war ganz richtig.",
    ],
    "cs": [
        "Skoro správně! Řekneme: Jedu do práce autobusem.",
        "Po předložce v stojí šestý pád.",
        "Včera jsem byl v obchodě a koupil jsem chleba.",
        "Co jsi dělal o víkendu?",
        "Moje sestra bydlí v Praze už pět let.",
        "Výborně, to bylo úplně správně.",
    ],
}


def normalise(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def voices() -> list[tuple[str, str, Any]]:
    """``(language, label, make_service)`` for every installed voice."""
    out: list[tuple[str, str, Any]] = [
        (
            "de",
            "espeak-ng de",
            lambda: EspeakTTSService(settings=EspeakTTSService.Settings(voice="de")),
        ),
    ]
    if find_pico():
        out.append(("de", "SVOX Pico de-DE", lambda: PicoTTSService(voice="de-DE")))
    if shutil.which("mbrola") and Path("/usr/share/mbrola/de7").exists():
        out.append(
            (
                "de",
                "MBROLA de7",
                lambda: EspeakTTSService(settings=EspeakTTSService.Settings(voice="mb-de7")),
            )
        )
    out.append(
        (
            "cs",
            "espeak-ng cs",
            lambda: EspeakTTSService(settings=EspeakTTSService.Settings(voice="cs")),
        )
    )
    for voice in ("czech_dita", "czech_machac"):
        if festival_available(voice):
            out.append(("cs", f"Festival {voice}", lambda v=voice: FestivalTTSService(voice=v)))
    return out


async def synthesize(service: Any, text: str) -> tuple[np.ndarray, float]:
    """Speak ``text``; return 16 kHz float32 samples and the synthesis time in s."""
    started = time.perf_counter()
    if isinstance(service, EspeakTTSService):
        pcm = b"".join([c async for c in service.synthesize(text, RATE)])
    else:
        pcm = b"".join(pcm_chunks(await service.synthesize_wav(text), RATE, 40))
    elapsed = time.perf_counter() - started
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, elapsed


async def measure(whisper: WhisperModel) -> list[dict[str, Any]]:
    """Round-trip WER and RTF of every installed voice on :data:`SENTENCES`."""
    rows = []
    for language, label, make in voices():
        service = make()
        # One untimed sentence first: Festival's start and voice load happen once a session.
        await synthesize(service, "Test.")
        refs, hyps, synth_s, audio_s = [], [], 0.0, 0.0
        for text in SENTENCES[language]:
            audio, elapsed = await synthesize(service, text)
            synth_s += elapsed
            audio_s += audio.size / RATE
            segments, _ = whisper.transcribe(audio, language=language, beam_size=1)
            refs.append(normalise(text))
            hyps.append(normalise(" ".join(s.text for s in segments)))
        await service.cleanup()
        rows.append(
            {
                "language": language,
                "voice": label,
                "wer": jiwer.wer(refs, hyps),
                "rtf": synth_s / audio_s,
                "speech_s": audio_s,
                "heard": hyps,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    whisper = WhisperModel(str(model_path(WHISPER_MODEL)), device="cpu", compute_type="int8")
    rows = asyncio.run(measure(whisper))
    table = Table(title="Local voices: Whisper base round trip (6 sentences each)")
    for column in ("language", "voice", "WER", "RTF", "speech s"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["language"],
            row["voice"],
            f"{row['wer']:.2f}",
            f"{row['rtf']:.3f}",
            f"{row['speech_s']:.1f}",
        )
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "voices.json").write_text(json.dumps(rows, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
