"""What the server and a session process say to each other (JSON lines over stdin/stdout).

Server → process, one JSON object per line on stdin::

    {"op": "offer", "id": 1, "sdp": "...", "type": "offer", "pc_id": null, "restart_pc": false}
    {"op": "ice", "id": 2, "pc_id": "...", "candidates": [{"candidate": "...", "sdp_mid": "0",
     "sdp_mline_index": 0}]}
    {"op": "end", "id": 3, "reason": "ended by client"}

Process → server, one JSON object per line on stdout::

    {"event": "ready"}                                  pipeline built, waiting for a peer
    {"event": "ready", "phone_url": "ws://127.0.0.1:…"}  phone call: where to relay its stream
    {"event": "reply", "id": 1, "ok": true, "data": {...}}   answer to a request (SDP answer)
    {"event": "reply", "id": 2, "ok": false, "error": "message"}
    {"event": "store", "call": "add_turn", "args": ["<session id>", {...}]}   a store write
    {"event": "ended", "reason": "..."}                 the pipeline finished

The process holds no database connection: each write (a completed turn, a status, a session
event, a usage row) is a ``store`` line the server applies in order
(:mod:`sessions.store_relay`); a stored turn also feeds the server's metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Transport = Literal["webrtc", "daily", "twilio", "telnyx"]


@dataclass(frozen=True)
class SessionSpec:
    """Everything a session process needs to build its pipeline.

    Attributes:
        session_id: The store's session id.
        persona: Persona id.
        tier: Tier name (``local``).
        transport: ``webrtc`` (SmallWebRTC, offer/answer through the server), ``daily``, or a
            phone call's carrier, ``twilio`` or ``telnyx`` (media stream relayed by the server).
        cefr_level: The learner's CEFR level, or ``None`` for the persona default.
        learner_name: For the greeting and the prompt, or ``None``.
        llm_base_url: OpenAI-compatible server of the local tier (shared by all sessions).
        idle_timeout_s: End the session after this many seconds without activity.
        exchange_limit: Learner turns the session answers before ending politely (tier
            quota), or ``None`` for no limit.
        tts_chars_left: Characters TTS may still speak this month (tier quota), or ``None``.
        daily_room_url: ``daily`` sessions: the session's Daily room, which the bot joins.
        daily_token: ``daily`` sessions: the bot's meeting token for that room (owner).
        daily_call_id: Daily pinless dial-in (a phone call): the held call's ``callId``,
            which the bot's transport hands back in ``pinlessCallUpdate``; ``None`` otherwise.
        daily_call_domain: Daily pinless dial-in: the call's ``callDomain``; ``None`` otherwise.
        turn_url: The server's shared smart-turn service (:mod:`services.turn_service`), or
            ``None`` for a model in the session process; set by the supervisor.
    """

    session_id: str
    persona: str
    tier: str
    transport: Transport
    llm_base_url: str
    cefr_level: str | None = None
    learner_name: str | None = None
    idle_timeout_s: float = 300.0
    exchange_limit: int | None = None
    tts_chars_left: int | None = None
    daily_room_url: str | None = None
    daily_token: str | None = None
    daily_call_id: str | None = None
    daily_call_domain: str | None = None
    turn_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the spec as a JSON-ready dict (passed to the process as an argument)."""
        return asdict(self)


class CapacityError(RuntimeError):
    """All session slots are taken.

    Attributes:
        retry_after_s: Seconds after which a slot may be free (for ``Retry-After``).
    """

    def __init__(self, message: str, retry_after_s: int = 30):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SessionNotRunningError(LookupError):
    """The session has no live process (never started, ended or failed)."""


class SessionRequestError(RuntimeError):
    """The session process refused a request (e.g. malformed SDP); the message says why."""
