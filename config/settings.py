"""Process-wide settings read from the environment (``VOXTUTOR_*``) with pydantic-settings.

Every variable is documented in ``.env.example``. Secrets never have defaults and are never
logged; the local tier needs none.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LocalLLM = Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]

PROVIDER_KEYS: dict[str, str] = {
    "OPENAI_API_KEY": "openai_api_key",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "DEEPGRAM_API_KEY": "deepgram_api_key",
    "CARTESIA_API_KEY": "cartesia_api_key",
    "DAILY_API_KEY": "daily_api_key",
}
"""Provider key variable → its :class:`ProviderKeys` field. The variables carry no
``VOXTUTOR_`` prefix: they are the names each provider's own SDK and documentation use."""


def _default_home() -> Path:
    return Path(platformdirs.user_cache_dir("voxtutor"))


class PhoneLine(BaseModel):
    """Defaults for calls to one dialled number (``VOXTUTOR_PHONE_LINES``).

    Attributes:
        persona: Persona of every caller to this number; ``None`` → a known learner gets the
            persona of their target language from ``phone_menu``, an unknown caller the menu.
        tier: Tier the calls run on; ``None`` → ``phone_default_tier``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    persona: str | None = None
    tier: str | None = None


class Settings(BaseSettings):
    """Runtime settings of one voxtutor process.

    Attributes:
        home: Cache directory for assembled models and runtime state (``VOXTUTOR_HOME``).
        llm_model: Which packaged GGUF the local llama.cpp server loads.
        llm_host: Loopback address the local LLM server binds to.
        llm_port: TCP port of the local LLM server; 0 picks a free port at start.
        llm_threads: CPU threads for llama.cpp decoding (the target machine has 2 cores).
        llm_context_tokens: llama.cpp context window in tokens.
        assessment_scorer: Grade the examiner's answers from the local model's verdict
            probabilities, read in the session process (``services.assessment.next_token``);
            off, or without the local model installed, the LLM server writes the verdict.
        llm_warm_up: Evaluate each persona's opening prompt in the local LLM server before a
            session needs it (off only to measure what it saves: ``bench.server_session``).
        first_clause: Speak the first clause of a reply as soon as it is complete (a comma
            after 24 characters and three words) rather than its first whole sentence.
        llm_max_tokens: Cap on tokens per tutor reply (spoken replies are 1-3 sentences).
        llm_base_url: Use an already running OpenAI-compatible server (vLLM, Ollama, a GPU box)
            instead of starting llama.cpp; e.g. ``http://10.0.0.5:8000/v1``.
        llm_ready_timeout_s: Seconds to wait for the LLM server's readiness check.
        vad_stop_ms: Silence in ms after which Silero VAD reports the end of speech.
        speech_timeout_ms: Pause in ms ending a turn where smart-turn has no model (Czech).
        smart_turn_max_pause_ms: Pause in ms that ends a turn even when smart-turn judges the
            utterance unfinished (Pipecat's default is 3000; learners pause to think, but
            2 s already feels like the tutor stopped listening).
        smart_turn_url: A smart-turn service (``services.turn_service``: ``POST`` of a
            float32 16 kHz ``.npy`` array → ``{"prediction", "probability"}``) shared by the
            sessions instead of a model copy in each (~25-60 MB each); ``voxtutor serve``
            starts one on loopback and gives its URL to its sessions. ``None``: each session
            loads the model itself.
        min_words_to_interrupt: Words a learner must say while the bot speaks to barge in,
            so a one-word backchannel ("ja", "mhm") does not interrupt.
        log_level: loguru level for the console.
        database_url: SQLAlchemy URL of the store (``DATABASE_URL``); SQLite file under
            ``home`` when unset. ``postgresql://`` and ``sqlite://`` URLs get async drivers.
        host: Address ``voxtutor serve`` binds.
        port: TCP port ``voxtutor serve`` listens on.
        workers: uvicorn worker processes (sessions run in their own processes anyway).
        max_sessions: Concurrent sessions; beyond it the API answers 429 with Retry-After.
        max_local_sessions: Concurrent sessions on the local tier's one llama.cpp server;
            beyond it the API answers 429 ``local_at_capacity`` rather than letting every
            learner wait. Default: one per two CPU cores. On 2 cores one session's median
            voice-to-voice was 2.5 s, two at once 3.5 and 4.8 s with a p95 of 10 s
            (``python -m bench.voice_to_voice --sessions N``, bench/README.md).
        session_idle_timeout_s: End a session after this many seconds without speech.
        rate_limit_per_key: Requests one API key may make (``limits`` notation:
            ``600/minute``); 429 ``rate_limited`` beyond.
        session_starts_per_learner: Sessions one learner may start (``20/hour``).
        max_sessions_per_key: Live sessions one API key may have at once (429
            ``key_at_capacity`` beyond).
        limits_url: Where the rate counters live: ``None`` in memory (one server process),
            ``async+redis://host:6379`` to share them between processes.
        max_session_minutes: The longest a session runs; then the tutor says goodbye.
        session_memory_limit_mb: Address-space limit of each session process, MiB
            (``RLIMIT_AS``, :mod:`runtime.memory_limit`); a session that needs more ends
            (failed) and frees its slot. ``None``: no limit.
        outbox_retry_s: Seconds between retries of session writes queued while the database
            is unreachable (:mod:`runtime.outbox`).
        revocation_poll_s: How often the server looks for sessions of revoked API keys (and
            ends them), s.
        transcript_retention_days: Delete the turns of sessions that ended longer ago than
            this (hourly); ``None`` keeps them. The learner model, reports and usage stay.
        webrtc_private_candidates: Let browsers' ICE candidates point a session's media at
            loopback, private and link-local addresses (a LAN deployment, a browser on the
            same machine, tests). Off: only public addresses (:mod:`api.ice`).
        ops_public: Serve ``/metrics`` and ``/openapi.json`` without an API key, and the
            ``/docs`` page at all (development). Off (production): both need a key, ``/docs``
            is not served.
        default_plan: The plan (``config/plans.yaml``) a learner gets when none is given.
        max_learners_per_key: Learners one API key may create (403 ``learner_limit`` beyond).
        session_tts_reserve_chars: TTS characters a session reserves of its learner's monthly
            allowance when it starts (at most what is left); the session ends politely when
            they are spoken. ~50,000 characters is about an hour of tutor speech.
        reports: Run the session report worker in the server (``runtime.report_jobs``); off
            where another process (``voxtutor reports work``) runs it.
        report_lease_s: How long a report job's claim holds before another worker may take
            it (its worker is taken for dead), s.
        report_poll_s: How often the report worker looks for jobs, s.
        cors_origins: Origins allowed to call the API from a browser (comma-separated in env).
        max_body_bytes: Largest request body accepted, bytes (an SDP offer is ~5-10 KB).
        nats_url: NATS server of a scaled-out deployment (``nats://host:4222``): ``voxtutor
            serve`` is then an API replica that dispatches sessions to ``voxtutor host``
            processes registered there (:mod:`runtime.cluster`). ``None`` (the embedded
            default): ``voxtutor serve`` runs the sessions itself and needs no broker.
        host_id: This session host's name in the registry; default ``<hostname>-<random>``.
        host_heartbeat_s: How often a host refreshes its registry entry, s.
        host_ttl_s: A host whose entry is this old is taken for dead: the registry drops it
            and its sessions are marked ``failed``, s (JetStream KV ``max_age``).
        host_load_threshold: CPU load (1-minute load average per core) at or above which a
            host takes no new sessions.
        openai_base_url: OpenAI REST base (chat, speech, transcriptions); ``None`` = the SDK's
            default ``https://api.openai.com/v1``. Tests point it at a loopback fake.
        openai_realtime_url: OpenAI Realtime websocket; ``None`` = Pipecat's default
            ``wss://api.openai.com/v1/realtime``.
        anthropic_base_url: Anthropic Messages API base; ``None`` = ``https://api.anthropic.com``.
        deepgram_base_url: Deepgram base for listen (STT) and speak (TTS); ``None`` = Pipecat's
            defaults (``api.deepgram.com``).
        cartesia_url: Cartesia TTS websocket; ``None`` = ``wss://api.cartesia.ai/tts/websocket``.
        daily_api_url: Daily REST API base (rooms, meeting tokens, dial-in).
        daily_dialin_hmac: Base64 secret checking ``X-Pinless-Signature`` on Daily's
            pinless dial-in webhook (``DAILY_DIALIN_HMAC``: the ``hmac`` of the domain's
            ``pinless_dialin`` config); unset → Daily dial-in calls are refused.
        upgrade_url: The operator's pricing page, where a learner over a quota or outside
            their plan is sent (``upgrade_url`` in 402 ``quota_exceeded`` and 403
            ``tier_not_entitled`` bodies). ``None``: the learner's checkout route when Stripe
            is configured, else ``/api/v1/plans`` (:func:`api.billing.upgrade_url`).
        phone_public_url: Public base URL the carriers reach this server at (e.g.
            ``https://tutor.example.com``): Twilio signs the webhook URL it called, and the
            media-stream URL handed to the carrier is built from it. ``None`` → the request's
            own URL (fine on loopback, wrong behind a proxy).
        twilio_auth_token: Checks ``X-Twilio-Signature`` on Twilio webhooks (``TWILIO_AUTH_TOKEN``);
            unset → Twilio calls are refused. Also hangs up calls over REST with the SID.
        twilio_account_sid: Account SID for the REST hang-up (``TWILIO_ACCOUNT_SID``).
        twilio_api_base_url: Twilio REST base for the hang-up; ``None`` = ``https://api.twilio.com``.
        telnyx_public_key: Base64 Ed25519 public key checking Telnyx webhook signatures
            (``TELNYX_PUBLIC_KEY``, Mission Control → Keys & Credentials); unset → Telnyx calls
            are refused.
        telnyx_api_key: Hangs up Telnyx calls over REST when the session ends
            (``TELNYX_API_KEY``); unset → the call ends when the media stream closes.
        stripe_secret_key: Stripe secret API key (``STRIPE_SECRET_KEY``, ``sk_live_…`` or
            ``sk_test_…``); unset → the billing routes answer 503 ``billing_unavailable``.
            Server only: never passed to session processes (:mod:`runtime.session_env`).
        stripe_webhook_secret: Signing secret of the Stripe webhook endpoint
            (``STRIPE_WEBHOOK_SECRET``, ``whsec_…``) that ``Stripe-Signature`` is checked
            with; unset → the webhook answers 503. Server only.
        stripe_api_base: Base address of the Stripe API for the ``stripe`` library
            (``VOXTUTOR_STRIPE_API_BASE``); ``None`` = ``https://api.stripe.com``. Tests point
            it at a loopback fake (``testkit/providers/stripe_fake.py``).
        phone_lines: Per dialled number (E.164, e.g. ``+4930123456``): default persona and tier.
        phone_default_tier: Tier of calls to numbers without a ``phone_lines`` entry.
        phone_menu: Personas offered by the keypad menu, in digit order (1, 2, 3, …).
        phone_stream_ttl_s: Seconds a call's media-stream URL stays valid after the webhook;
            a call whose stream has not connected by then is ended.
        phone_verify_from: The number verification calls come from (one of your carrier
            numbers, E.164); ``None`` → the first ``phone_lines`` number.
        telnyx_texml_connection_id: The TeXML application id that places Telnyx verification
            calls (``TELNYX_TEXML_CONNECTION_ID``); Twilio is used when its SID and token are set.
        telnyx_api_base_url: Telnyx REST base; ``None`` = ``https://api.telnyx.com``.
        phone_verify_calls_per_key: Verification calls one API key's learners may cause
            (``limits`` notation); each is a paid call to any number, so abuse costs money.
    """

    model_config = SettingsConfigDict(env_prefix="VOXTUTOR_", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    llm_model: LocalLLM = "qwen2.5-coder-1.5b"
    llm_host: str = "127.0.0.1"
    llm_port: int = Field(default=0, ge=0, le=65535)
    llm_threads: int = Field(default=2, ge=1)
    llm_context_tokens: int = Field(default=4096, ge=512)
    llm_max_tokens: int = Field(default=120, ge=16)
    llm_base_url: str | None = None
    assessment_scorer: bool = True
    first_clause: bool = True
    llm_warm_up: bool = True
    llm_ready_timeout_s: float = Field(default=120.0, gt=0)
    vad_stop_ms: int = Field(default=200, ge=50, le=2000)
    speech_timeout_ms: int = Field(default=600, ge=100, le=5000)
    smart_turn_max_pause_ms: int = Field(default=2000, ge=300, le=10000)
    smart_turn_url: str | None = None
    min_words_to_interrupt: int = Field(default=3, ge=1)
    log_level: str = "INFO"
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "VOXTUTOR_DATABASE_URL")
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    max_sessions: int = Field(default=4, ge=1)
    max_local_sessions: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2), ge=1
    )
    session_idle_timeout_s: float = Field(default=300.0, gt=0)
    ops_public: bool = False
    rate_limit_per_key: str = "600/minute"
    session_starts_per_learner: str = "20/hour"
    max_sessions_per_key: int = Field(default=50, ge=1)
    limits_url: str | None = None
    max_session_minutes: float = Field(default=60.0, gt=0)
    session_memory_limit_mb: int | None = Field(default=8192, ge=256)
    outbox_retry_s: float = Field(default=2.0, gt=0)
    revocation_poll_s: float = Field(default=10.0, gt=0)
    transcript_retention_days: float | None = Field(default=None, gt=0)
    webrtc_private_candidates: bool = False
    default_plan: str = "free"
    max_learners_per_key: int = Field(default=10000, ge=1)
    session_tts_reserve_chars: int = Field(default=50_000, ge=100)
    reports: bool = True
    report_lease_s: float = Field(default=300.0, gt=0)
    report_poll_s: float = Field(default=5.0, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    openai_base_url: str | None = None
    openai_realtime_url: str | None = None
    anthropic_base_url: str | None = None
    deepgram_base_url: str | None = None
    cartesia_url: str | None = None
    daily_api_url: str = "https://api.daily.co/v1"
    daily_dialin_hmac: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DAILY_DIALIN_HMAC", "VOXTUTOR_DAILY_DIALIN_HMAC"),
    )
    upgrade_url: str | None = None
    phone_public_url: str | None = None
    twilio_auth_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "VOXTUTOR_TWILIO_AUTH_TOKEN"),
    )
    twilio_account_sid: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TWILIO_ACCOUNT_SID", "VOXTUTOR_TWILIO_ACCOUNT_SID"),
    )
    twilio_api_base_url: str | None = None
    telnyx_public_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TELNYX_PUBLIC_KEY", "VOXTUTOR_TELNYX_PUBLIC_KEY"),
    )
    telnyx_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TELNYX_API_KEY", "VOXTUTOR_TELNYX_API_KEY")
    )
    stripe_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_SECRET_KEY", "VOXTUTOR_STRIPE_SECRET_KEY"),
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "VOXTUTOR_STRIPE_WEBHOOK_SECRET"),
    )
    stripe_api_base: str | None = None
    phone_lines: dict[str, PhoneLine] = Field(default_factory=dict)
    phone_default_tier: str = "local"
    phone_menu: list[str] = Field(
        default_factory=lambda: ["german-tutor", "czech-tutor", "aviation-examiner"],
        min_length=1,
        max_length=9,
    )
    phone_stream_ttl_s: float = Field(default=30.0, gt=0)
    phone_verify_from: str | None = None
    telnyx_texml_connection_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TELNYX_TEXML_CONNECTION_ID", "VOXTUTOR_TELNYX_TEXML_CONNECTION_ID"
        ),
    )
    telnyx_api_base_url: str | None = None
    phone_verify_calls_per_key: str = "50/day"
    nats_url: str | None = None
    host_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    host_heartbeat_s: float = Field(default=1.0, gt=0)
    host_ttl_s: float = Field(default=5.0, gt=0)
    host_load_threshold: float = Field(default=1.5, gt=0)

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def store_url(self) -> str:
        """The store's URL: ``database_url`` or ``sqlite+aiosqlite:///<home>/voxtutor.db``."""
        # Imported here: SQLAlchemy (behind normalize_url) costs a session process ~20 MB.
        from config.database import default_database_url, normalize_url

        return (
            normalize_url(self.database_url)
            if self.database_url
            else default_database_url(self.home)
        )


class ProviderKeys(BaseSettings):
    """The cloud providers' API keys, read from the environment (and ``.env``).

    Kept apart from :class:`Settings` so that reading them afresh is cheap (five fields):
    a key set or removed while the process runs counts at once. Never logged.

    Attributes:
        openai_api_key: ``OPENAI_API_KEY``; unset → tiers whose primary is OpenAI are not
            offered and OpenAI backups drop out of chains.
        anthropic_api_key: ``ANTHROPIC_API_KEY`` (Claude), as above.
        deepgram_api_key: ``DEEPGRAM_API_KEY``, as above.
        cartesia_api_key: ``CARTESIA_API_KEY``, as above.
        daily_api_key: ``DAILY_API_KEY``; unset → no ``daily`` transport and no Daily dial-in.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    deepgram_api_key: SecretStr | None = Field(default=None, validation_alias="DEEPGRAM_API_KEY")
    cartesia_api_key: SecretStr | None = Field(default=None, validation_alias="CARTESIA_API_KEY")
    daily_api_key: SecretStr | None = Field(default=None, validation_alias="DAILY_API_KEY")


DOTENV_SWITCH = "VOXTUTOR_DOTENV"
"""``false`` makes a process ignore ``.env`` (session processes: the server hands them the
non-secret values of its ``.env`` in their environment, :mod:`runtime.session_env`)."""


def _reads_dotenv() -> bool:
    return os.environ.get(DOTENV_SWITCH, "true").strip().lower() not in ("0", "false", "no")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process's settings, read once from the environment (and ``.env``).

    Raises:
        pydantic.ValidationError: A ``VOXTUTOR_*`` variable has an invalid value.
    """
    return Settings() if _reads_dotenv() else Settings(_env_file=None)  # type: ignore[call-arg]


def provider_key(variable: str) -> str | None:
    """Provider key ``variable`` (e.g. ``OPENAI_API_KEY``) as the environment holds it now.

    Read afresh on each call (:class:`ProviderKeys`): a key set or removed while the process
    runs (tests do) counts at once. Returns ``None`` when unset or empty; the value is never
    logged.

    Raises:
        KeyError: ``variable`` is not one of :data:`PROVIDER_KEYS`.
    """
    keys = ProviderKeys() if _reads_dotenv() else ProviderKeys(_env_file=None)  # type: ignore[call-arg]
    secret = getattr(keys, PROVIDER_KEYS[variable])
    return secret.get_secret_value() or None if secret is not None else None
