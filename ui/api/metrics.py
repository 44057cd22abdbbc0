"""Prometheus metrics of the API: requests and latency per endpoint, time per turn stage, turns, fallbacks,
engine errors, feedback events. Served as text at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from agent.types import Trace

STAGE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("convrec_http_requests", "HTTP requests", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("convrec_http_request_seconds", "HTTP request latency", ["endpoint"],
                                 buckets=STAGE_BUCKETS, registry=self.registry)
        self.stages = Histogram("convrec_turn_stage_seconds", "Time per turn stage", ["stage"],
                                buckets=STAGE_BUCKETS, registry=self.registry)
        self.turns = Counter("convrec_turns", "Chat turns served", registry=self.registry)
        self.fallbacks = Counter("convrec_fallbacks", "Fallbacks taken in turns", ["kind"], registry=self.registry)
        self.engine_errors = Counter("convrec_engine_errors", "Engine errors inside turns", registry=self.registry)
        self.events = Counter("convrec_feedback_events", "Feedback events applied", ["type"],
                              registry=self.registry)
        self.errors = Counter("convrec_errors", "Unexpected errors", ["kind"], registry=self.registry)

    def observe_turn(self, trace: Trace) -> None:
        self.turns.inc()
        for stage, seconds in trace.timings.items():
            self.stages.labels(stage=stage).observe(seconds)
        for note in trace.fallbacks:
            self.fallbacks.labels(kind="explanation" if note.startswith("explanations") else "ranking").inc()
            if "engine error" in note:
                self.engine_errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
