"""A browser's side of a WebRTC session, played by aiortc: a microphone track and the offer.

Shared by the session-process tests and ``bench.session_memory``: :class:`SpeechTrack` is a
microphone that plays a recording in real time, :func:`connect` offers it to a session
process through the supervisor and counts the bot's audible samples.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from av import AudioFrame

from runtime.supervisor import SessionSupervisor

RATE = 48000
"""Sample rate of the track, Hz (WebRTC's Opus clock)."""
FRAME = 960
"""Samples per frame: 20 ms at 48 kHz."""


class SpeechTrack(AudioStreamTrack):
    """A microphone that is silent for ``delay_s``, then plays ``pcm`` (48 kHz), then silence."""

    def __init__(self, pcm: np.ndarray, delay_s: float):
        super().__init__()
        self.pcm = pcm
        self.delay = int(delay_s * RATE)
        self.pos = 0
        self.t0: float | None = None

    async def recv(self) -> AudioFrame:
        """The next 20 ms frame, paced in real time from the first call."""
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + self.pos / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        start = self.pos - self.delay
        chunk = np.zeros(FRAME, dtype=np.int16)
        if 0 <= start < len(self.pcm):
            piece = self.pcm[start : start + FRAME]
            chunk[: len(piece)] = piece
        elif -FRAME < start < 0:
            piece = self.pcm[: FRAME + start]
            chunk[-start:] = piece
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.pos
        frame.time_base = fractions.Fraction(1, RATE)
        self.pos += FRAME
        return frame


async def connect(
    sup: SessionSupervisor, session_id: str, track: SpeechTrack
) -> tuple[RTCPeerConnection, dict[str, Any]]:
    """Offer ``track`` to the session's process; return the peer and what it hears.

    The returned dict's ``samples`` counts the bot's audible samples (peak over 500) at
    48 kHz as they arrive; ``tasks`` holds the tasks reading the bot's tracks.
    """
    pc = RTCPeerConnection()
    pc.addTrack(track)
    received: dict[str, Any] = {"samples": 0, "tasks": []}

    @pc.on("track")
    def on_track(remote):
        async def pull():
            while True:
                try:
                    frame = await remote.recv()
                except Exception:
                    return
                pcm = frame.to_ndarray()
                if np.abs(pcm).max() > 500:
                    received["samples"] += frame.samples

        received["tasks"].append(asyncio.ensure_future(pull()))

    await pc.setLocalDescription(await pc.createOffer())
    answer = await sup.offer(session_id, {"sdp": pc.localDescription.sdp, "type": "offer"})
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return pc, received
