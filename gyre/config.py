"""The one typed, frozen configuration object, built once at the entry point.

Sources, later ones winning: built-in defaults, then the TOML file (`--config`, else
`GYRE_CONFIG`, else `./gyre.toml` when it exists), then explicit overrides from the command
line. This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gyre._store_config import StoreConfig as StoreConfig  # part of the config API
from gyre.errors import ConfigError

DEFAULT_HOME = ".gyre"
DEFAULT_CONFIG_FILE = "gyre.toml"


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    """Settings of the model registry."""

    parity_tolerance: float = 1e-4
    parity_max_rows: int = 1000
    # A Python model's `--artifacts DIR` may hold at most this many bytes in all…
    artifacts_max_bytes: int = 4 * 1024**3
    # …and at most this many files.
    artifacts_max_files: int = 10_000


@dataclasses.dataclass(frozen=True)
class ModelServeConfig:
    """Per-model serving settings: `[serve.model_defaults]` for every model,
    `[serve.models.NAME]` to override them for one."""

    max_batch_size: int = 64
    max_batch_delay_ms: float = 0.0
    # Every request must be answered within this; a request may ask for less.
    latency_slo_ms: float = 1000.0
    # Answer for a request that cannot meet its deadline, per output name and per row,
    # e.g. {label = 0, probabilities = [0.5, 0.5]}; without one such requests get 504.
    default_output: Mapping[str, Any] | None = None
    # Learn batch latency and pick the largest batch that meets the earliest deadline;
    # off: always up to max_batch_size.
    adaptive_batching: bool = True
    # On a missed deadline the batch-size cap is multiplied by this (AIMD decrease)…
    batch_backoff_factor: float = 0.5
    # …and on a batch that met its deadline while limited by the cap, it grows by this.
    batch_increase_rows: int = 4
    # Recent (rows, seconds) batch timings the latency model is fitted on.
    latency_samples: int = 64
    # Cache answers by (model, version, exact input bytes) in the shared cache.
    cache: bool = False
    # Python models: a worker that takes longer than this on one batch is killed…
    worker_timeout_ms: float = 10_000.0
    # …and restarted after this backoff, doubling per consecutive failure up to the max.
    worker_backoff_ms: float = 200.0
    worker_backoff_max_ms: float = 10_000.0
    worker_load_timeout_ms: float = 120_000.0
    # A shadow's continuous outputs (floats) agree with the primary's within
    # abs + rel * max(|primary|, |shadow|); discrete outputs (labels) must be equal.
    shadow_abs_tolerance: float = 1e-6
    shadow_rel_tolerance: float = 0.01
    # Share of the model's answered prediction requests written to the prediction log
    # (0: none, 1: every one), each request drawn at random.
    prediction_log_sample: float = 1.0


@dataclasses.dataclass(frozen=True)
class ConsumerConfig:
    """A declared consumer, `[serve.consumers.NAME]`. The key itself is never stored:
    `gyre consumers key` prints a new key and its sha256."""

    key_sha256: str = ""
    # Models this consumer may call; ["*"] for every model.
    models: list[str] = dataclasses.field(default_factory=lambda: ["*"])
    # Requests per second over all processes of one server (shared token buckets, see
    # docs/serving.md); none: unlimited. Each server (port, machine) allows it in full.
    rate_per_s: float | None = None
    # Requests allowed at once on a full bucket; none: rate_per_s (at least 1).
    burst: float | None = None
    # Event types it may ingest (POST /v1/events/TYPE); ["*"] for every type.
    events: list[str] = dataclasses.field(default_factory=list)
    # May move aliases and change traffic policies on the control plane (`gyre control`),
    # and read the server's shadow comparisons.
    admin: bool = False

    def __repr__(self) -> str:  # the hash is not the key, but keep logs free of it anyway
        return (
            f"ConsumerConfig(models={self.models}, rate_per_s={self.rate_per_s}, "
            f"admin={self.admin})"
        )


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Settings of `gyre serve`."""

    host: str = "127.0.0.1"
    port: int = 8000
    # The v2 gRPC service (GRPCInferenceService), on the same host; 0: no gRPC.
    grpc_port: int = 8001
    max_body_bytes: int = 16 * 1024 * 1024
    # Bytes of request bodies one server process reads and holds at once; a request that
    # would go past it gets 503 with Retry-After before its body is read. None: 4 times
    # max_body_bytes. At least max_body_bytes, so that a body of the largest size fits.
    max_inflight_body_bytes: int | None = None
    # The request line and headers of one request; past this: 431 and the connection closes.
    max_header_bytes: int = 64 * 1024
    # A client gets this long for a request's line and headers, counted from the connection
    # or from the head's first bytes; then 408 and the connection closes.
    header_timeout_s: float = 10.0
    # The longest pause between two pieces of a request's body; then 408 and close.
    body_idle_timeout_s: float = 30.0
    reload_interval_ms: int = 500
    default_model: str | None = None
    model_defaults: ModelServeConfig = ModelServeConfig()
    models: Mapping[str, ModelServeConfig] = dataclasses.field(default_factory=dict)
    # A batch whose measured inference time is under this runs on the event loop itself;
    # slower ones run on a worker thread (onnxruntime releases the GIL there).
    inline_inference_max_us: float = 300.0
    inference_threads: int = 1
    onnx_intra_op_threads: int = 1
    shutdown_timeout_s: float = 30.0
    # Bytes of answers the prediction cache may hold, over all models with `cache = true`.
    cache_bytes: int = 64 * 1024 * 1024
    # Backstop for admission control: rows queued per version beyond this are shed.
    max_queue_rows: int = 100_000
    consumers: Mapping[str, ConsumerConfig] = dataclasses.field(default_factory=dict)
    # Serve without consumers on a non-loopback address (everyone may call every model).
    insecure: bool = False
    # Server processes sharing the port (SO_REUSEPORT); 0: one per core.
    workers: int = 0
    # A server process that dies is replaced at once, up to this many times a minute per
    # process slot; past that, its next start waits until the last minute holds fewer.
    worker_restarts_per_min: int = 10
    # After a process that died before it was ready (a failed start), its slot waits this
    # long before the next start, doubling per consecutive failed start up to the max.
    worker_start_backoff_ms: float = 1000.0
    worker_start_backoff_max_ms: float = 60_000.0
    # One JSON log line per request (request id, model, version, status, ms, consumer).
    access_log: bool = False
    # The prediction log keeps this many records, over all models (the oldest go first,
    # a chunk of up to 1000 at a time); each model's `prediction_log_sample` says which
    # requests it records.
    prediction_log_max_records: int = 1_000_000
    # Records waiting to be written hold at most this many bytes (their tensors, about);
    # past it a record is dropped and counted, and the request is never kept waiting.
    prediction_log_buffer_bytes: int = 64 * 1024 * 1024

    def for_model(self, name: str) -> ModelServeConfig:
        return self.models.get(name, self.model_defaults)

    @property
    def inflight_body_budget_bytes(self) -> int:
        """`max_inflight_body_bytes`, or its default of 4 times `max_body_bytes`."""
        if self.max_inflight_body_bytes is None:
            return 4 * self.max_body_bytes
        return self.max_inflight_body_bytes


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    """Settings of `gyre control`: the control plane's HTTP app, where aliases move and
    traffic policies change (the model server only reads them). Its callers are the
    consumers of `[serve.consumers]`; only admin keys may write."""

    host: str = "127.0.0.1"
    port: int = 8002
    # A request's body (a JSON object of a few fields) may hold at most this many bytes.
    max_body_bytes: int = 1024 * 1024

    @property
    def url(self) -> str:
        """Where the control plane answers, as a client writes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class EventTypeConfig:
    """An event type, `[collect.events.NAME]`: typed fields, entity key(s), event time."""

    # field name -> "int" | "float" | "bool" | "string" | "timestamp", "?" suffix: optional
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    entity: list[str] = dataclasses.field(default_factory=list)
    time: str = ""
    id: str | None = None
    # "reject" a record with fields not declared, or "ignore" (drop) them.
    unknown_fields: str = "reject"


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    """Settings of event collection and the fact log."""

    events: Mapping[str, EventTypeConfig] = dataclasses.field(default_factory=dict)
    # Concurrent ingestion calls that arrive within this share one commit (one fsync).
    group_commit_max_wait_ms: float = 2.0


@dataclasses.dataclass(frozen=True)
class FeatureViewConfig:
    """A feature view, `[features.views.NAME]`: aggregations over one event type."""

    # the event type it reads (`[collect.events.NAME]`); its entity key keys the view
    source: str = ""
    # e.g. ["count() over 1h", "mean(amount_usd) over 7d"]
    aggregations: list[str] = dataclasses.field(default_factory=list)
    # derived numeric columns, in order, e.g. {amount_usd = "amount * 1.08"}
    transforms: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # request-time features: int, float, bool (sent with the request), hour_of_day, day_of_week
    request: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """Feature views and the online engine."""

    views: Mapping[str, FeatureViewConfig] = dataclasses.field(default_factory=dict)
    # Log every vector the server builds from an entity (for `gyre features skew`).
    log_served: bool = True
    # Each server process applies newly stored facts to its online state this often (and
    # before every entity lookup, so an acknowledged event always counts).
    follow_interval_ms: float = 100.0
    # Save the online state this often (and at shutdown), so a restart reads the log only
    # from there; 0: never (a restart replays the whole log).
    snapshot_interval_s: float = 300.0


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration. Build it with `load_config`."""

    home: Path
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()
    control: ControlConfig = ControlConfig()
    collect: CollectConfig = CollectConfig()
    features: FeaturesConfig = FeaturesConfig()


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether a TOML value fits a field's type (int is accepted for float)."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, dict if issubclass(origin, Mapping) else origin)
    return isinstance(value, annotation)


# The values numeric settings may take: (lowest, is it allowed, highest, is it allowed);
# None: unbounded on that side. Settings not named here take any value of their type.
_Bounds = tuple[float | None, bool, float | None, bool]
_POSITIVE: _Bounds = (0, False, None, False)
_NON_NEGATIVE: _Bounds = (0, True, None, False)
_BOUNDS: dict[str, _Bounds] = {
    "pool_max_size": (1, True, 1000, True),
    "connect_timeout_s": _POSITIVE,
    "start_timeout_s": _NON_NEGATIVE,
    "statement_timeout_s": _POSITIVE,
    "parity_tolerance": _NON_NEGATIVE,
    "parity_max_rows": _POSITIVE,
    "artifacts_max_bytes": _NON_NEGATIVE,
    "artifacts_max_files": _POSITIVE,
    "port": (0, True, 65535, True),
    "grpc_port": (0, True, 65535, True),
    "workers": _NON_NEGATIVE,
    "worker_restarts_per_min": _POSITIVE,
    "worker_start_backoff_ms": _NON_NEGATIVE,
    "worker_start_backoff_max_ms": _NON_NEGATIVE,
    "max_body_bytes": _POSITIVE,
    "max_inflight_body_bytes": _POSITIVE,
    "max_header_bytes": _POSITIVE,
    "header_timeout_s": _POSITIVE,
    "body_idle_timeout_s": _POSITIVE,
    "reload_interval_ms": _POSITIVE,
    "inline_inference_max_us": _NON_NEGATIVE,
    "inference_threads": _POSITIVE,
    "onnx_intra_op_threads": _NON_NEGATIVE,
    "shutdown_timeout_s": _NON_NEGATIVE,
    "cache_bytes": _NON_NEGATIVE,
    "max_queue_rows": _POSITIVE,
    "max_batch_size": _POSITIVE,
    "max_batch_delay_ms": _NON_NEGATIVE,
    "latency_slo_ms": _POSITIVE,
    "batch_backoff_factor": (0, False, 1, False),
    "batch_increase_rows": _POSITIVE,
    "latency_samples": _POSITIVE,
    "worker_timeout_ms": _POSITIVE,
    "worker_backoff_ms": _NON_NEGATIVE,
    "worker_backoff_max_ms": _NON_NEGATIVE,
    "worker_load_timeout_ms": _POSITIVE,
    "shadow_abs_tolerance": _NON_NEGATIVE,
    "shadow_rel_tolerance": _NON_NEGATIVE,
    "prediction_log_sample": (0, True, 1, True),
    "prediction_log_max_records": _POSITIVE,
    "prediction_log_buffer_bytes": _POSITIVE,
    "rate_per_s": _POSITIVE,
    "burst": _POSITIVE,
    "group_commit_max_wait_ms": _NON_NEGATIVE,
    "follow_interval_ms": _POSITIVE,
    "snapshot_interval_s": _NON_NEGATIVE,
}


def _check_bounds(settings: Any, where: str) -> None:
    """ConfigError naming the first numeric setting of `settings` out of its range."""
    for field in dataclasses.fields(settings):
        bounds = _BOUNDS.get(field.name)
        value = getattr(settings, field.name)
        if bounds is None or value is None:
            continue
        low, low_ok, high, high_ok = bounds
        too_low = low is not None and (value < low if low_ok else value <= low)
        too_high = high is not None and (value > high if high_ok else value >= high)
        if too_low or too_high or value != value:  # value != value: NaN
            wanted = []
            if low is not None:
                wanted.append(f"{'>=' if low_ok else '>'} {low:g}")
            if high is not None:
                wanted.append(f"{'<=' if high_ok else '<'} {high:g}")
            raise ConfigError(
                f"[{where}] {field.name} = {value!r} is out of range: must be "
                + " and ".join(wanted)
            )


def _check_body_budget(serve: ServeConfig) -> None:
    budget = serve.max_inflight_body_bytes
    if budget is not None and budget < serve.max_body_bytes:
        raise ConfigError(
            f"[serve] max_inflight_body_bytes = {budget} is less than max_body_bytes = "
            f"{serve.max_body_bytes}: a body of the largest allowed size could never be read; "
            "raise max_inflight_body_bytes or lower max_body_bytes"
        )


def _check_ports(serve: ServeConfig) -> None:
    if serve.grpc_port != 0 and serve.grpc_port == serve.port:
        raise ConfigError(
            f"[serve] grpc_port = {serve.grpc_port} is also the HTTP port; give gRPC a port of "
            "its own (the default is 8001), or 0 for no gRPC"
        )


def _section(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} in [{where}]; "
            f"known settings are: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, value in data.items():
        if not _accepts(hints[name], value):
            hint = hints[name]
            expected = hint.__name__ if isinstance(hint, type) else str(hint)
            raise ConfigError(
                f"[{where}] {name} = {value!r} has the wrong type; expected {expected}"
            )
        values[name] = float(value) if hints[name] is float else value
    settings = cls(**values)
    _check_bounds(settings, where)
    return settings


def _serve_section(data: Mapping[str, Any]) -> ServeConfig:
    data = dict(data)
    models_data = data.pop("models", {})
    consumers_data = data.pop("consumers", {})
    defaults_data = data.pop("model_defaults", {})
    defaults = _section(ModelServeConfig, defaults_data, "serve.model_defaults")
    serve: ServeConfig = _section(ServeConfig, data, "serve")
    models = {
        name: _section(ModelServeConfig, {**defaults_data, **values}, f"serve.models.{name}")
        for name, values in models_data.items()
    }
    consumers = {name: _consumer(name, values) for name, values in consumers_data.items()}
    return dataclasses.replace(serve, model_defaults=defaults, models=models, consumers=consumers)


def _with_tables(
    section_cls: type[Any], table_cls: type[Any], data: Mapping[str, Any], where: str, key: str
) -> Any:
    """A section whose `key` holds named tables, e.g. [collect] and [collect.events.NAME]."""
    data = dict(data)
    tables = {
        name: _section(table_cls, values, f"{where}.{key}.{name}")
        for name, values in data.pop(key, {}).items()
    }
    return dataclasses.replace(_section(section_cls, data, where), **{key: tables})


def _consumer(name: str, values: Mapping[str, Any]) -> ConsumerConfig:
    consumer: ConsumerConfig = _section(ConsumerConfig, values, f"serve.consumers.{name}")
    digest = consumer.key_sha256.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(
            f"[serve.consumers.{name}] key_sha256 must be the sha256 hex digest of its key; "
            "run `gyre consumers key` to make a key and its digest"
        )
    if not all(isinstance(m, str) for m in consumer.models) or not consumer.models:
        raise ConfigError(f"[serve.consumers.{name}] models must be a list of model names")
    return consumer


def load_config(
    home: str | Path | None = None,
    config_file: str | Path | None = None,
    serve_overrides: Mapping[str, Any] | None = None,
    control_overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from defaults, the TOML file and explicit overrides (of
    `[serve]` and `[control]` settings; None values are left as they are)."""
    path = config_file or os.environ.get("GYRE_CONFIG")
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(
        set(data) - {"home", "store", "registry", "serve", "control", "collect", "features"}
    )
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(unknown)} in {path}; "
            "known: home, store, registry, serve, control, collect, features"
        )
    resolved_home = Path(home or os.environ.get("GYRE_HOME") or data.get("home") or DEFAULT_HOME)
    serve = _serve_section(data.get("serve", {}))
    if serve_overrides:
        serve = dataclasses.replace(
            serve, **{k: v for k, v in serve_overrides.items() if v is not None}
        )
        _check_bounds(serve, "serve")
    _check_body_budget(serve)
    _check_ports(serve)
    store: StoreConfig = _section(StoreConfig, data.get("store", {}), "store")
    url = os.environ.get("GYRE_STORE_URL") or store.url
    if url is not None:
        from gyre._postgres import DatabaseURL

        DatabaseURL.parse(url)  # a malformed URL stops here, with what to write instead
        store = dataclasses.replace(store, url=url)
    control = _section(ControlConfig, data.get("control", {}), "control")
    if control_overrides:
        control = dataclasses.replace(
            control, **{k: v for k, v in control_overrides.items() if v is not None}
        )
        _check_bounds(control, "control")
    return Config(
        home=resolved_home.expanduser().resolve(),
        store=store,
        registry=_section(RegistryConfig, data.get("registry", {}), "registry"),
        collect=_with_tables(
            CollectConfig, EventTypeConfig, data.get("collect", {}), "collect", "events"
        ),
        features=_with_tables(
            FeaturesConfig, FeatureViewConfig, data.get("features", {}), "features", "views"
        ),
        serve=serve,
        control=control,
    )
