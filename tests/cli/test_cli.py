"""The `gyre` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from tests.forced import UNBLESSED


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
        "--force",
        "--reason",
        UNBLESSED,
        "--lineage",
        '{"data": "iris-v1"}',
    ).stdout
    assert "published iris version 1" in out
    assert "parity max |diff|" in out
    gyre(home, "registry", "publish", "iris", str(model), "--sample", str(sample), "--force-new")
    assert (
        "iris@champion -> version 2 (was 1)"
        in gyre(
            home, "registry", "alias", "iris", "champion", "2", "--force", "--reason", "t"
        ).stdout
    )
    listing = gyre(home, "registry", "list").stdout
    assert "champion" in listing and "X FP32[N, 4]" in listing
    shown = gyre(home, "registry", "show", "iris:1").stdout
    assert '"data": "iris-v1"' in shown and "output probabilities" in shown
    assert "iris version 2" in gyre(home, "registry", "show", "iris@champion").stdout
    assert "deleted iris version 1" in gyre(home, "registry", "delete", "iris", "1").stdout
    assert "deleted iris@champion" in gyre(home, "registry", "unalias", "iris", "champion").stdout
    history = json.loads(gyre(home, "registry", "history", "iris", "--json").stdout)
    assert [c["action"] for c in history] == [
        "publish", "alias", "publish", "alias", "delete", "unalias"
    ]  # fmt: skip
    page = json.loads(
        gyre(home, "registry", "history", "--after", str(history[1]["seq"]), "--limit", "2",
             "--json").stdout
    )  # fmt: skip
    assert page == history[2:4]
    assert "registry changes" in gyre(home, "registry", "history").stdout


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


def test_a_model_no_converter_exports_is_refused_in_one_short_line(
    home: Path, tmp_path: Path, iris: tuple
) -> None:
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = iris
    model = tmp_path / "kernel.joblib"
    joblib.dump(make_pipeline(StandardScaler(), KernelRidge()).fit(x, y), model)
    sample = tmp_path / "rows.npy"
    np.save(sample, x)
    result = gyre(
        home, "registry", "publish", "k", str(model), "--sample", str(sample), check=False
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: could not export KernelRidge (inside Pipeline): skl2onnx has no converter for "
        "it; export it yourself and publish the .onnx file"
    )
    assert result.stdout == ""


def test_publish_a_tensorflow_savedmodel_folder(home: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 2.0 * x + 1.0}

    doubler = Doubler()
    folder = tmp_path / "saved_model"
    tf.saved_model.save(doubler, str(folder), signatures={"serving_default": doubler.serve})
    sample = tmp_path / "rows.csv"
    sample.write_text("a,b\n1,2\n3.5,-4\n")
    out = gyre(home, "registry", "publish", "twice", str(folder), "--sample", str(sample)).stdout
    assert "published twice version 1 (tensorflow, parity max |diff| 0 on 2 rows)" in out
    assert "x FP32[N, 2]" in gyre(home, "registry", "list").stdout


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


def test_threshold_sets_shows_and_removes_a_decision_threshold(home: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from gyre.registry import Registry

    rng = np.random.default_rng(5)
    rows = rng.normal(size=(100, 2))
    model = tmp_path / "churn.joblib"
    joblib.dump(LogisticRegression().fit(rows, np.where(rows[:, 0] > 0, "yes", "no")), model)
    sample = tmp_path / "rows.npy"
    np.save(sample, rows)
    gyre(home, "registry", "publish", "churn", str(model), "--sample", str(sample))
    out = gyre(home, "registry", "threshold", "churn", "1", "0.8", "--reason", "F1").stdout
    assert 'decision threshold 0.8: label "yes" where p("yes") >= 0.8, else "no"' in out
    assert 'label "yes" where p("yes") >= 0.8' in gyre(home, "registry", "show", "churn").stdout
    shown = json.loads(gyre(home, "registry", "show", "churn", "--json").stdout)
    expected = {"threshold": 0.8, "classes": ["no", "yes"], "broken": None}
    assert shown["decision_threshold"] == expected
    for bad in ("1.5", "high"):
        result = gyre(home, "registry", "threshold", "churn", "1", bad, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "between 0 and 1" in result.stderr
    history = json.loads(gyre(home, "registry", "history", "churn", "--json").stdout)
    assert [(c["action"], c.get("why")) for c in history] == [("publish", None), ("decision", "F1")]
    registry = Registry(home)  # as a hand edit of the database leaves it
    registry.metadata.set_decision(
        "churn", 1, {"threshold": 2, "classes": ["no", "yes"]}, reason=""
    )
    registry.close()
    shown_text = gyre(home, "registry", "show", "churn").stdout
    assert "BROKEN:" in shown_text and "strictly between 0 and 1" in shown_text, shown_text
    out = gyre(home, "registry", "threshold", "churn", "1", "none").stdout
    assert "churn version 1: no decision threshold (its own label)" in out
    assert "decision threshold" not in gyre(home, "registry", "show", "churn").stdout


@pytest.mark.parametrize("name", ["checkout-service", "team a/report #2"])
def test_consumers_key_prints_config_that_loads(home: Path, name: str) -> None:
    from gyre.auth import hash_key
    from gyre.config import load_config

    out = gyre(home, "consumers", "key", name, "--models", 'iris, "odd"', "--rate", "5").stdout
    secret = out.splitlines()[1].strip()
    config = home.parent / "consumers.toml"
    config.write_text(out.split("Add to gyre.toml:", 1)[1])
    consumer = load_config(home=home, config_file=config).serve.consumers[name]
    assert consumer.key_sha256 == hash_key(secret)
    assert consumer.models == ["iris", '"odd"'] and consumer.rate_per_s == 5.0


def _declared(out: str) -> tuple[str, str]:
    """The key and the gyre.toml lines that `gyre consumers key` printed."""
    return out.splitlines()[1].strip(), out.split("Add to gyre.toml:", 1)[1]


def test_consumers_key_takes_event_types(home: Path) -> None:
    from gyre.config import load_config

    out = gyre(
        home, "consumers", "key", "app", "--events", "orders, clicks", "--events", "*"
    ).stdout
    config = home.parent / "consumers.toml"
    config.write_text(_declared(out)[1])
    consumer = load_config(home=home, config_file=config).serve.consumers["app"]
    assert consumer.events == ["orders", "clicks", "*"] and not consumer.admin
    plain = _declared(gyre(home, "consumers", "key", "app").stdout)[1]
    assert "events" not in plain  # none unless asked for


def test_keys_from_the_command_can_do_what_docs_say(
    home: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    """docs/serving.md and docs/collect.md: `models` scopes the models a key may call,
    `events` the types it may ingest; an admin key may move and delete aliases and change
    policies on the control plane, and read the shadow comparisons on the server, and no
    other key may."""
    from gyre.config import load_config
    from gyre.registry import Registry
    from tests.control.client import ControlClient
    from tests.serve.apptest import AppClient

    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias="champion", force_alias=UNBLESSED)
    registry.publish(
        "iris", iris_classifier, iris[0], alias="challenger", force_new=True, force_alias=UNBLESSED
    )
    registry.publish("other", iris_classifier, iris[0])
    registry.close()
    ops_key, ops = _declared(gyre(home, "consumers", "key", "ops", "--admin").stdout)
    app_key, app = _declared(
        gyre(home, "consumers", "key", "app", "--models", "iris", "--events", "orders").stdout
    )
    config = home.parent / "gyre.toml"
    config.write_text(
        '[collect.events.orders]\nfields = { order_id = "string", at = "timestamp" }\n'
        'entity = ["order_id"]\ntime = "at"\n'
        '[collect.events.clicks]\nfields = { page = "string", at = "timestamp" }\n'
        'entity = ["page"]\ntime = "at"\n' + ops + app
    )
    client = AppClient(load_config(home=home, config_file=config))
    control = ControlClient(client.config)
    as_ops, as_app = {"X-Api-Key": ops_key}, {"X-Api-Key": app_key}
    data = iris[0][0].tolist()
    row = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": data}]}
    order = [{"order_id": "o-1", "at": "2026-12-01T10:00:00Z"}]
    try:
        # The application's key: its model and its event type, nothing else.
        assert client.post("/v2/models/iris/infer", json=row, headers=as_app).status_code == 200
        assert client.post("/v2/models/other/infer", json=row, headers=as_app).status_code == 403
        ingested = client.post("/v1/events/orders", json=order, headers=as_app)
        assert ingested.status_code == 200 and ingested.json()["accepted"] == 1, ingested.text
        clicks = client.post("/v1/events/clicks", json=order, headers=as_app)
        assert clicks.status_code == 403 and "list the type in its `events`" in clicks.text
        for method, url, body in (
            ("PUT", "/v1/admin/models/iris/aliases/champion", {"version": 2}),
            ("DELETE", "/v1/admin/models/iris/aliases/challenger", {}),
            ("PUT", "/v1/admin/models/iris/policy", {"kind": "champion"}),
        ):
            refused = control.request(method, url, json=body, headers=as_app)
            assert refused.status_code == 403 and "admin" in refused.text, (method, url)
        refused = client.get("/v1/admin/models/iris/shadow", headers=as_app)
        assert refused.status_code == 403 and "admin" in refused.text
        # The admin key (every model): each admin operation the docs list.
        moved = control.put(
            "/v1/admin/models/iris/aliases/champion",
            json={"version": 2, "force": True, "reason": UNBLESSED},
            headers=as_ops,
        )
        assert moved.json() == {"model": "iris", "alias": "champion", "version": 2, "previous": 1}
        client.refresh()
        assert (
            client.post("/v2/models/iris/infer", json=row, headers=as_ops).json()["model_version"]
            == "2"
        )
        control.put(
            "/v1/admin/models/iris/aliases/old", json={"version": 1}, headers=as_ops
        ).raise_for_status()
        policy = control.put(
            "/v1/admin/models/iris/policy",
            json={"kind": "shadow", "params": {"shadow": "old"}, "reason": "compare"},
            headers=as_ops,
        )
        assert policy.status_code == 200, policy.text
        client.refresh()
        assert client.post("/v2/models/iris/infer", json=row, headers=as_app).status_code == 200
        client.loop.run_until_complete(client.app.predictor.drain())
        shadow = client.get("/v1/admin/models/iris/shadow", headers=as_ops).json()["comparisons"]
        assert [(r["primary_version"], r["shadow_version"]) for r in shadow] == [(2, 1)]
        reset = control.put(
            "/v1/admin/models/iris/policy", json={"kind": "champion"}, headers=as_ops
        )
        assert reset.status_code == 200, reset.text
        deleted = control.request("DELETE", "/v1/admin/models/iris/aliases/old", headers=as_ops)
        assert deleted.json()["deleted"] is True
        other = control.put(
            "/v1/admin/models/other/aliases/champion",
            json={"version": 1, "force": True, "reason": UNBLESSED},
            headers=as_ops,
        )
        assert other.status_code == 200, other.text
        # An admin key ingests only the event types it lists (none here).
        assert client.post("/v1/events/orders", json=order, headers=as_ops).status_code == 403
    finally:
        control.close()
        client.close()


def test_help_keeps_config_section_names(home: Path) -> None:
    # rich reads [a.b] as a style tag and drops it unless it is escaped.
    assert "[collect.events.NAME] in gyre.toml" in gyre(home, "events", "--help").stdout
    assert "[features.views.NAME] in gyre.toml" in gyre(home, "features", "--help").stdout
    assert "admin key of [serve.consumers]" in gyre(home, "control", "--help").stdout


def test_demo_trains_publishes_serves_and_calls_every_protocol(home: Path) -> None:
    # Served until stopped; SIGTERM once left the server (its own session) running.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "gyre", "--home", str(home), "demo", "--port", "0"]
    log = home.parent / "demo.log"
    with log.open("wb") as sink:
        demo = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while "press Ctrl-C to stop" not in log.read_text(errors="replace"):
                assert demo.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            demo.send_signal(signal.SIGTERM)
            assert demo.wait(timeout=90) == 0
        finally:
            if demo.poll() is None:
                demo.kill()
    out = log.read_text()
    served = re.search(r"at http://127\.0\.0\.1:(\d+)", out)
    assert served is not None, out
    with pytest.raises(httpx.TransportError):  # the server stopped with the demo
        httpx.get(f"http://127.0.0.1:{served.group(1)}/v2/health/live", timeout=2)
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
        "heavy = [m for m in ('sklearn', 'lightgbm', 'torch', 'duckdb', 'pyspark', 'skl2onnx',"
        " 'xgboost', 'tensorflow', 'tf2onnx', 'keras') if m in sys.modules]\n"
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


def test_a_python_model_publishes_its_files_and_show_lists_them(home: Path, tmp_path: Path) -> None:
    import json
    import shutil

    source = tmp_path / "src"
    (source / "dir" / "weights").mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "serve" / "pymodels" / "linear.py", source)
    np.save(source / "dir" / "weights" / "coef.npy", np.ones(3, dtype=np.float32))
    (source / "dir" / "bias.txt").write_text("0.5")
    args = ("registry", "publish", "linear", str(source / "linear.py"))
    out = gyre(home, *args, "--artifacts", str(source / "dir")).stdout
    assert "published linear version 1" in out and "2 files" in out
    shutil.rmtree(source)
    shown = gyre(home, "registry", "show", "linear").stdout
    assert "file weights/coef.npy" in shown and "file bias.txt" in shown
    manifest = json.loads(gyre(home, "registry", "show", "linear", "--json").stdout)
    assert [f["path"] for f in manifest["files"]] == ["bias.txt", "weights/coef.npy"]
    assert manifest["files"][0]["bytes"] == 3 and len(manifest["files"][0]["sha256"]) == 64
    assert len(manifest["files_sha256"]) == 64
    assert f"manifest {manifest['files_sha256']}" in shown
    # A folder reaching outside itself is one clear line, and nothing is published.
    (tmp_path / "dir").mkdir()
    (tmp_path / "secret").write_text("not for the registry")
    (tmp_path / "dir" / "key").symlink_to(tmp_path / "secret")
    (tmp_path / "m.py").write_text(
        (Path(__file__).parents[1] / "serve/pymodels/linear.py").read_text()
    )
    result = gyre(home, "registry", "publish", "other", str(tmp_path / "m.py"), "--artifacts",
                  str(tmp_path / "dir"), check=False)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    secret = (tmp_path / "secret").resolve()
    assert f"`key` is a symlink to {secret}, outside the folder" in result.stderr
