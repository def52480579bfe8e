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


class _GaugeCollector(Collector):
    """A gauge read at scrape time, so the request path pays nothing for it."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        values: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = labels
        self._values = values

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, value in self._values():
            family.add_metric(list(labels), value)
        yield family


class ServerMetrics:
    """Every metric of `gyre serve`; label children are cached off the hot path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gyre_requests",
            "Inference and metadata requests answered",
            ["model", "version", "protocol", "status", "consumer"],
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
        self.predictions = Counter(
            "gyre_predictions",
            "Answers computed or defaulted, by whether the default answered",
            ["model", "default"],
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "gyre_cache_lookups",
            "Prediction cache lookups by result",
            ["model", "result"],
            registry=self.registry,
        )
        self.shadow_results = Counter(
            "gyre_shadow_comparisons",
            "Shadow answers compared with the primary's",
            ["model", "result"],
            registry=self.registry,
        )
        self.shed = Counter(
            "gyre_shed_requests",
            "Requests refused by admission control (503)",
            ["model"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self.gauge(
            "gyre_default_prediction_ratio",
            "Share of a model's answers that were its default prediction",
            ["model"],
            self._default_ratios,
        )
        self.gauge(
            "gyre_cache_hit_ratio", "Share of cache lookups that hit", ["model"], self._hit_ratios
        )

    def gauge(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        values: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        self.registry.register(_GaugeCollector(name, documentation, labels, values))

    def watch_queues(self, depths: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self.gauge(
            "gyre_queue_depth",
            "Requests waiting for a batch",
            ["model", "version"],
            lambda: (((m, v), float(d)) for m, v, d in depths()),
        )

    def _count(self, key: tuple[str, str]) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def _ratios(self, hit: str, miss: str) -> Iterable[tuple[tuple[str, ...], float]]:
        models = {m for (m, kind) in self._counts if kind in (hit, miss)}
        for model in sorted(models):
            hits = self._counts.get((model, hit), 0)
            total = hits + self._counts.get((model, miss), 0)
            yield (model,), hits / total if total else 0.0

    def _default_ratios(self) -> Iterable[tuple[tuple[str, ...], float]]:
        return self._ratios("default", "computed")

    def _hit_ratios(self) -> Iterable[tuple[tuple[str, ...], float]]:
        return self._ratios("hit", "miss")

    def prediction(self, model: str, *, default: bool) -> None:
        self.predictions.labels(model, "true" if default else "false").inc()
        self._count((model, "default" if default else "computed"))

    def cache_lookup(self, model: str, hit: bool) -> None:
        self.cache_lookups.labels(model, "hit" if hit else "miss").inc()
        self._count((model, "hit" if hit else "miss"))

    def shadow(self, model: str, result: str) -> None:
        self.shadow_results.labels(model, result).inc()

    def shed_request(self, model: str) -> None:
        self.shed.labels(model).inc()

    def observe_request(
        self,
        model: str,
        version: str,
        protocol: str,
        status: int,
        seconds: float,
        consumer: str = "",
    ) -> None:
        key = (model, version, protocol, str(status), consumer)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self.requests.labels(model, version, protocol, str(status), consumer),
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
