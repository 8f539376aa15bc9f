"""Pipeline builders: one function assembles a tutoring session from configuration.

``build_session(persona, tier, transport)`` returns a ready ``PipelineWorker``; per-tier
service factories (``pipelines.local`` for the offline stack) supply STT, LLM and TTS.
"""

from pipelines.session import Session, build_session
from pipelines.turn_taking import turn_strategies

__all__ = ["Session", "build_session", "turn_strategies"]
