"""Prometheus metrics of one app instance, in a registry of its own (tests never collide).

``/metrics`` renders :meth:`Metrics.render`. The session runtime reports what it measures
through :meth:`Metrics.observe_turn` (each completed turn) and :meth:`Metrics.error`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""Content type of the text exposition format."""

SPAWN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0)
TTFB_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    """The service's metrics.

    Attributes:
        registry: The registry ``/metrics`` exposes (one per app).
        active_sessions: ``voxtutor_active_sessions``, read from the supervisor at scrape time.
        spawn_to_ready: ``voxtutor_spawn_to_ready_seconds``: spawn call until ready for an offer.
        voice_to_voice: ``voxtutor_voice_to_voice_seconds``: learner stops → bot audio starts.
        ttfb: ``voxtutor_ttfb_seconds{service}``: time to first byte of stt, llm, tts.
        errors: ``voxtutor_errors_total{kind}``.

    An API replica of a scaled-out deployment (:meth:`track_hosts`) also exposes, per
    registered session host, ``voxtutor_host_active_sessions{host}``,
    ``voxtutor_host_max_sessions{host}``, ``voxtutor_host_free_slots{host,kind}``,
    ``voxtutor_host_load{host}`` (1-minute load per core) and ``voxtutor_host_draining{host}``,
    the numbers an autoscaler (KEDA, HPA on external metrics) scales hosts on.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._active: Callable[[], int] = lambda: 0
        self.active_sessions = Gauge(
            "voxtutor_active_sessions",
            "Session processes currently running.",
            registry=self.registry,
        )
        self.active_sessions.set_function(lambda: float(self._active()))
        self.spawn_to_ready = Histogram(
            "voxtutor_spawn_to_ready_seconds",
            "Seconds from spawning a session process until it is ready for an offer.",
            buckets=SPAWN_BUCKETS,
            registry=self.registry,
        )
        self.voice_to_voice = Histogram(
            "voxtutor_voice_to_voice_seconds",
            "Voice-to-voice latency of bot turns: the learner stops speaking → bot audio.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttfb = Histogram(
            "voxtutor_ttfb_seconds",
            "Time to first byte per service (stt, llm, tts).",
            ["service"],
            buckets=TTFB_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "voxtutor_errors_total",
            "Errors by kind (internal, database, spawn_failed, capacity, bad_offer, ...).",
            ["kind"],
            registry=self.registry,
        )

    def track_active(self, count: Callable[[], int]) -> None:
        """Read ``voxtutor_active_sessions`` from ``count`` (e.g. the supervisor) when scraped."""
        self._active = count

    def track_hosts(self, hosts: Callable[[], list[Any]]) -> None:
        """Expose the session hosts ``hosts()`` returns at scrape time.

        Args:
            hosts: Returns the registry's records (``runtime.cluster.registry.HostRecord``:
                ``host_id``, ``active``, ``max_sessions``, ``free``, ``load``, ``draining``).
        """
        self.registry.register(_HostCollector(hosts))

    def observe_spawn(self, seconds: float) -> None:
        """Record how long a session process took to become ready."""
        self.spawn_to_ready.observe(max(0.0, seconds))

    def observe_turn(self, turn: Mapping[str, Any] | Any) -> None:
        """Record a completed turn's voice-to-voice latency and TTFBs (bot turns only).

        Args:
            turn: A ``TurnRecord``, its ``to_dict()`` or a ``TurnInfo.to_dict()``: reads
                ``role``, ``latency_ms`` and ``ttfb_ms`` (``{service: ms}``); learner turns and
                missing values are ignored.
        """
        if isinstance(turn, Mapping):
            data: Mapping[str, Any] = turn
        elif dataclasses.is_dataclass(turn) and not isinstance(turn, type):
            data = dataclasses.asdict(turn)
        else:
            return
        if data.get("role") != "bot":
            return
        latency = data.get("latency_ms")
        if isinstance(latency, int | float) and not isinstance(latency, bool) and latency >= 0:
            self.voice_to_voice.observe(latency / 1000)
        ttfb = data.get("ttfb_ms") or {}
        if isinstance(ttfb, Mapping):
            for service, ms in ttfb.items():
                if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
                    self.ttfb.labels(service=str(service)).observe(ms / 1000)

    def error(self, kind: str) -> None:
        """Count one error of ``kind``."""
        self.errors.labels(kind=kind).inc()

    def render(self) -> bytes:
        """Return the registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class _HostCollector(Collector):
    """Per-host gauges read from the registry when ``/metrics`` is scraped."""

    def __init__(self, hosts: Callable[[], list[Any]]):
        self._hosts = hosts

    def describe(self) -> list[GaugeMetricFamily]:
        """No fixed description: the hosts change."""
        return []

    def collect(self) -> list[GaugeMetricFamily]:
        """One sample per host (and per spare kind for free slots)."""
        active = GaugeMetricFamily(
            "voxtutor_host_active_sessions", "Sessions a host runs now.", labels=["host"]
        )
        most = GaugeMetricFamily(
            "voxtutor_host_max_sessions", "Sessions a host runs at most.", labels=["host"]
        )
        free = GaugeMetricFamily(
            "voxtutor_host_free_slots",
            "Sessions a host would take now, per spare kind.",
            labels=["host", "kind"],
        )
        load = GaugeMetricFamily(
            "voxtutor_host_load", "A host's 1-minute load average per CPU core.", labels=["host"]
        )
        draining = GaugeMetricFamily(
            "voxtutor_host_draining", "1 while a host drains.", labels=["host"]
        )
        for h in self._hosts():
            active.add_metric([h.host_id], h.active)
            most.add_metric([h.host_id], h.max_sessions)
            load.add_metric([h.host_id], h.load)
            draining.add_metric([h.host_id], float(h.draining))
            for kind, n in sorted(h.free.items()):
                free.add_metric([h.host_id, kind], n)
        return [active, most, free, load, draining]
