"""Benchmarks: voice-to-voice latency on the local stack, framework overhead with fakes."""
