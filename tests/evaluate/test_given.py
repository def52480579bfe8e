"""`gyre evaluate --data FILE`: a run's model scored on the rows of a Parquet or CSV file,
and every problem of the file refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gyre.cli._main import app
from gyre.errors import EvaluationError
from gyre.evaluate import evaluate
from gyre.learn import run_model
from gyre.learn._verify import rebuilt_data
from gyre.stores import Stores
from tests.evaluate.test_evaluate import GATES, _config, _train
from tests.learn.world import SPEC, fill, write_world


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    """A world, a run of it, and its holdout rows as file columns."""
    world = tmp_path_factory.mktemp("given")
    config = write_world(world)
    fill(config, users=60, hours=96)
    run = _train(world, "first.toml", SPEC + GATES)
    stores = Stores.from_config(config)
    names = run_model(stores, run).feature_names
    _, data = rebuilt_data(stores, config, run)
    columns: dict[str, Any] = {n: data.x[data.holdout, i] for i, n in enumerate(names)}
    columns["label"] = data.y[data.holdout]
    columns["ts"] = data.ts[data.holdout] // 1_000_000  # seconds, the default unit
    columns["band"] = np.where(data.x[data.holdout, names.index("pages")] > 3, "many", "few")
    return world, run, columns


def _write(path: Path, columns: dict[str, Any]) -> Path:
    table = pa.table(columns)
    if path.suffix == ".csv":
        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def test_the_holdout_given_as_a_file_scores_as_the_holdout(
    trained: tuple[Path, str, dict[str, Any]],
) -> None:
    world, run, columns = trained
    config = _config(world)
    stores = Stores.from_config(config)
    own = evaluate(stores, config, run, against=None, record=False)
    for name in ("holdout.parquet", "holdout.csv"):
        path = _write(world / name, columns)
        found = evaluate(stores, config, run, against=None, data=path, record=False)
        assert found.rows == own.rows and found.data == str(path)
        for metric in ("roc_auc", "log_loss", "f1"):  # the same rows, the same threshold
            assert found.metrics[metric].value == pytest.approx(own.metrics[metric].value)
        assert found.threshold == own.threshold  # learned on the run's validation rows
        assert set(found.baselines) == {"majority", "linear"}
    # The file's own columns slice it; a label column of another name is named.
    renamed = dict(columns)
    renamed["bought"] = renamed.pop("label")
    path = _write(world / "renamed.parquet", renamed)
    sliced = evaluate(stores, config, run, against=None, data=path, label="bought", slices=["band"])
    assert {s.name for s in sliced.slices} == {"band=many", "band=few"}
    assert sum(s.rows for s in sliced.slices) == own.rows


def test_the_cli_evaluates_a_file_and_says_so(trained: tuple[Path, str, dict[str, Any]]) -> None:
    world, run, columns = trained
    path = _write(world / "cli.csv", columns)
    args = ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]
    result = CliRunner().invoke(
        app, [*args, "evaluate", run, "--data", str(path), "--against", "none", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["data"] == str(path) and summary["rows"] == len(columns["label"])
    shown = CliRunner().invoke(app, [*args, "evaluate", run, "--data", str(path)])
    assert shown.exit_code == 0 and "rows of" in shown.output and "cli.csv" in shown.output
    alone = CliRunner().invoke(app, [*args, "evaluate", run, "--label", "bought"])
    assert alone.exit_code == 2 and "give --data too" in alone.output
    missing = dict(columns)
    del missing["pages"]
    bad = _write(world / "bad.csv", missing)
    refused = CliRunner().invoke(app, [*args, "evaluate", run, "--data", str(bad)])
    # A GyreError: `gyre.cli._main.main` prints it as one line and exits 1.
    assert isinstance(refused.exception, EvaluationError)
    assert "lacks the feature column(s) pages" in str(refused.exception)


def test_rows_that_may_be_training_rows_fail_the_verdict_and_a_champion_is_refused(
    trained: tuple[Path, str, dict[str, Any]],
) -> None:
    world, run, columns = trained
    config = _config(world)
    stores = Stores.from_config(config)
    untimed = {k: v for k, v in columns.items() if k != "ts"}
    path = _write(world / "untimed.parquet", untimed)
    # Scored on rows it may have learned from, a model looks better than it is: the
    # metrics are shown, but the verdict is a veto that says why.
    found = evaluate(stores, config, run, against=None, data=path, record=False)
    assert not found.verdict.blessed
    assert found.verdict.reasons[0].startswith("rows the model did not learn from: the rows "
                                               "file has no `ts` column")  # fmt: skip
    early = dict(columns)
    early["ts"] = np.full(len(columns["ts"]), int(columns["ts"].min()) - 86_400 * 30)
    path_early = _write(world / "early.parquet", early)
    found = evaluate(stores, config, run, against=None, data=path_early, record=False)
    assert not found.verdict.blessed and "give rows after it" in found.verdict.reasons[0]
    assert evaluate(stores, config, run, against=None, data=_write(world / "late.parquet",
                    columns), record=False).verdict.blessed  # fmt: skip
    args = ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]
    published = CliRunner().invoke(
        app, [*args, "registry", "publish", "--run", run, "--alias", "champion"]
    )
    assert published.exit_code == 0, published.output
    shown = CliRunner().invoke(app, [*args, "registry", "show", "buyers:1"])
    assert "rows of" in shown.output and "cli.csv" in shown.output  # not "holdout rows"
    second = _train(
        world, "second.toml", (SPEC + GATES).replace("num_leaves = 8", "num_leaves = 4")
    )
    with pytest.raises(EvaluationError, match="no time column, so whether the champion"):
        evaluate(stores, config, second, data=path, record=False)
    timed = evaluate(stores, config, second, data=_write(world / "timed.parquet", columns))
    assert timed.champion == "buyers:1" and timed.differences is not None


def _refused(world: Path, run: str, path: Path, match: str, **options: Any) -> None:
    config = _config(world)
    with pytest.raises(EvaluationError, match=match):
        evaluate(Stores.from_config(config), config, run, against=None, data=path, **options)


def test_every_problem_of_the_file_is_refused_by_name(
    trained: tuple[Path, str, dict[str, Any]],
) -> None:
    world, run, columns = trained
    n = len(columns["label"])
    no_label = {k: v for k, v in columns.items() if k != "label"}
    _refused(world, run, _write(world / "a.parquet", no_label), r"no label column `label`.*--label")
    _refused(world, run, _write(world / "b.parquet", columns), "no label column `y`", label="y")
    no_feature = {k: v for k, v in columns.items() if k != "mean_pages_1d"}
    _refused(world, run, _write(world / "c.csv", no_feature), r"c\.csv lacks .*mean_pages_1d")
    text = dict(columns, pages=np.asarray(["many"] * n))
    _refused(world, run, _write(world / "d.parquet", text), "feature column `pages` .* not numeric")
    unseen = dict(columns, label=np.asarray([2] * n))
    _refused(world, run, _write(world / "e.parquet", unseen), "label.* the model never saw: 2")
    empty_label = dict(columns, label=pa.array([None] * n, pa.int64()))
    _refused(world, run, _write(world / "f.parquet", empty_label), "1?[0-9]+ empty value")
    empty = {k: np.asarray(v)[:0] for k, v in columns.items()}
    _refused(world, run, _write(world / "g.parquet", empty), r"g\.parquet has no rows")
    (world / "h.parquet").write_bytes(b"not parquet at all")
    _refused(world, run, world / "h.parquet", r"h\.parquet cannot be read as parquet")
    (world / "i.json").write_text("{}")
    _refused(world, run, world / "i.json", r"must be Parquet \(\.parquet\) or CSV")
    _refused(world, run, world / "absent.csv", "does not exist")
    times = dict(columns, ts=np.asarray(["yesterday"] * n))
    _refused(world, run, _write(world / "j.parquet", times), "time column `ts`")
    head, *lines = _write(world / "k.csv", columns).read_text().splitlines()
    first = head.split(",")[0].strip('"')
    (world / "twice.csv").write_text("\n".join([f"{head},{first}"] + [f"{r},0" for r in lines]))
    _refused(world, run, world / "twice.csv", rf"has the column\(s\) {first} more than once")
