"""Request and response bodies of the API (pydantic; they are the OpenAPI schema).

Request bodies forbid unknown fields and reject text a database cannot store (NUL characters,
lone surrogates), so bad input is a 422, never a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from store import LearnerInfo, SessionInfo

TargetLanguage = Literal["en", "de", "cs"]
CefrLevel = Literal["A1", "A2", "B1", "B2", "C1", "C2"]
SessionStatus = Literal["starting", "ready", "active", "ended", "failed"]
TransportName = Literal["webrtc", "daily"]


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_storable)]
"""A string the database can store."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- learners ----------------------------------------------------------------------------


class LearnerCreate(_Request):
    """A new learner, owned by the calling API key."""

    name: Text = Field(min_length=1, max_length=200, examples=["Eva"])
    target_language: TargetLanguage = Field(description="Language being learned.")
    cefr_level: CefrLevel = Field(default="A2", description="CEFR level, A1 … C2.")
    interests: list[Annotated[Text, Field(max_length=100)]] = Field(
        default_factory=list, max_length=20, description="Topics the tutor can talk about."
    )
    phone: Text | None = Field(
        default=None,
        description="Not accepted: a number becomes the learner's once proved with a code "
        "called to it (`POST /api/v1/learners/{id}/phone`).",
    )

    @field_validator("phone")
    @classmethod
    def _phone_is_proved_elsewhere(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                "a phone number is added with POST /api/v1/learners/{id}/phone, which calls "
                "it with a code to enter (nobody can claim a number they do not answer)"
            )

    plan: Text | None = Field(
        default=None,
        max_length=32,
        description="Plan (GET /api/v1/plans): the tiers and monthly limits the learner gets. "
        "Only a plan the calling key may grant; default `VOXTUTOR_DEFAULT_PLAN` (free).",
    )


class LearnerOut(BaseModel):
    """A learner; ``phone`` is their verified number (calls from it reach them), or null."""

    id: str
    name: str
    target_language: str
    cefr_level: str
    interests: list[str]
    phone: str | None
    created_at: datetime
    plan: str

    @classmethod
    def of(cls, info: LearnerInfo) -> LearnerOut:
        """Copy a store record."""
        return cls(
            id=info.id,
            name=info.name,
            target_language=info.target_language,
            cefr_level=info.cefr_level,
            interests=list(info.interests),
            phone=info.phone,
            created_at=info.created_at,
            plan=info.plan,
        )


class LearnerPatch(_Request):
    """What a learner or app may change; fields left out stay as they are."""

    name: Text | None = Field(default=None, min_length=1, max_length=200)
    cefr_level: CefrLevel | None = Field(
        default=None, description="CEFR level, A1 … C2 (kept in the level history)."
    )
    interests: list[Annotated[Text, Field(max_length=100)]] | None = Field(
        default=None, max_length=20, description="Topics the tutor can talk about."
    )
    plan: Text | None = Field(
        default=None, max_length=32, description="A plan the calling key may grant."
    )


class PlanOut(BaseModel):
    """A plan: the tiers its learners may use and their monthly limits over all of them."""

    name: str
    title: str
    tiers: list[str]
    sessions_per_month: int | None
    tts_chars_per_month: int | None
    grantable: bool = Field(description="Whether the calling key may put learners on it.")


class LearnerProgress(BaseModel):
    """The learner model and its time series (``store.learner_model``)."""

    learner: dict[str, Any]
    level: dict[str, Any] = Field(description="CEFR level now, its source, evidence, history.")
    weaknesses: list[dict[str, Any]] = Field(
        description="Error categories by recency-weighted count, with rules and an example."
    )
    mistakes: int
    sessions: int
    minutes: float
    last_session: dict[str, Any] | None
    review: dict[str, int] = Field(description="Review items: total, due now, learned.")
    due_items: list[dict[str, Any]] = Field(description="Review items due now (up to 10).")
    acs: dict[str, Any] | None = Field(
        description="Per ACS task mastery 0-5, areas not covered yet (examiner sessions)."
    )
    series: dict[str, Any] = Field(
        description="Per session: mistakes per category, ACS grades, review items; per day: "
        "reviews right/wrong; level over time."
    )


# -- sessions ----------------------------------------------------------------------------


class SessionCreate(_Request):
    """A session to start."""

    persona: Text = Field(max_length=100, description="Persona id (GET /api/v1/personas).")
    tier: Text = Field(max_length=50, description="Tier name (GET /api/v1/tiers).")
    transport: TransportName = Field(description="`webrtc` (SmallWebRTC) or `daily`.")
    learner_id: Text = Field(max_length=100, description="A learner of the calling key.")
    mode: Literal["conversation", "review"] = Field(
        default="conversation",
        description="`review`: the tutor drills the learner's due review items (409 "
        "`nothing_due` when none is due).",
    )


class Connect(BaseModel):
    """How the client connects; the fields set depend on the session's transport.

    ``webrtc``: POST the SDP offer to ``offer_url`` with ``token``. ``daily``: join the Daily
    room ``room_url`` with the meeting ``token`` (e.g. ``callObject.join({url, token})``).
    """

    offer_url: str | None = Field(
        default=None, description="`webrtc`: where to POST the SDP offer; `null` for `daily`."
    )
    room_url: str | None = Field(
        default=None, description="`daily`: the session's private Daily room; `null` for `webrtc`."
    )
    token: str = Field(
        description="`webrtc`: the per-session browser token for `offer_url`. `daily`: the "
        "learner's meeting token for `room_url` (expires with the room). Shown only here."
    )


class SessionCreated(BaseModel):
    """A started session."""

    session_id: str
    status: SessionStatus
    connect: Connect


class Mistake(BaseModel):
    """One error a tutor found in the learner's turn (checked before it was spoken)."""

    original: str = Field(description="The wrong words as the learner said them.")
    corrected: str = Field(description="What they should be.")
    rule: str = Field(description="The rule in a few words.")
    category: str = Field(description="word_order, case, gender, verb_form, preposition, ...")
    spoken: bool = Field(description="The one correction the tutor said aloud.")


class AcsGrade(BaseModel):
    """The examiner's grade of the learner's answer."""

    question_id: str = Field(description="The ACS question bank question, e.g. PA.I.A.1.")
    task: str = Field(description="Its ACS task code, e.g. PA.I.A.")
    grade: Literal["satisfactory", "probe", "unsatisfactory"]
    missing: list[str] = Field(description="Key points missed or stated wrongly.")


class TurnAssessment(BaseModel):
    """What the tutoring step found in one learner turn."""

    corrected: str | None = Field(
        default=None, description="Tutors: the checked corrected sentence."
    )
    mistakes: list[Mistake] = Field(default_factory=list)
    acs: list[AcsGrade] = Field(default_factory=list)


class Turn(BaseModel):
    """A completed turn (the ``transcript.json`` turn schema)."""

    index: int
    role: Literal["learner", "bot"]
    text: str
    start_ms: int | None
    end_ms: int | None
    latency_ms: int | None = Field(description="Bot turns: voice-to-voice latency, ms.")
    ttfb_ms: dict[str, int | None] = Field(description="Bot turns: TTFB per service, ms.")
    interrupted: bool
    assessment: TurnAssessment | None = Field(
        default=None, description="Learner turns: what the tutoring step found, if anything."
    )


class Latency(BaseModel):
    """Voice-to-voice latency over the session's bot turns."""

    turns: int
    median_ms: float | None
    p95_ms: float | None
    max_ms: int | None


class SessionOut(BaseModel):
    """A session (without its turns)."""

    id: str
    learner_id: str
    persona: str
    tier: str
    transport: str
    status: SessionStatus
    created_at: datetime
    ready_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    mode: Literal["conversation", "review"] = "conversation"

    @classmethod
    def fields_of(cls, info: SessionInfo) -> dict[str, Any]:
        """The fields of a store record."""
        return {
            "id": info.id,
            "learner_id": info.learner_id,
            "persona": info.persona,
            "tier": info.tier,
            "transport": info.transport,
            "status": info.status,
            "created_at": info.created_at,
            "ready_at": info.ready_at,
            "ended_at": info.ended_at,
            "end_reason": info.end_reason,
            "mode": info.mode,
        }


class SessionEvent(BaseModel):
    """Something that happened in a session besides its turns."""

    kind: str = Field(
        description="``provider_switch`` (data: role, from, to, reason) or ``tool_call`` "
        "(data: name, arguments: a persona tool such as record_acs_result)."
    )
    at: datetime
    data: dict[str, Any]


class SessionDetail(SessionOut):
    """A session with its turns, latency summary and events."""

    turns: list[Turn]
    latency: Latency
    events: list[SessionEvent] = Field(description="In the order they happened.")


class SessionPage(BaseModel):
    """A page of sessions, newest first."""

    items: list[SessionOut]
    total: int
    limit: int
    offset: int


class SessionEnding(BaseModel):
    """The session was asked to end (``ending``) or, having no process, ended (``ended``)."""

    status: Literal["ending", "ended"]


# -- WebRTC signalling -------------------------------------------------------------------


class SdpOffer(_Request):
    """The browser's SDP offer (Pipecat SmallWebRTC client)."""

    sdp: Text = Field(min_length=1, max_length=20_000, description="At most 20,000 characters.")
    type: Literal["offer"]
    pc_id: Text | None = Field(default=None, max_length=200)
    restart_pc: bool | None = None
    request_data: dict[str, Any] | None = Field(
        default=None, description="Accepted for Pipecat client compatibility; ignored."
    )
    requestData: dict[str, Any] | None = Field(
        default=None, description="Accepted for Pipecat client compatibility; ignored."
    )


class SdpAnswer(BaseModel):
    """The session process's SDP answer."""

    sdp: str
    type: str
    pc_id: str


class IceCandidate(_Request):
    """One trickled ICE candidate."""

    candidate: Text = Field(max_length=2000)
    sdp_mid: Text | None = Field(default=None, max_length=100)
    sdp_mline_index: int | None = Field(default=None, ge=0, le=1000)


class IcePatch(_Request):
    """Trickled ICE candidates for a peer connection."""

    pc_id: Text = Field(min_length=1, max_length=200)
    candidates: list[IceCandidate] = Field(max_length=20)


class IceAccepted(BaseModel):
    """The candidates were handed to the session process."""

    status: Literal["success"] = "success"


# -- catalog and ops ---------------------------------------------------------------------


class PersonaOut(BaseModel):
    """A persona."""

    id: str
    name: str
    role: str
    language: str
    cefr_level: str


class TierQuotas(BaseModel):
    """A tier's limits per learner (``null`` = unlimited; set per tier in ``config/tiers.yaml``)."""

    sessions_per_month: int | None
    exchanges_per_session: int | None
    tts_chars_per_month: int | None


class TierOut(BaseModel):
    """A tier, its providers (primary first, then failover backups) and its availability."""

    name: str
    title: str = ""
    kind: Literal["pipeline", "speech_to_speech"] = "pipeline"
    providers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Provider chain per role (stt, llm, tts; or realtime), primary first.",
    )
    quotas: TierQuotas | None = None
    available: bool
    missing: list[str] = Field(description="Unset environment variables the tier needs.")


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Readiness with each check's outcome (``ok``, ``busy``, ``skipped`` or what failed)."""

    status: Literal["ready", "unready"]
    checks: dict[str, str]


class SessionReportOut(BaseModel):
    """A session's report and the state of the job that writes it."""

    session_id: str
    status: Literal["pending", "running", "done", "failed"]
    attempts: int
    report: dict[str, Any] | None = Field(
        description="Summary, strengths, corrections, three things to practise, level "
        "estimate; ACS debrief per task for the examiner. ``null`` until ``done``."
    )
    error: str | None = None
