"""The `gyre` command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.pipeline import Pipeline


def gyre(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "gyre", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"gyre {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def model_files(tmp_path: Path, iris_classifier: Pipeline, iris: tuple) -> tuple[Path, Path]:
    model = tmp_path / "iris.joblib"
    joblib.dump(iris_classifier, model)
    sample = tmp_path / "rows.npy"
    np.save(sample, iris[0])
    return model, sample


def test_publish_alias_list_show_delete(home: Path, model_files: tuple[Path, Path]) -> None:
    model, sample = model_files
    out = gyre(
        home,
        "registry",
        "publish",
        "iris",
        str(model),
        "--sample",
        str(sample),
        "--alias",
        "champion",
        "--lineage",
        '{"data": "iris-v1"}',
    ).stdout
    assert "published iris version 1" in out
    assert "parity max |diff|" in out
    gyre(home, "registry", "publish", "iris", str(model), "--sample", str(sample))
    assert (
        "iris@champion -> version 2 (was 1)"
        in gyre(home, "registry", "alias", "iris", "champion", "2").stdout
    )
    listing = gyre(home, "registry", "list").stdout
    assert "champion" in listing and "X FP32[N, 4]" in listing
    shown = gyre(home, "registry", "show", "iris:1").stdout
    assert '"data": "iris-v1"' in shown and "output probabilities" in shown
    assert "iris version 2" in gyre(home, "registry", "show", "iris@champion").stdout
    assert "deleted iris version 1" in gyre(home, "registry", "delete", "iris", "1").stdout
    assert "deleted iris@champion" in gyre(home, "registry", "unalias", "iris", "champion").stdout


def test_publish_a_mixed_type_pipeline_from_a_csv_sample_with_string_columns(
    home: Path, tmp_path: Path, mixed_classifier: Pipeline, mixed_table: tuple
) -> None:
    model = tmp_path / "loans.joblib"
    joblib.dump(mixed_classifier, model)
    sample = tmp_path / "rows.csv"
    mixed_table[0].to_csv(sample, index=False)
    out = gyre(home, "registry", "publish", "loans", str(model), "--sample", str(sample)).stdout
    assert "published loans version 1" in out and "parity max |diff|" in out
    listing = gyre(home, "registry", "list").stdout
    assert "city BYTES[N, 1]" in listing and "age INT64[N, 1]" in listing
    assert "income FP32[N, 1]" in listing


def test_errors_are_one_clear_line_and_exit_1(home: Path, model_files: tuple[Path, Path]) -> None:
    model, _ = model_files
    result = gyre(home, "registry", "publish", "iris", str(model), check=False)
    assert result.returncode == 1
    assert "needs sample input rows" in result.stderr
    assert "Traceback" not in result.stderr
    result = gyre(home, "registry", "show", "nope", check=False)
    assert result.returncode == 1
    assert "no model `nope`" in result.stderr
    # Messages are printed as they are: a [section] is not taken for terminal markup.
    config = home.parent / "bad.toml"
    config.write_text("[serve]\nbogus = 1\n")
    result = gyre(home, "--config", str(config), "registry", "list", check=False)
    assert result.returncode == 1
    assert "unknown setting(s) bogus in [serve]" in result.stderr
    # The file system refusing a path is one line too.
    result = gyre(Path("/proc/gyre-home"), "registry", "list", check=False)
    assert result.returncode == 1 and "error:" in result.stderr
    assert "Traceback" not in result.stderr
    # Numbers a command cannot use are usage errors (status 2), not tracebacks.
    for args in (["demo", "--port", "70000"], ["events", "tail", "x", "-n", "0"]):
        result = gyre(home, *args, check=False)
        assert result.returncode == 2 and "Invalid value" in result.stderr, result.stderr


def test_policies_the_server_cannot_use_are_refused_and_shown_broken(
    home: Path, model_files: tuple[Path, Path]
) -> None:
    from gyre.registry import Registry

    model, sample = model_files
    gyre(home, "registry", "publish", "iris", str(model), "--sample", str(sample))
    for split in ("\u00b2=100", "champion=1e308,challenger=1e308", "champion=1e400"):
        result = gyre(home, "registry", "policy", "iris", "split", "--split", split, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "traffic policy       │ champion {}" in gyre(home, "registry", "show", "iris").stdout
    registry = Registry(home)  # as an older gyre stored it
    registry.metadata.set_policy("iris", "split", {"weights": {"\u00b2": 100}}, reason="old")
    registry.close()
    shown = gyre(home, "registry", "show", "iris").stdout
    assert 'BROKEN: split {"weights": {"\u00b2": 100}}' in shown, shown


@pytest.mark.parametrize("name", ["checkout-service", "team a/report #2"])
def test_consumers_key_prints_config_that_loads(home: Path, name: str) -> None:
    from gyre.config import load_config
    from gyre.serve._auth import hash_key

    out = gyre(home, "consumers", "key", name, "--models", 'iris, "odd"', "--rate", "5").stdout
    secret = out.splitlines()[1].strip()
    config = home.parent / "consumers.toml"
    config.write_text(out.split("Add to gyre.toml:", 1)[1])
    consumer = load_config(home=home, config_file=config).serve.consumers[name]
    assert consumer.key_sha256 == hash_key(secret)
    assert consumer.models == ["iris", '"odd"'] and consumer.rate_per_s == 5.0


def test_help_keeps_config_section_names(home: Path) -> None:
    # rich reads [a.b] as a style tag and drops it unless it is escaped.
    assert "[collect.events.NAME] in gyre.toml" in gyre(home, "events", "--help").stdout
    assert "[features.views.NAME] in gyre.toml" in gyre(home, "features", "--help").stdout


def test_demo_trains_publishes_serves_and_calls_every_protocol(home: Path) -> None:
    out = gyre(home, "demo", "--no-wait", "--port", "0").stdout
    for title in (
        "predict (Open Inference Protocol v2)",
        "predict (TensorFlow Serving REST)",
        "predict (MLflow /invocations, dataframe_split)",
    ):
        assert f"{title}  HTTP 200" in out
    assert "curl -s -X POST" in out
    assert "predict by entity (the server computes the features)  HTTP 200" in out
    words = " ".join(out.split())
    assert "1 served vector(s) recomputed offline, 0 mismatching values" in words
    assert "gyre serve exited with status 0" in out


def test_importing_the_server_pulls_no_training_stack() -> None:
    code = (
        "import sys, gyre.serve\n"
        "heavy = [m for m in ('sklearn', 'lightgbm', 'torch', 'duckdb', 'pyspark', 'skl2onnx')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_listings_print_json_that_scripts_can_read(
    home: Path, model_files: tuple[Path, Path]
) -> None:
    import json

    model, sample = model_files
    gyre(home, "registry", "publish", "iris", str(model), "--sample", str(sample))
    config = home.parent / "gyre.toml"
    config.write_text(
        '[collect.events.orders]\nfields = {id = "string", shop = "int", amount = "float", '
        'at = "timestamp"}\nentity = ["shop"]\ntime = "at"\nid = "id"\n'
        '[features.views.spend]\nsource = "orders"\naggregations = ["sum(amount) over 1h"]\n'
    )
    events = home.parent / "orders.ndjson"
    events.write_text('{"id": "a", "shop": 1, "amount": 2.5, "at": "2026-11-26T08:00:00Z"}\n')
    gyre(home, "--config", str(config), "events", "ingest", "orders", str(events))

    def parsed(*args: str) -> object:
        return json.loads(gyre(home, "--config", str(config), *args, "--json").stdout)

    (listed,) = parsed("registry", "list")
    assert listed["model"] == "iris" and len(listed["artifact_sha256"]) == 64
    shown = parsed("registry", "show", "iris")
    assert shown["version"] == 1 and shown["traffic_policy"]["kind"] == "champion"
    assert parsed("events", "types")[0]["type"] == "orders"
    assert parsed("events", "stats")["types"][0]["facts"] == 1
    assert parsed("features", "list")[0]["features"][0]["name"] == "sum_amount_1h"
    assert parsed("features", "show", "spend")["source"] == "orders"
    assert [(r["view"], r["checked"]) for r in parsed("features", "skew")] == [("spend", 0)]
    tail = gyre(home, "--config", str(config), "events", "tail", "orders").stdout
    assert [json.loads(line)["id"] for line in tail.splitlines()] == ["a"]
    # A table sent to a pipe is not cut to 80 columns.
    env = {
        k: v for k, v in os.environ.items() if k not in ("COLUMNS",) and not k.startswith("GYRE_")
    }
    piped = subprocess.run(
        [sys.executable, "-m", "gyre", "--home", str(home), "registry", "show", "iris"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert listed["artifact_sha256"] in piped.stdout and "…" not in piped.stdout
