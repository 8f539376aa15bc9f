"""A protocol-level phone carrier for tests and benchmarks: signs webhooks, plays media streams.

:class:`CarrierCall` speaks Twilio's or Telnyx's media-stream websocket protocol the way the
carrier does: ``connected``, ``start``, then one 20 ms μ-law ``media`` message every 20 ms of
wall-clock time (silence unless the caller is speaking), and records what the bot sends back.
The signing helpers follow the carriers' documented algorithms, independently of the code
under test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlencode
from xml.etree import ElementTree

import numpy as np
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
ULAW_SILENCE = b"\xff"


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """16-bit PCM → G.711 μ-law (ITU-T G.711 on the top 14 bits, as CCITT's reference code)."""
    v = pcm.astype(np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), 8159) + 0x21
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), v)
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((v >> np.minimum(seg + 1, 8)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 μ-law → 16-bit PCM."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    mag = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - mag, mag - 0x84).astype(np.int16)


def speech_onset(pcm: np.ndarray, run_frames: int = 5) -> int:
    """Index of the 20 ms frame where speech starts (a lone click or breath does not count).

    That is the first of ``run_frames`` frames in a row whose RMS reaches 15 % of the loudest
    frame's.
    """
    frames = pcm[: len(pcm) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    loud = np.sqrt((frames**2).mean(axis=1)) >= 0.15 * np.sqrt((frames**2).mean(axis=1)).max()
    runs = np.convolve(loud, np.ones(run_frames, dtype=int), mode="valid")
    return int(np.argmax(runs == run_frames))


def twilio_signature(url: str, params: dict[str, str], auth_token: str) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 of the URL + sorted name+value pairs."""
    data = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_form(url: str, params: dict[str, str], auth_token: str) -> tuple[bytes, dict[str, str]]:
    """A Twilio webhook as Twilio posts it: (form body, headers with its signature of ``url``)."""
    return form(params), {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signature(url, params, auth_token),
    }


def telnyx_headers(body: bytes, key: Ed25519PrivateKey, at: float | None = None) -> dict[str, str]:
    """Telnyx's headers: Ed25519 signature of ``"<timestamp>|<body>"``."""
    ts = str(int(time.time() if at is None else at))
    signature = key.sign(ts.encode() + b"|" + body)
    return {
        "telnyx-timestamp": ts,
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
    }


def form(params: dict[str, str]) -> bytes:
    """``params`` as an ``application/x-www-form-urlencoded`` body, as carriers post webhooks."""
    return urlencode(params).encode()


def stream_url(twiml: str) -> str:
    """The ``<Connect><Stream url=…>`` of a TwiML/TeXML answer."""
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    return stream.attrib["url"]


@dataclass
class CarrierCall:
    """One call's media stream, played like the carrier plays it.

    Attributes:
        carrier: ``twilio`` or ``telnyx``.
        url: The ``wss://…/stream/<token>`` from the TwiML.
        call_id: Twilio ``callSid`` / Telnyx ``call_control_id``.
        stream_id: Twilio ``streamSid`` / Telnyx ``stream_id`` (random).
        media: ``(arrival time, μ-law bytes)`` of every bot ``media`` message
            (``time.monotonic()``, 8 kHz mono).
        clears: Arrival times of ``clear`` messages.
        other: Every other message the server sent, parsed.
        close_code / close_reason: How the server closed the socket.
        onset_sent_at: When the speech onset queued by :meth:`speak` went out.
        speech_done: Set once everything queued by :meth:`speak` has been sent.
    """

    carrier: str
    url: str
    call_id: str
    stream_id: str = field(default_factory=lambda: f"MZ{uuid.uuid4().hex}")
    media: list[tuple[float, bytes]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    other: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    _ws: websockets.ClientConnection | None = None
    _speech: bytearray = field(default_factory=bytearray)
    _onset_frame: int | None = None
    onset_sent_at: float | None = None
    speech_done: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _seq: int = 0

    # -- wire messages ---------------------------------------------------------------------

    def _msg(self, event: str, **body: object) -> str:
        self._seq += 1
        if self.carrier == "twilio":
            return json.dumps(
                {
                    "event": event,
                    "sequenceNumber": str(self._seq),
                    **body,
                    "streamSid": self.stream_id,
                }
            )
        return json.dumps(
            {"event": event, "sequence_number": str(self._seq), **body, "stream_id": self.stream_id}
        )

    def connected(self) -> str:
        """The carrier's ``connected`` message, the first on a new stream."""
        if self.carrier == "twilio":
            return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        return json.dumps({"event": "connected", "version": "1.0.0"})

    def start_message(self, encoding: str | None = None, rate: int = RATE) -> str:
        """The ``start`` message announcing the call and its inbound audio format.

        Args:
            encoding: The media encoding named (default μ-law: ``audio/x-mulaw`` / ``PCMU``).
            rate: Sample rate announced, in Hz.
        """
        if self.carrier == "twilio":
            fmt = {"encoding": encoding or "audio/x-mulaw", "sampleRate": rate, "channels": 1}
            start = {
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream_id,
                "callSid": self.call_id,
                "tracks": ["inbound"],
                "mediaFormat": fmt,
                "customParameters": {},
            }
        else:
            fmt = {"encoding": encoding or "PCMU", "sample_rate": rate, "channels": 1}
            start = {"call_control_id": self.call_id, "media_format": fmt, "from": "", "to": ""}
        return self._msg("start", start=start)

    def media_message(self, ulaw: bytes) -> str:
        """An inbound ``media`` message carrying ``ulaw`` (base64), numbered as the carrier does."""
        media = {"track": "inbound", "chunk": str(self._seq), "timestamp": str(self._seq * 20)}
        return self._msg("media", media={**media, "payload": base64.b64encode(ulaw).decode()})

    def stop_message(self) -> str:
        """The ``stop`` message a carrier sends when the caller hangs up."""
        return self._msg("stop", stop={"callSid": self.call_id})

    # -- the call --------------------------------------------------------------------------

    async def open(self) -> websockets.ClientConnection:
        """Open the socket only (tests of bad handshakes send what they like)."""
        self._ws = await websockets.connect(self.url, open_timeout=10)
        self._tasks.append(asyncio.create_task(self._receive()))
        return self._ws

    async def start(self) -> None:
        """Open the socket, send ``connected`` + ``start``, then stream at real-time pace."""
        ws = await self.open()
        await ws.send(self.connected())
        await ws.send(self.start_message())
        self._tasks.append(asyncio.create_task(self._send_audio()))

    def speak(self, ulaw: bytes, onset_frame: int = 0) -> None:
        """Queue ``ulaw`` to be spoken after what is already queued.

        :attr:`onset_sent_at` is set when its frame ``onset_frame`` (the speech onset) goes out.
        """
        self.speech_done.clear()
        self._onset_frame = len(self._speech) // FRAME + onset_frame
        self.onset_sent_at = None
        self._speech.extend(ulaw)

    async def _send_audio(self) -> None:
        assert self._ws is not None
        t0, n = time.monotonic(), 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
                chunk = bytes(self._speech[:FRAME]) or ULAW_SILENCE * FRAME
                del self._speech[:FRAME]
                await self._ws.send(self.media_message(chunk.ljust(FRAME, ULAW_SILENCE)))
                if self._onset_frame is not None:
                    if self._onset_frame == 0:
                        self.onset_sent_at = time.monotonic()
                    self._onset_frame -= 1
                if not self._speech:
                    self.speech_done.set()
                n += 1

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for text in self._ws:
                msg = json.loads(text)
                now = time.monotonic()
                if msg.get("event") == "media":
                    self.media.append((now, base64.b64decode(msg["media"]["payload"])))
                elif msg.get("event") == "clear":
                    self.clears.append(now)
                else:
                    self.other.append(msg)
        except websockets.ConnectionClosed:
            pass
        self.close_code = self._ws.close_code
        self.close_reason = self._ws.close_reason or ""

    async def wait_closed(self, timeout_s: float) -> None:
        """Wait for the server to close the socket and record how it closed it.

        Raises:
            TimeoutError: The socket is still open after ``timeout_s`` seconds.
        """
        assert self._ws is not None
        await asyncio.wait_for(self._ws.wait_closed(), timeout_s)
        await asyncio.sleep(0)  # let _receive record the close
        if self.close_code is None:
            self.close_code = self._ws.close_code
            self.close_reason = self._ws.close_reason or ""

    def audio_after(self, t: float) -> int:
        """μ-law bytes of bot audio that arrived after monotonic time ``t``."""
        return sum(len(b) for at, b in self.media if at > t)

    async def hang_up(self) -> None:
        """The caller hangs up: ``stop``, then the socket closes."""
        if self._ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._ws.send(self.stop_message())
            await self._ws.close()
        await self.aclose()

    async def aclose(self) -> None:
        """Stop sending and receiving and close the socket, without a ``stop`` message."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
