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
(:mod:`runtime.store_relay`); a stored turn also feeds the server's metrics.
"""

from __future__ import annotations


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
