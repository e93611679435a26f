"""Prometheus metrics for one server (its own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..types import Result


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], device_memory: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.ttft = Histogram("optascan_time_to_first_token_seconds", "Submission to first token",
                              buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.per_token = Histogram("optascan_time_per_output_token_seconds", "Decode time per token after the first",
                                   buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64),
                                   registry=self.registry)
        self.tokens = Counter("optascan_tokens", "Tokens processed", ["kind"], registry=self.registry)
        self.requests = Counter("optascan_requests", "Generation requests by outcome", ["outcome"],
                                registry=self.registry)
        self.in_flight = Gauge("optascan_requests_in_flight", "Generations running or queued",
                               registry=self.registry)
        Gauge("optascan_queue_depth", "Requests waiting in model queues",
              registry=self.registry).set_function(queue_depth)
        Gauge("optascan_device_memory_used_bytes", "Memory held by loaded models",
              registry=self.registry).set_function(device_memory)

    def finished(self, result: Result | None, outcome: str) -> None:
        self.requests.labels(outcome).inc()
        if result is None:
            return
        self.tokens.labels("prompt").inc(result.usage.prompt_tokens)
        self.tokens.labels("completion").inc(result.usage.completion_tokens)
        if result.timings.ttft_s is not None:
            self.ttft.observe(result.timings.ttft_s)
        if result.timings.decode_tokens_per_s:
            self.per_token.observe(1.0 / result.timings.decode_tokens_per_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
