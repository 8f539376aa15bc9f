"""What a session process is told to run: one session's persona, tier, transport and limits.

The API builds a :class:`SessionSpec`; the supervisor hands it to the session process as JSON
(:mod:`runtime.protocol`), and the transports read their part of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Transport = Literal["webrtc", "daily", "twilio", "telnyx"]
"""How the learner reaches the session: browser WebRTC, a Daily room, or a phone carrier."""


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
        mode: ``conversation``, or ``review``: the tutor drills the due review items in
            ``memory`` (:mod:`pipelines.review`).
        max_duration_s: The longest the session runs, s; then the tutor says goodbye
            (``None``: no limit but the idle timeout).
        memory: What the store knows about the learner, bounded
            (:meth:`pipelines.memory.LearnerMemory.to_json`), or ``None`` for none.
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
    mode: str = "conversation"
    memory: dict[str, Any] | None = None
    max_duration_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the spec as a JSON-ready dict (passed to the process as an argument)."""
        return asdict(self)
