"""The kinds of session event: things worth keeping about a session as they happen.

A session writes them (:class:`contracts.writer.SessionWriter.add_session_event`); the store
keeps one row each and ``GET /api/v1/sessions/{id}`` lists them.
"""

from __future__ import annotations

EVENT_KIND_MAX = 50
"""Longest event kind, in characters (the ``session_events.kind`` column's width)."""

PROVIDER_SWITCH = "provider_switch"
"""A failover switch; ``data``: ``role``, ``from``, ``to``, ``reason``."""

TOOL_CALL = "tool_call"
"""A persona tool call (``record_acs_result``, ``note_mistake``); ``data``: ``name``,
``arguments``."""
