from pathlib import Path

import pytest

from gyre.config import ModelServeConfig, load_config
from gyre.errors import ConfigError


def test_defaults_use_dot_gyre_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GYRE_HOME", raising=False)
    monkeypatch.delenv("GYRE_CONFIG", raising=False)
    config = load_config()
    assert config.home == tmp_path / ".gyre"
    assert config.serve.port == 8000
    assert config.registry.parity_tolerance == 1e-4


def test_home_option_beats_environment_which_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GYRE_HOME", str(tmp_path / "env"))
    assert load_config().home == tmp_path / "env"
    assert load_config(home=tmp_path / "flag").home == tmp_path / "flag"


def test_toml_sets_typed_values_and_per_model_overrides(tmp_path: Path) -> None:
    path = tmp_path / "gyre.toml"
    path.write_text(
        "[serve]\nport = 9000\n[serve.model_defaults]\nmax_batch_size = 8\n"
        "[serve.models.iris]\nmax_batch_delay_ms = 2\n[registry]\nparity_tolerance = 0.001\n"
    )
    config = load_config(home=tmp_path, config_file=path)
    assert config.serve.port == 9000
    assert config.serve.for_model("other") == ModelServeConfig(max_batch_size=8)
    assert config.serve.for_model("iris") == ModelServeConfig(
        max_batch_size=8, max_batch_delay_ms=2.0
    )
    assert config.registry.parity_tolerance == 0.001


def test_unknown_setting_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "gyre.toml"
    path.write_text("[serve]\nprot = 9000\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) prot in \[serve\].*port"):
        load_config(home=tmp_path, config_file=path)


def test_wrong_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gyre.toml"
    path.write_text('[serve]\nport = "eighty"\n')
    with pytest.raises(ConfigError, match="port = 'eighty' has the wrong type; expected int"):
        load_config(home=tmp_path, config_file=path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[serve]\nworkers = -1", r"\[serve\] workers = -1 is out of range: must be >= 0"),
        ("[serve]\nport = 99999", r"port = 99999 is out of range: must be >= 0 and <= 65535"),
        ("[serve]\ngrpc_port = -1", r"grpc_port = -1 is out of range: must be >= 0 and <= 65535"),
        ("[serve]\nport = 9000\ngrpc_port = 9000", "grpc_port = 9000 is also the HTTP port"),
        ("[serve]\nheader_timeout_s = 0", r"header_timeout_s = 0.0 is out of range: must be > 0"),
        ("[serve]\ncache_bytes = -1", "cache_bytes = -1 is out of range"),
        ("[serve.model_defaults]\nlatency_slo_ms = nan", "latency_slo_ms = nan is out of range"),
        (
            "[serve.models.iris]\nbatch_backoff_factor = 1.5",
            r"\[serve.models.iris\] batch_backoff_factor = 1.5 .* must be > 0 and < 1",
        ),
        ("[registry]\nparity_max_rows = 0", r"\[registry\] parity_max_rows = 0 is out of range"),
        ("[features]\nfollow_interval_ms = -5", "follow_interval_ms = -5.0 is out of range"),
        ("[serve]\nworker_restarts_per_min = 0", "worker_restarts_per_min = 0 is out of range"),
        ("[serve]\nworker_start_backoff_ms = -1", "worker_start_backoff_ms = -1.0 is out of"),
        (
            "[serve.models.iris]\nprediction_log_sample = 1.5",
            r"\[serve.models.iris\] prediction_log_sample = 1.5 .* must be >= 0 and <= 1",
        ),
        ("[serve.model_defaults]\nprediction_log_sample = -0.1", "prediction_log_sample = -0.1"),
        ("[serve]\nprediction_log_max_records = 0", "prediction_log_max_records = 0 is out"),
        ("[serve]\nprediction_log_buffer_bytes = 0", "prediction_log_buffer_bytes = 0 is out of"),
    ],
)
def test_numbers_out_of_range_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "gyre.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(home=tmp_path, config_file=path)


def test_command_line_overrides_are_checked_too(tmp_path: Path) -> None:
    # `gyre serve --workers -1` once started a supervisor of no workers that never returned.
    with pytest.raises(ConfigError, match=r"\[serve\] workers = -1 is out of range"):
        load_config(home=tmp_path, serve_overrides={"workers": -1})
    with pytest.raises(ConfigError, match="port = 70000 is out of range"):
        load_config(home=tmp_path, serve_overrides={"port": 70000})
    with pytest.raises(ConfigError, match="grpc_port = 8000 is also the HTTP port"):
        load_config(home=tmp_path, serve_overrides={"grpc_port": 8000})
    assert load_config(home=tmp_path, serve_overrides={"grpc_port": 0}).serve.grpc_port == 0


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[serve\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(home=tmp_path, config_file=bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(home=tmp_path, config_file=tmp_path / "absent.toml")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(home=tmp_path)
    with pytest.raises(AttributeError):
        config.serve.port = 1  # type: ignore[misc]


def test_the_body_budget_defaults_to_four_bodies_and_must_hold_one(tmp_path: Path) -> None:
    path = tmp_path / "gyre.toml"
    path.write_text("[serve]\nmax_body_bytes = 1000\n")
    assert load_config(home=tmp_path, config_file=path).serve.inflight_body_budget_bytes == 4000
    path.write_text("[serve]\nmax_body_bytes = 1000\nmax_inflight_body_bytes = 1500\n")
    assert load_config(home=tmp_path, config_file=path).serve.inflight_body_budget_bytes == 1500
    path.write_text("[serve]\nmax_body_bytes = 1000\nmax_inflight_body_bytes = 999\n")
    with pytest.raises(ConfigError, match="max_inflight_body_bytes = 999 is less than max_body"):
        load_config(home=tmp_path, config_file=path)
    path.write_text("[serve]\nmax_inflight_body_bytes = 0\n")
    with pytest.raises(ConfigError, match="max_inflight_body_bytes = 0 is out of range"):
        load_config(home=tmp_path, config_file=path)


def test_the_control_plane_has_its_own_section_and_overrides(tmp_path: Path) -> None:
    assert load_config(home=tmp_path).control.url == "http://127.0.0.1:8002"
    path = tmp_path / "gyre.toml"
    path.write_text('[control]\nhost = "::1"\nport = 9002\n')
    config = load_config(home=tmp_path, config_file=path)
    assert config.control.url == "http://[::1]:9002"
    moved = load_config(home=tmp_path, config_file=path, control_overrides={"port": 9100})
    assert moved.control.port == 9100 and moved.control.host == "::1"
    path.write_text("[control]\nprot = 9002\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) prot in \[control\]"):
        load_config(home=tmp_path, config_file=path)
    with pytest.raises(ConfigError, match=r"\[control\] port = 70000 is out of range"):
        load_config(home=tmp_path, control_overrides={"port": 70000})
