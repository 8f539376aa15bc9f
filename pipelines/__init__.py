"""Pipeline builders: one function assembles a tutoring session from configuration.

``build_session(persona, ..., transport)`` returns a :class:`SessionPipeline` (its Pipecat
``PipelineWorker`` and parts); ``pipelines.providers`` builds each tier link's STT, LLM and
TTS (``pipelines.local`` holds the offline stack's parts).
"""

from pipelines.session import SessionPipeline, build_session
from pipelines.turn_taking import turn_strategies

__all__ = ["SessionPipeline", "build_session", "turn_strategies"]
