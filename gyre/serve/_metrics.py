"""Prometheus metrics of the server, in a registry of their own (no global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _QueueCollector(Collector):
    """Reads queue depths at scrape time, so the request path pays nothing for them."""

    def __init__(self, depths: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self._depths = depths

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(
            "gyre_queue_depth", "Requests waiting for a batch", labels=["model", "version"]
        )
        for model, version, depth in self._depths():
            family.add_metric([model, version], depth)
        yield family


class ServerMetrics:
    """Every metric of `gyre serve`; label children are cached off the hot path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gyre_requests",
            "Inference and metadata requests answered",
            ["model", "version", "protocol", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gyre_request_duration_seconds",
            "Time from a request's arrival to its answer",
            ["model", "version", "protocol"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "gyre_batch_size_rows",
            "Rows per inference call (after merging requests)",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.load_events = Counter(
            "gyre_model_load_events",
            "Model version loads, unloads and failed loads",
            ["model", "version", "event"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def watch_queues(self, depths: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self.registry.register(_QueueCollector(depths))

    def observe_request(
        self, model: str, version: str, protocol: str, status: int, seconds: float
    ) -> None:
        key = (model, version, protocol, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self.requests.labels(model, version, protocol, str(status)),
                self.latency.labels(model, version, protocol),
            )
        child[0].inc()
        child[1].observe(seconds)

    def batch_observer(self, model: str, version: str) -> Callable[[int], None]:
        return self.batch_rows.labels(model, version).observe

    def load_event(self, model: str, version: int, event: str) -> None:
        self.load_events.labels(model, str(version), event).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
