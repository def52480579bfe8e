"""A PyTorch model trained by `gyre train` on scikit-learn's digits: at least 95% holdout
accuracy, published from its run with ONNX parity, served by a real `gyre serve` to the real
tritonclient, and redone by `gyre runs verify` within the documented tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from gyre.cli._main import app
from gyre.config import load_config
from gyre.learn import load_spec, train_spec, verify_run
from gyre.registry import Registry
from gyre.stores import Stores
from tests.conftest import start_server
from tests.forced import UNBLESSED

pytestmark = pytest.mark.integration

PIXELS = [f"p{i}" for i in range(64)]
SPEC = f"""
[model]
name = "digits"
task = "classification"
family = "torch.mlp"
seed = 3
params = {{hidden = [64], epochs = 40, patience = 8, lr = 0.003, batch_size = 32}}

[features]
columns = {json.dumps(PIXELS)}

[rows]
table = "digits.parquet"

[label]
column = "digit"

[split]
holdout = 0.25
validation = 0.1
"""


def test_a_torch_mlp_from_a_spec_is_published_from_its_run_and_served(tmp_path: Path) -> None:
    import tritonclient.http as triton

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))  # the time order of the rows
    columns = {name: x[order, i] for i, name in enumerate(PIXELS)}
    ts = 1_700_000_000 + np.arange(len(y)) * 60
    pq.write_table(pa.table({"ts": ts, "digit": y[order], **columns}), tmp_path / "digits.parquet")
    (tmp_path / "digits.toml").write_text(SPEC)
    (tmp_path / "gyre.toml").write_text("")
    config = load_config(tmp_path / "home", tmp_path / "gyre.toml")
    stores = Stores.from_config(config)
    result = train_spec(load_spec(tmp_path / "digits.toml"), config, stores)
    assert result.fitted.metrics["accuracy"] >= 0.95
    runs = stores.open_runs()
    run = runs.get(result.run_id)
    losses = runs.metric_history(result.run_id, "val_loss")
    runs.close()
    assert len(losses) >= 5 and losses[-1].value < losses[0].value  # logged per epoch
    assert run.record["lineage"]["table"]["sha256"]

    base = ["--home", str(config.home), "--config", str(tmp_path / "gyre.toml")]
    published = CliRunner().invoke(
        app,
        [
            *base,
            "registry",
            "publish",
            "--run",
            result.run_id,
            "--alias",
            "champion",
            "--force",
            "--reason",
            UNBLESSED,
        ],
    )
    assert published.exit_code == 0, published.output
    registry = Registry(stores)
    (mv,) = registry.versions("digits")
    registry.close()
    assert mv.flavor == "torch" and mv.parity["passed"] is True
    assert mv.lineage["run"]["run_id"] == result.run_id

    holdout_x, _ = result.fitted.data.part("holdout")
    server = start_server(config.home)
    try:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        rows = holdout_x[:50].astype(np.float32)
        tensor = triton.InferInput("X", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        answer = client.infer("digits", [tensor])
        np.testing.assert_array_equal(answer.as_numpy("label"), result.fitted.trainer.predict(rows))
        np.testing.assert_allclose(
            answer.as_numpy("probabilities"), result.fitted.trainer.predict_proba(rows), atol=1e-5
        )
        client.close()
    finally:
        assert server.stop() == 0
    checked = verify_run(stores, config, result.run_id)
    assert checked.reproduced and not checked.exact
