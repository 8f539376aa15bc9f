"""Running the espeak-ng program: finding it, checking voices, streaming its speech as PCM.

Every utterance runs one ``espeak-ng --stdout --stdin`` process: the text goes in on stdin
(so text starting with ``-`` can never be read as an option) and a mono 16-bit WAV stream
(22050 Hz for espeak-ng's own voices) comes out on stdout. :func:`stream_pcm` reads it as it
is written, resamples it with soxr and yields fixed-duration chunks, so the first chunk is out
within milliseconds; a generator closed early kills and reaps its process before it finishes
closing. Nothing here knows about Pipecat: :mod:`services.espeak_tts` builds the service on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import subprocess
from collections.abc import AsyncGenerator, Sequence

import numpy as np
import soxr
from loguru import logger

ESPEAK_EXECUTABLE = "espeak-ng"
"""Name (or path) of the espeak-ng program, looked up on ``PATH``."""

ESPEAK_NOT_FOUND_MESSAGE = (
    "espeak-ng not found; install Debian package espeak-ng (apt-get install espeak-ng)"
)

_READ_SIZE = 4096  # bytes per read of espeak-ng's stdout, which it flushes in 4096-byte blocks
_VOICE_CHECK_TIMEOUT_S = 10.0


class EspeakSynthesisError(RuntimeError):
    """espeak-ng exited with an error or wrote something that is not 16-bit PCM WAV."""


def find_espeak(executable: str = ESPEAK_EXECUTABLE) -> str:
    """Locate the espeak-ng program.

    Args:
        executable: Program name looked up on ``PATH``, or a path to it.

    Returns:
        The absolute path of the program.

    Raises:
        FileNotFoundError: If it cannot be found, with installation instructions.
    """
    path = shutil.which(executable)
    if path is None:
        raise FileNotFoundError(ESPEAK_NOT_FOUND_MESSAGE)
    return path


def _voice_check_args(executable: str, voice: str) -> list[str]:
    # Speaking empty text quietly loads the voice and nothing else: espeak-ng exits 1 with
    # "The specified espeak-ng voice does not exist" when it can't, which catches what a
    # listing would miss (variants such as "de+f3", MBROLA voices whose data is absent).
    return [executable, "-q", "--stdin", "-v", voice]


def _voice_error(voice: str, stderr: bytes) -> ValueError:
    detail = stderr.decode("utf-8", "replace").strip() or "espeak-ng rejected it"
    return ValueError(
        f"unknown espeak-ng voice {voice!r}: {detail} (list voices with `espeak-ng --voices`)"
    )


def _check_voice_name(voice: str) -> None:
    if not voice or voice != voice.strip() or voice.startswith("-"):
        raise ValueError(f"invalid espeak-ng voice {voice!r}")


def check_voice(voice: str, executable: str = ESPEAK_EXECUTABLE) -> None:
    """Check that espeak-ng can load a voice, by loading it.

    Args:
        voice: espeak-ng voice name (``"de"``, ``"cs"``, ``"de+m3"``, ``"gmw/de"``).
        executable: Program name or path of espeak-ng.

    Raises:
        ValueError: If espeak-ng has no such voice; the message names it.
        FileNotFoundError: If espeak-ng is missing.
    """
    _check_voice_name(voice)
    result = subprocess.run(
        _voice_check_args(find_espeak(executable), voice),
        input=b"",
        capture_output=True,
        timeout=_VOICE_CHECK_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise _voice_error(voice, result.stderr)


async def acheck_voice(voice: str, executable: str) -> None:
    """Asynchronous :func:`check_voice`, for settings updates on a running pipeline."""
    _check_voice_name(voice)
    proc = await asyncio.create_subprocess_exec(
        *_voice_check_args(executable, voice),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(b""), _VOICE_CHECK_TIMEOUT_S)
    finally:
        await reap(proc)
    if proc.returncode != 0:
        raise _voice_error(voice, stderr)


async def reap(proc: asyncio.subprocess.Process) -> None:
    """Kill a process unless it has exited, and wait for it so it leaves no zombie."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


def parse_wav_header(data: bytes) -> tuple[int, int] | None:
    """Parse the header of a streamed 16-bit mono PCM WAV.

    espeak-ng writes its WAV before it knows the length, so the RIFF and data sizes are
    placeholders; only the ``fmt`` chunk and the position of the ``data`` chunk are used.

    Args:
        data: The first bytes of the stream (any amount).

    Returns:
        ``(sample_rate_hz, data_offset)``, where ``data_offset`` is the index of the first
        PCM byte, or None if ``data`` ends before the ``data`` chunk starts.

    Raises:
        EspeakSynthesisError: If the bytes are not a 16-bit mono PCM WAV.
    """
    if len(data) < 12:
        if not b"RIFF".startswith(data[:4]):
            raise EspeakSynthesisError(f"espeak-ng output is not a WAV stream: {data[:12]!r}")
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EspeakSynthesisError(f"espeak-ng output is not a WAV stream: {data[:12]!r}")
    offset = 12
    sample_rate: int | None = None
    while len(data) >= offset + 8:
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"data":
            if sample_rate is None:
                raise EspeakSynthesisError("espeak-ng WAV has no fmt chunk before its data")
            return sample_rate, body
        if chunk_id == b"fmt ":
            if len(data) < body + 16:
                return None
            fmt_tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if fmt_tag != 1 or channels != 1 or bits != 16:
                raise EspeakSynthesisError(
                    f"espeak-ng WAV is not 16-bit mono PCM "
                    f"(format {fmt_tag}, {channels} channels, {bits} bits)"
                )
            sample_rate = rate
        offset = body + size + (size & 1)
    return None


async def stream_pcm(
    command: Sequence[str],
    text: str,
    sample_rate: int,
    chunk_ms: int,
    processes: set[asyncio.subprocess.Process],
    log_prefix: str = "espeak-ng",
) -> AsyncGenerator[bytes, None]:
    """Run espeak-ng on text, yielding its speech as it is written.

    Args:
        command: espeak-ng command line that reads text on stdin and writes WAV to stdout.
        text: Text to speak, written to the process's stdin as UTF-8.
        sample_rate: Sample rate of the audio yielded, in Hz.
        chunk_ms: Duration of each chunk yielded, in ms.
        processes: Holds the process while it runs, so that its owner can kill it.
        log_prefix: Prefix of the debug log line carrying espeak-ng's stderr.

    Yields:
        16-bit mono little-endian PCM at ``sample_rate`` Hz, in chunks of ``chunk_ms`` ms
        (the last one may be shorter).

    Raises:
        EspeakSynthesisError: If espeak-ng fails; the message includes its stderr.
        ValueError: If ``sample_rate`` is not positive.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
    chunk_bytes = max(1, sample_rate * chunk_ms // 1000) * 2
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    processes.add(proc)
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(text.encode("utf-8"))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # Fails only if espeak-ng died already; its stderr then tells why.
            await proc.stdin.drain()
        proc.stdin.close()

        header = bytearray()
        in_rate: int | None = None
        resampler: soxr.ResampleStream | None = None
        odd_byte = b""
        pending = bytearray()
        while data := await proc.stdout.read(_READ_SIZE):
            if in_rate is None:
                header += data
                parsed = parse_wav_header(bytes(header))
                if parsed is None:
                    continue
                in_rate, data_offset = parsed
                data = bytes(header[data_offset:])
                if in_rate != sample_rate:
                    resampler = soxr.ResampleStream(
                        in_rate, sample_rate, 1, dtype="int16", quality="HQ"
                    )
            data = odd_byte + data
            odd_byte = data[len(data) & ~1 :]
            pcm = data[: len(data) & ~1]
            if resampler is not None:
                pcm = resampler.resample_chunk(np.frombuffer(pcm, dtype="<i2")).tobytes()
            pending += pcm
            while len(pending) >= chunk_bytes:
                yield bytes(pending[:chunk_bytes])
                del pending[:chunk_bytes]

        returncode = await proc.wait()
        stderr = (await proc.stderr.read()).decode("utf-8", "replace").strip()
        if returncode != 0:
            raise EspeakSynthesisError(
                f"espeak-ng exited with status {returncode}: {stderr or '(no stderr)'}"
            )
        if in_rate is None:
            raise EspeakSynthesisError(
                f"espeak-ng wrote no audio ({len(header)} bytes): {stderr or '(no stderr)'}"
            )
        if stderr:
            logger.debug(f"{log_prefix}: {stderr}")
        if resampler is not None:
            pending += resampler.resample_chunk(np.zeros(0, dtype="<i2"), last=True).tobytes()
        if pending:
            yield bytes(pending)
    finally:
        try:
            await reap(proc)
        finally:
            processes.discard(proc)
