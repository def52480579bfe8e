"""Tallied metrics render exactly what prometheus' own updates would."""

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gyre.serve._metrics import _LATENCY_BUCKETS_S, ServerMetrics

# On a bucket bound, between bounds, below the first and past the last.
SECONDS = [0.001, 0.0015, 0.0001, 7.5, 0.001, 0.3]


def _lines(text: bytes, prefix: str) -> list[str]:
    return [line for line in text.decode().splitlines() if line.startswith(prefix)]


def test_tallied_latencies_render_as_prometheus_observations() -> None:
    metrics = ServerMetrics()
    for seconds in SECONDS:
        metrics.observe_request("m", "1", "v2", 200, seconds)
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "gyre_request_duration_seconds",
        "reference",
        ["model", "version", "protocol"],
        buckets=_LATENCY_BUCKETS_S,
        registry=reference_registry,
    )
    for seconds in SECONDS:
        reference.labels("m", "1", "v2").observe(seconds)

    rendered = metrics.render()
    prefix = "gyre_request_duration_seconds_"
    expected = generate_latest(reference_registry)
    assert _lines(rendered, prefix + "bucket") == _lines(expected, prefix + "bucket")
    assert _lines(rendered, prefix + "count") == _lines(expected, prefix + "count")
    assert _lines(rendered, prefix + "sum") == _lines(expected, prefix + "sum")
    assert (
        'gyre_requests_total{consumer="",model="m",protocol="v2",status="200",version="1"} 6.0'
        in rendered.decode()
    )


def test_a_flush_adds_only_what_came_since_the_last() -> None:
    metrics = ServerMetrics()
    observe = metrics.batch_observer("m", "1")
    observe(3)
    metrics.prediction("m", default=False)
    metrics.flush()
    observe(40)
    metrics.prediction("m", default=True)
    text = metrics.render().decode()
    assert 'gyre_batch_size_rows_count{model="m",version="1"} 2.0' in text
    assert 'gyre_batch_size_rows_sum{model="m",version="1"} 43.0' in text
    assert 'gyre_batch_size_rows_bucket{le="4.0",model="m",version="1"} 1.0' in text
    assert 'gyre_predictions_total{default="false",model="m"} 1.0' in text
    assert 'gyre_default_prediction_ratio{model="m"} 0.5' in text


def test_version_tallies_reach_the_counter_of_each_statistic() -> None:
    from gyre.serve.protocols._triton import model_stats

    metrics = ServerMetrics()
    tally = metrics.version_tally("m", 3)
    assert metrics.version_tally("m", 3) is tally
    # Two requests of 5 rows: waits summing 1 s; merging 2 s, model 3 s, answering 4 s.
    tally.executed(2, 5, 1.0, 2.0, 3.0, 4.0)
    tally.request(True, 10.0)
    tally.request(False, 20.0)
    metrics.cache_lookup("m", True, 3, 0.5)
    metrics.cache_lookup("m", False, 3, 0.25)
    (stats,) = model_stats(metrics.families(), [("m", 3)])["model_stats"]
    assert (stats["inference_count"], stats["execution_count"]) == (5, 1)
    seconds = {stat: (v["count"], v["ns"] / 1e9) for stat, v in stats["inference_stats"].items()}
    assert seconds == {
        "success": (1, 10.0), "fail": (1, 20.0), "queue": (2, 1.0),
        "compute_input": (2, 4.0), "compute_infer": (2, 6.0), "compute_output": (2, 8.0),
        "cache_hit": (1, 0.5), "cache_miss": (1, 0.25),
    }  # fmt: skip
    assert stats["last_inference"] > 0
    # Flushed once: a second read adds nothing.
    (again,) = model_stats(metrics.families(), [("m", 3)])["model_stats"]
    assert again == stats
