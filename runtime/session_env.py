"""The environment a session process gets: what its tier needs, none of the server's secrets.

A session process parses untrusted input (SDP, RTP, audio from the internet), so it holds as
little as possible: the variables a Python process and voxtutor's settings need, and the
provider keys of the tiers it may serve — none for a ``local`` process (its chains are all
local), every cloud provider's for a ``cloud`` or ``phone`` process (a warm spare serves any
cloud tier), plus ``DAILY_API_KEY`` for ``cloud`` (Daily rooms and dial-in). Never the
database URL, the carriers' webhook secrets, the Daily dial-in HMAC or Stripe's secret key
and webhook secret (``STRIPE_SECRET_KEY``, ``STRIPE_WEBHOOK_SECRET``): those stay with the
server (the process writes through the server, :mod:`runtime.store_relay`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from config.settings import DOTENV_SWITCH
from config.tiers import PROVIDER_KEY_ENV

KEEP_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "VIRTUAL_ENV",
        "SHELL",
        "TERM",
        "PULSE_SERVER",
    }
)
"""Variables a Python process and its libraries read (locale, paths, temp dir)."""

KEEP_PREFIXES = ("VOXTUTOR_", "LC_", "XDG_", "PYTHON", "OMP_", "OPENBLAS_", "SSL_CERT_")
"""Variable families kept: voxtutor's settings, locale, cache dirs, Python, BLAS threads,
CA certificates."""

SERVER_ONLY = frozenset(
    {
        "VOXTUTOR_DATABASE_URL",
        "VOXTUTOR_TWILIO_AUTH_TOKEN",
        "VOXTUTOR_TWILIO_ACCOUNT_SID",
        "VOXTUTOR_TELNYX_PUBLIC_KEY",
        "VOXTUTOR_TELNYX_API_KEY",
        "VOXTUTOR_TELNYX_TEXML_CONNECTION_ID",
        "VOXTUTOR_DAILY_DIALIN_HMAC",
        "VOXTUTOR_STRIPE_SECRET_KEY",
        "VOXTUTOR_STRIPE_WEBHOOK_SECRET",
        "VOXTUTOR_LIMITS_URL",
        "VOXTUTOR_NATS_URL",  # the broker: a session process may spawn or end any session
    }
)
"""``VOXTUTOR_`` aliases of secrets only the server uses (``config.settings``)."""

DAILY_KEY = "DAILY_API_KEY"


def session_env(
    kind: str, environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> dict[str, str]:
    """The environment of a session process of ``kind`` (``local``, ``cloud``, ``phone``).

    The server's ``.env`` values go through the same filter (the environment wins over it),
    and the process is told not to read ``.env`` itself (``VOXTUTOR_DOTENV=false``), so a
    secret kept there does not reach it either.

    Args:
        kind: The process's kind (``runtime.supervisor.spare_kind``).
        environ: The server's environment (default ``os.environ``).
        dotenv: The server's ``.env`` file, or ``None``.
    """
    from_file = dotenv_values(dotenv) if dotenv is not None and dotenv.is_file() else {}
    env = {
        **{k: v for k, v in from_file.items() if v is not None},
        **(os.environ if environ is None else environ),
    }
    out = {
        k: v
        for k, v in env.items()
        if (k in KEEP_NAMES or k.startswith(KEEP_PREFIXES)) and k not in SERVER_ONLY
    }
    if kind != "local":
        out.update({k: env[k] for k in PROVIDER_KEY_ENV.values() if k in env})
    if kind == "cloud" and DAILY_KEY in env:
        out[DAILY_KEY] = env[DAILY_KEY]
    out[DOTENV_SWITCH] = "false"
    return out
