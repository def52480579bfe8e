"""Prometheus metrics of the server, in a registry of their own (no global state).

With several server processes, prometheus_client's multiprocess mode keeps each
process's counters and histograms in files under one folder, and `/metrics` on any
process answers their sum. Ratios (default predictions, cache hits) are derived from the
summed counters when rendering, so they are right in both modes.

The per-request metrics (requests, latency, answers, batch sizes) are tallied in plain
Python on the event loop and added to prometheus' values in bulk by `flush`: every
prometheus update takes a lock, and with several processes also writes to a file, which
cost about 5 us a request. `render` flushes first; with several processes the server also
flushes every 100 ms, so a scrape may miss the other processes' last 100 ms.

Triton's per-version inference statistics (`GET /v2/models/{m}/stats`) are kept here too,
as counters like every other: `VersionTally` adds to them, and `families` reads them back,
summed over every process of the server, as `/metrics` does.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_ABS_DIFF_BUCKETS = (1e-9, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
_REL_DIFF_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

# Triton's `inference_stats` durations, in its order (see protocols/_triton.py).
INFERENCE_STATS = (
    "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
    "cache_hit", "cache_miss",
)  # fmt: skip
# A VersionTally's sums: rows, executions, then per statistic its count, then its seconds.
_COUNT_SLOT = {stat: 2 + i for i, stat in enumerate(INFERENCE_STATS)}
_SECONDS_SLOT = {stat: 2 + len(INFERENCE_STATS) + i for i, stat in enumerate(INFERENCE_STATS)}


class _Families:
    """What `generate_latest` renders: the collected families plus derived ratios."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
        yield _ratio(
            self._families,
            "gyre_predictions",
            "default",
            ("true", "false"),
            "gyre_default_prediction_ratio",
            "Share of a model's answers that were its default prediction",
        )
        yield _ratio(
            self._families,
            "gyre_cache_lookups",
            "result",
            ("hit", "miss"),
            "gyre_cache_hit_ratio",
            "Share of prediction cache lookups that hit",
        )


def _ratio(
    families: list[Metric], source: str, label: str, values: tuple[str, str], name: str, doc: str
) -> GaugeMetricFamily:
    counts: dict[str, list[float]] = {}
    for family in families:
        if family.name != source:
            continue
        for sample in family.samples:
            if sample.name != f"{source}_total":
                continue
            model = sample.labels["model"]
            slot = counts.setdefault(model, [0.0, 0.0])
            slot[0 if sample.labels[label] == values[0] else 1] += sample.value
    gauge = GaugeMetricFamily(name, doc, labels=["model"])
    for model, (part, rest) in sorted(counts.items()):
        gauge.add_metric([model], part / (part + rest) if part + rest else 0.0)
    return gauge


class ServerMetrics:
    """Every metric of `gyre serve`; label children are cached off the hot path."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gyre_requests",
            "Requests answered, by model, version, protocol, status and consumer",
            ["model", "version", "protocol", "status", "consumer"],
            registry=r,
        )
        self.latency = Histogram(
            "gyre_request_duration_seconds",
            "Time from a request's arrival to its answer",
            ["model", "version", "protocol"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_rows = Histogram(
            "gyre_batch_size_rows",
            "Rows per inference call (after merging requests)",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "gyre_queue_depth",
            "Requests waiting for a batch (sampled every reload interval)",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.load_events = Counter(
            "gyre_model_load_events",
            "Model version loads, unloads and failed loads",
            ["model", "version", "event"],
            registry=r,
        )
        self.predictions = Counter(
            "gyre_predictions", "Answers by whether the default answered", ["model", "default"],
            registry=r,
        )  # fmt: skip
        self.cache_lookups = Counter(
            "gyre_cache_lookups", "Prediction cache lookups by result", ["model", "result"],
            registry=r,
        )  # fmt: skip
        self.shadow_results = Counter(
            "gyre_shadow_comparisons", "Shadow answers compared with the primary's",
            ["model", "result"], registry=r,
        )  # fmt: skip
        self.shadow_abs_diff = Histogram(
            "gyre_shadow_abs_diff",
            "Largest absolute difference of a shadow's continuous outputs from the primary's, "
            "per compared request",
            ["model"], buckets=_ABS_DIFF_BUCKETS, registry=r,
        )  # fmt: skip
        self.shadow_rel_diff = Histogram(
            "gyre_shadow_rel_diff",
            "Largest relative difference |a - b| / max(|a|, |b|) of a shadow's continuous "
            "outputs from the primary's, per compared request",
            ["model"], buckets=_REL_DIFF_BUCKETS, registry=r,
        )  # fmt: skip
        self.shed = Counter(
            "gyre_shed_requests", "Requests refused by admission control (503)", ["model"],
            registry=r,
        )  # fmt: skip
        self.prediction_log_dropped = Counter(
            "gyre_prediction_log_dropped",
            "Prediction log records dropped, by why: `full` (the records waiting to be "
            "written held prediction_log_buffer_bytes) or `error` (the write failed)",
            ["model", "reason"], registry=r,
        )  # fmt: skip
        self.worker_restarts = Counter(
            "gyre_worker_restarts", "Python model workers restarted after a crash or a hang",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.feature_vectors = Counter(
            "gyre_feature_vectors", "Feature vectors built from an entity, by view", ["view"],
            registry=r,
        )  # fmt: skip
        self.feature_lookup = Histogram(
            "gyre_feature_lookup_seconds",
            "Time to build an entity request's vectors (following the fact log first)",
            ["view"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.feature_log_position = Gauge(
            "gyre_feature_log_position",
            "Fact-log position the online features have applied (the least over processes)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.broken_entries = Gauge(
            "gyre_registry_broken_entries",
            "Stored registry entries the server cannot use (1) and ignores until they are "
            "set again, by model and entry (e.g. `policy`); the log says why",
            ["model", "entry"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.inference_stat = Counter(
            "gyre_inference_stat",
            "Per version, as Triton's inference statistics: requests that succeeded or failed, "
            "and per request its queueing, input, model and output steps, cache hits and misses",
            ["model", "version", "stat"],
            registry=r,
        )
        self.inference_stat_seconds = Counter(
            "gyre_inference_stat_seconds",
            "Cumulative time of each gyre_inference_stat (a batch's steps count for each of "
            "its requests)",
            ["model", "version", "stat"],
            registry=r,
        )
        self.inferences = Counter(
            "gyre_inferences", "Rows the model computed (cache hits and defaults not counted)",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.executions = Counter(
            "gyre_executions", "Model executions that succeeded (one per batch)",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.last_inference = Gauge(
            "gyre_last_inference_timestamp_seconds",
            "When the version last computed a batch (seconds since the epoch)",
            ["model", "version"],
            registry=r,
            multiprocess_mode="max",
        )
        self._tallies: dict[tuple[str, int], VersionTally] = {}
        self._broken: set[tuple[str, str]] = set()
        self._children: dict[tuple[str, ...], Any] = {}
        # Updates not yet added to prometheus' values: increments per counter child, and
        # per histogram child its sum and per-bucket counts.
        self._counted: dict[Any, float] = {}
        self._observed: dict[Any, list[float]] = {}

    def _count(self, child: Any) -> None:
        counted = self._counted
        counted[child] = counted.get(child, 0.0) + 1.0

    def _observe(self, child: Any, value: float) -> None:
        tally = self._observed.get(child)
        if tally is None:
            tally = self._observed[child] = [0.0] * (1 + len(child._upper_bounds))
        tally[0] += value
        # prometheus' buckets: the first upper bound that is >= the value
        tally[1 + bisect_left(child._upper_bounds, value)] += 1.0

    def flush(self) -> None:
        """Add what was tallied since the last flush to the prometheus values.

        A histogram child's `_sum`, `_buckets` and `_upper_bounds` are prometheus_client's
        own fields (its version is pinned); tests/serve/test_metrics.py checks the result
        against prometheus' own `observe`."""
        counted, self._counted = self._counted, {}
        observed, self._observed = self._observed, {}
        for child, amount in counted.items():
            child.inc(amount)
        # A copy: versions are loaded (and their tallies made) on the loader thread.
        for tally in tuple(self._tallies.values()):
            tally.flush()
        for child, (total, *buckets) in observed.items():
            child._sum.inc(total)
            for value, count in zip(child._buckets, buckets, strict=True):
                if count:
                    value.inc(count)

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
        self._count(child[0])
        self._observe(child[1], seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def batch_observer(self, model: str, version: str) -> Callable[[int], None]:
        child = self.batch_rows.labels(model, version)
        return lambda rows: self._observe(child, rows)

    def set_queue_depths(self, depths: Iterable[tuple[str, str, int]]) -> None:
        for model, version, depth in depths:
            self._child(self.queue_depth, model, version).set(depth)

    def set_broken_entries(self, broken: Iterable[tuple[str, str]]) -> None:
        """Mark these (model, entry) pairs broken, and those marked before and now fixed not."""
        now = set(broken)
        for model, entry in now | self._broken:
            self._child(self.broken_entries, model, entry).set(1 if (model, entry) in now else 0)
        self._broken = now

    def load_event(self, model: str, version: int, event: str) -> None:
        self.load_events.labels(model, str(version), event).inc()

    def prediction(self, model: str, *, default: bool) -> None:
        self._count(self._child(self.predictions, model, "true" if default else "false"))

    def cache_lookup(
        self, model: str, hit: bool, version: int | None = None, seconds: float = 0.0
    ) -> None:
        self._child(self.cache_lookups, model, "hit" if hit else "miss").inc()
        if version is not None:
            self.version_tally(model, version).step("cache_hit" if hit else "cache_miss", seconds)

    def version_tally(self, model: str, version: int) -> VersionTally:
        """What this process measures of one version for its inference statistics."""
        tally = self._tallies.get((model, version))
        if tally is None:
            tally = self._tallies[(model, version)] = VersionTally(self, model, str(version))
        return tally

    def shadow(self, model: str, result: str) -> None:
        self._child(self.shadow_results, model, result).inc()

    def shadow_differences(
        self, model: str, max_abs_diff: float | None, max_rel_diff: float | None
    ) -> None:
        if max_abs_diff is not None and max_rel_diff is not None:
            self._child(self.shadow_abs_diff, model).observe(max_abs_diff)
            self._child(self.shadow_rel_diff, model).observe(max_rel_diff)

    def prediction_log_drop(self, model: str, records: int, reason: str) -> None:
        """Count records the prediction log dropped (on the event loop's thread)."""
        counted = self._counted
        child = self._child(self.prediction_log_dropped, model, reason)
        counted[child] = counted.get(child, 0.0) + records

    def worker_restart(self, model: str, version: int) -> None:
        self.worker_restarts.labels(model, str(version)).inc()

    def features_built(self, view: str, vectors: int, seconds: float, position: int) -> None:
        self._child(self.feature_vectors, view).inc(vectors)
        self._child(self.feature_lookup, view).observe(seconds)
        self.feature_log_position.set(position)

    def shed_request(self, model: str) -> None:
        self._child(self.shed, model).inc()

    def families(self) -> list[Metric]:
        """Every metric as collected now: with several processes, summed over all of them
        (the others' values as of their last flush, at most 100 ms old)."""
        self.flush()
        if self.multiprocess_dir is not None:
            summed = CollectorRegistry()
            MultiProcessCollector(summed, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return list(summed.collect())
        return list(self.registry.collect())

    def render(self) -> bytes:
        return generate_latest(_Families(self.families()))  # type: ignore[arg-type,unused-ignore]


class VersionTally:
    """One version's inference statistics as this process measures them: plain sums,
    added to the counters at the next flush (one batch costs a few float additions)."""

    __slots__ = ("_children", "_last", "_last_child", "_values")

    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        self._children = [
            metrics.inferences.labels(model, version),
            metrics.executions.labels(model, version),
            *(metrics.inference_stat.labels(model, version, s) for s in INFERENCE_STATS),
            *(metrics.inference_stat_seconds.labels(model, version, s) for s in INFERENCE_STATS),
        ]
        self._values = [0.0] * len(self._children)
        self._last_child = metrics.last_inference.labels(model, version)
        self._last = 0.0  # when this process last computed a batch; 0: not since the flush

    def step(self, stat: str, seconds: float) -> None:
        values = self._values
        values[_COUNT_SLOT[stat]] += 1.0
        values[_SECONDS_SLOT[stat]] += seconds

    def request(self, ok: bool, seconds: float) -> None:
        """An inference request answered: with success (2xx) or not, after `seconds`."""
        self.step("success" if ok else "fail", seconds)

    def executed(
        self,
        requests: int,
        rows: int,
        queue_s: float,
        input_s: float,
        infer_s: float,
        output_s: float,
    ) -> None:
        """A batch of `requests` (`rows` in all) computed: `queue_s` is the sum of its
        requests' waits; the other steps were shared, and count for each request."""
        v = self._values
        v[0] += rows
        v[1] += 1.0
        # The counts (4-7) and seconds (12-15) of queue, compute_input, compute_infer and
        # compute_output, written out: this runs once per batch.
        v[4] += requests
        v[5] += requests
        v[6] += requests
        v[7] += requests
        v[12] += queue_s
        v[13] += input_s * requests
        v[14] += infer_s * requests
        v[15] += output_s * requests
        self._last = time.time()

    def flush(self) -> None:
        values = self._values
        for i, amount in enumerate(values):
            if amount:
                self._children[i].inc(amount)
                values[i] = 0.0
        if self._last:
            self._last_child.set(self._last)
            self._last = 0.0
