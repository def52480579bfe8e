"""Leave-one-feature-out: each feature's removal refitted and scored paired with the full
model; the signal's removal costs, the noise's does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gyre.cli._main import app
from gyre.evaluate import evaluate, report_input
from gyre.evaluate._report import render_report
from gyre.stores import Stores
from tests.evaluate.test_evaluate import _config, _train
from tests.learn.world import START_US, write_world

SPEC = """
[model]
name = "lofo"
task = "classification"
family = "sklearn.LogisticRegression"
seed = 3

[features]
columns = ["signal", "noise"]

[rows]
table = "rows.parquet"

[label]
column = "y"

[split]
holdout = 0.3
validation = 0.1

[evaluate]
leave_one_feature_out = true
"""


@pytest.fixture
def world(tmp_path: Path) -> Path:
    write_world(tmp_path)
    rng = np.random.default_rng(11)
    n = 3000
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    t = START_US // 1_000_000
    table = {
        "user": np.arange(n),
        "ts": t + 60 * np.arange(n),
        "signal": signal,
        "noise": noise,
        "y": (signal + 0.7 * rng.normal(size=n) > 0).astype(np.int64),
        "amount": 3.0 * signal + rng.normal(size=n),
    }
    pq.write_table(pa.table(table), tmp_path / "rows.parquet")
    return tmp_path


def test_removing_the_signal_costs_auc_and_removing_noise_does_not(world: Path) -> None:
    config = _config(world)
    run = _train(world, "lofo.toml", SPEC)
    found = evaluate(Stores.from_config(config), config, run, against=None)  # the spec's flag
    assert found.leave_one_out is not None and found.leave_one_out.metric == "roc_auc"
    signal, noise = (found.leave_one_out.features[f] for f in ("signal", "noise"))
    assert signal.delta > 0.2 and signal.low > 0  # full minus without: the signal adds
    assert noise.low <= 0 <= noise.high  # the noise adds nothing the interval can tell
    assert signal.challenger == pytest.approx(found.metrics["roc_auc"].value)
    summary = found.as_json()
    assert set(summary["leave_one_out"]["features"]) == {"signal", "noise"}
    page = render_report(report_input(found))
    assert "Leave one feature out" in page and "signal" in page
    # Off in the spec, on from the command line; the table shows it.
    off = world / "off.toml"
    off.write_text(SPEC.replace("leave_one_feature_out = true", ""))
    other = _train(world, "off.toml", off.read_text())
    assert evaluate(Stores.from_config(config), config, other, against=None).leave_one_out is None
    args = ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]
    result = CliRunner().invoke(app, [*args, "evaluate", other, "--leave-one-out", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["leave_one_out"]["metric"] == "roc_auc"
    shown = CliRunner().invoke(app, [*args, "evaluate", other, "--leave-one-out"])
    assert "leave one feature out" in shown.output and "noise" in shown.output


def test_features_past_the_cap_are_named_as_skipped(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gyre.evaluate._lofo as lofo

    monkeypatch.setattr(lofo, "MAX_LOFO_FEATURES", 1)
    config = _config(world)
    run = _train(world, "lofo.toml", SPEC)
    found = evaluate(Stores.from_config(config), config, run, against=None)
    assert found.leave_one_out is not None
    assert list(found.leave_one_out.features) == ["signal"]
    assert found.leave_one_out.skipped == ["noise"]
    assert any("skipped: noise" in note for note in found.notes)


def test_a_regressor_reports_the_rmse_difference(world: Path) -> None:
    text = SPEC.replace('"classification"', '"regression"').replace("LogisticRegression", "Ridge")
    config = _config(world)
    run = _train(world, "reg.toml", text.replace('column = "y"', 'column = "amount"'))
    found = evaluate(Stores.from_config(config), config, run, against=None)
    assert found.leave_one_out is not None and found.leave_one_out.metric == "rmse"
    signal, noise = (found.leave_one_out.features[f] for f in ("signal", "noise"))
    assert signal.high < 0  # the full model's RMSE is lower: the signal helps
    assert noise.low <= 0 <= noise.high
