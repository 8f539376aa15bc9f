"""Who may call the phone webhooks: the carriers' request signatures.

* Twilio signs each webhook with ``X-Twilio-Signature``, the base64 HMAC-SHA1 (keyed with the
  account's auth token) of the full URL Twilio requested followed by the POST parameters
  sorted by name, each as name + value
  (https://www.twilio.com/docs/usage/webhooks/webhooks-security). It is checked with the Twilio
  helper library's ``RequestValidator``.
* Telnyx signs each webhook with Ed25519: ``telnyx-signature-ed25519`` is the base64 signature
  of ``"<telnyx-timestamp>|<raw body>"`` under the account's public key
  (https://developers.telnyx.com/docs/development/api-fundamentals/webhooks); a timestamp more
  than :data:`TELNYX_TOLERANCE_S` away from now is refused as a replay.

An unsigned or wrongly signed request raises :class:`SignatureError` (the route answers 403).
"""

from __future__ import annotations

import base64
import binascii
import time
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.datastructures import URL, ImmutableMultiDict
from twilio.request_validator import RequestValidator

TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
TELNYX_SIGNATURE_HEADER = "telnyx-signature-ed25519"
TELNYX_TIMESTAMP_HEADER = "telnyx-timestamp"
TELNYX_TOLERANCE_S = 300
"""Largest accepted distance of ``telnyx-timestamp`` from now, seconds (Telnyx's SDKs use 5 min)."""


class SignatureError(Exception):
    """The request is unsigned, or its signature does not verify; the message says which."""


def form_params(body: bytes) -> ImmutableMultiDict[str, str]:
    """Parse an ``application/x-www-form-urlencoded`` webhook body (repeated names kept).

    Raises:
        SignatureError: The body is not UTF-8 (no carrier sends that).
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise SignatureError("the body is not UTF-8 form data") from None
    return ImmutableMultiDict(parse_qsl(text, keep_blank_values=True))


def public_url(url: URL, public_base: str | None) -> str:
    """The URL the carrier called: ``url`` with its scheme and host replaced by ``public_base``.

    Behind a proxy the app sees its own address, while Twilio signs the public one.

    Args:
        url: The request's URL as the app sees it.
        public_base: e.g. ``https://tutor.example.com``; ``None`` keeps ``url``.
    """
    if not public_base:
        return str(url)
    tail = url.path + (f"?{url.query}" if url.query else "")
    return public_base.rstrip("/") + tail


def verify_twilio(
    url: str, params: ImmutableMultiDict[str, str], signature: str | None, auth_token: str
) -> None:
    """Check ``X-Twilio-Signature`` of a form-encoded webhook.

    Args:
        url: The full URL Twilio requested (see :func:`public_url`).
        params: The POST parameters.
        signature: The header's value, or ``None`` if absent.
        auth_token: The account's auth token.

    Raises:
        SignatureError: Missing or not matching.
    """
    if not signature:
        raise SignatureError(f"the request has no {TWILIO_SIGNATURE_HEADER} header")
    if not RequestValidator(auth_token).validate(url, params, signature):
        raise SignatureError(f"{TWILIO_SIGNATURE_HEADER} does not match the request")


def telnyx_public_key(encoded: str) -> Ed25519PublicKey:
    """Load the account's public key from its base64 form (as Mission Control shows it).

    Raises:
        ValueError: Not base64 of a 32-byte Ed25519 key.
    """
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as e:
        raise ValueError("the Telnyx public key is not base64") from e
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_telnyx(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_key: Ed25519PublicKey,
    now: float | None = None,
) -> None:
    """Check the Ed25519 signature of a Telnyx webhook.

    Args:
        body: The raw request body, exactly as received.
        signature: ``telnyx-signature-ed25519`` (base64), or ``None`` if absent.
        timestamp: ``telnyx-timestamp`` (Unix seconds), or ``None`` if absent.
        public_key: The account's public key (:func:`telnyx_public_key`).
        now: Current Unix time in seconds (tests); ``None`` = the clock.

    Raises:
        SignatureError: A header is missing or malformed, the timestamp is outside the
            tolerance, or the signature does not verify.
    """
    if not signature or not timestamp:
        raise SignatureError(
            f"the request lacks {TELNYX_SIGNATURE_HEADER} or {TELNYX_TIMESTAMP_HEADER}"
        )
    try:
        sent_at = int(timestamp)
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError("malformed Telnyx signature headers") from None
    if abs((time.time() if now is None else now) - sent_at) > TELNYX_TOLERANCE_S:
        raise SignatureError(f"{TELNYX_TIMESTAMP_HEADER} is more than 5 minutes off")
    try:
        public_key.verify(raw, timestamp.encode() + b"|" + body)
    except InvalidSignature:
        raise SignatureError(f"{TELNYX_SIGNATURE_HEADER} does not match the request") from None
