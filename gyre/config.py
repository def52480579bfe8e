"""The one typed, frozen configuration object, built once at the entry point.

Sources, later ones winning: built-in defaults, then the TOML file (`--config`, else
`GYRE_CONFIG`, else `./gyre.toml` when it exists), then explicit overrides from the command
line. This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gyre.errors import ConfigError

DEFAULT_HOME = ".gyre"
DEFAULT_CONFIG_FILE = "gyre.toml"


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    """Settings of the model registry."""

    parity_tolerance: float = 1e-4
    parity_max_rows: int = 1000


@dataclasses.dataclass(frozen=True)
class ModelServeConfig:
    """Per-model serving settings; `[serve.models.NAME]` overrides the server-wide ones."""

    max_batch_size: int = 64
    max_batch_delay_ms: float = 0.0


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Settings of `gyre serve`."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 16 * 1024 * 1024
    reload_interval_ms: int = 500
    default_model: str | None = None
    batching: ModelServeConfig = ModelServeConfig()
    models: Mapping[str, ModelServeConfig] = dataclasses.field(default_factory=dict)
    # A batch whose measured inference time is under this runs on the event loop itself;
    # slower ones run on a worker thread (onnxruntime releases the GIL there).
    inline_inference_max_us: float = 300.0
    inference_threads: int = 1
    onnx_intra_op_threads: int = 1
    shutdown_timeout_s: float = 30.0

    def for_model(self, name: str) -> ModelServeConfig:
        return self.models.get(name, self.batching)


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration. Build it with `load_config`."""

    home: Path
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()


def _section(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} in [{where}]; "
            f"known settings are: {', '.join(sorted(known))}"
        )
    defaults = cls()
    values: dict[str, Any] = {}
    for name, value in data.items():
        expected = type(getattr(defaults, name))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if getattr(defaults, name) is None:
            ok = isinstance(value, str)
        if not ok:
            raise ConfigError(
                f"[{where}] {name} = {value!r} has the wrong type; expected {expected.__name__}"
            )
        values[name] = value
    return cls(**values)


def _serve_section(data: Mapping[str, Any]) -> ServeConfig:
    data = dict(data)
    models_data = data.pop("models", {})
    batching = _section(ModelServeConfig, data.pop("batching", {}), "serve.batching")
    serve: ServeConfig = _section(ServeConfig, data, "serve")
    models = {
        name: _section(
            ModelServeConfig,
            {**dataclasses.asdict(batching), **values},
            f"serve.models.{name}",
        )
        for name, values in models_data.items()
    }
    return dataclasses.replace(serve, batching=batching, models=models)


def load_config(
    home: str | Path | None = None,
    config_file: str | Path | None = None,
    serve_overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from defaults, the TOML file and explicit overrides."""
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
    unknown = sorted(set(data) - {"home", "registry", "serve"})
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(unknown)} in {path}; known: home, registry, serve"
        )
    resolved_home = Path(home or os.environ.get("GYRE_HOME") or data.get("home") or DEFAULT_HOME)
    serve = _serve_section(data.get("serve", {}))
    if serve_overrides:
        serve = dataclasses.replace(
            serve, **{k: v for k, v in serve_overrides.items() if v is not None}
        )
    return Config(
        home=resolved_home.expanduser().resolve(),
        registry=_section(RegistryConfig, data.get("registry", {}), "registry"),
        serve=serve,
    )
