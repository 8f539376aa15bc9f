"""Provider failover, one group per role (STT, LLM, TTS).

The builders are in :mod:`processors.failover.groups`; the rest are their parts.
"""
