"""Observers voxtutor hangs off a session's pipeline: side effects without extra processors."""
