"""Which ICE candidates a session may use: public addresses only, unless a setting allows more.

A browser's SDP offer and its trickled candidates tell the session process where to send UDP.
Without a check, a client could point a session's media at the server's loopback or at
private addresses behind it (RFC 8826 §4.2 on ICE as a way to reach internal hosts:
https://www.rfc-editor.org/rfc/rfc8826#section-4.2). Candidates whose address is not a global
unicast IP (loopback, RFC 1918 private, link-local, CGNAT, multicast, unspecified, or a
hostname such as an mDNS ``.local`` name) are refused in trickled candidates and left out of
an offer's SDP, unless ``VOXTUTOR_WEBRTC_PRIVATE_CANDIDATES`` is set (a LAN deployment, or
tests on loopback).
"""

from __future__ import annotations

import ipaddress

MAX_OFFER_CANDIDATES = 50
"""Candidate lines kept from one offer's SDP (a browser gathers a handful per interface)."""

MAX_SDP_CHARS = 20_000
"""Longest SDP offer accepted, characters (a browser's audio-only offer is 2,000-8,000)."""


def candidate_address(candidate: str) -> str | None:
    """The connection address of an ICE candidate line (RFC 8839 §5.1), or ``None``.

    Accepts ``candidate:…`` or ``a=candidate:…``; ``None`` for a malformed line.
    """
    text = candidate.strip().removeprefix("a=")
    if not text.startswith("candidate:"):
        return None
    parts = text.split()
    return parts[4] if len(parts) >= 8 else None


def candidate_allowed(candidate: str, allow_private: bool) -> bool:
    """Whether the session may use ``candidate``.

    A global unicast address always; any address when ``allow_private``; a malformed
    candidate never.
    """
    address = candidate_address(candidate)
    if address is None:
        return False
    if allow_private:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # a hostname (mDNS .local, or a name that may resolve anywhere)
        return False
    return ip.is_global and not ip.is_multicast


def filter_offer(sdp: str, allow_private: bool) -> tuple[str, int]:
    """``sdp`` without the candidate lines the session may not use.

    Lines beyond :data:`MAX_OFFER_CANDIDATES` are dropped too.

    Returns:
        The filtered SDP and how many candidate lines were dropped.
    """
    kept: list[str] = []
    dropped = candidates = 0
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            candidates += 1
            if candidates > MAX_OFFER_CANDIDATES or not candidate_allowed(line, allow_private):
                dropped += 1
                continue
        kept.append(line)
    return "".join(kept), dropped
