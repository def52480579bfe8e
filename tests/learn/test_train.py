"""`gyre train`: a spec fitted and recorded as a run that can be redone, published and
traced; Ctrl-C leaves an interrupted run and nothing in the registry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gyre.cli._main import app
from gyre.config import StoreConfig
from gyre.errors import RunError
from gyre.learn import load_spec, run_model, train_spec, verify_run
from gyre.registry import Registry
from gyre.stores import Stores
from tests.conftest import store_toml
from tests.learn.world import fill, write_world


def _trained(folder: Path, spec_text: str | None = None):
    config = write_world(folder)
    if spec_text is not None:
        (folder / "buyers.toml").write_text(spec_text)
    fill(config, users=50, hours=60)
    stores = Stores.from_config(config)
    return config, stores, train_spec(load_spec(folder / "buyers.toml"), config, stores)


def test_a_run_records_what_it_learned_from_and_can_be_redone(tmp_path: Path) -> None:
    config, stores, result = _trained(tmp_path)
    runs = stores.open_runs()
    run = runs.get(result.run_id)
    runs.close()
    assert run.status == "finished" and run.experiment == "buyers"
    assert run.params["family"] == "lightgbm" and run.params["num_leaves"] == 8
    assert run.params["seed"] == 7 and run.params["views"] == ["activity"]
    assert run.metrics["auc"] == result.fitted.metrics["auc"] > 0.6
    assert {"accuracy", "log_loss", "validation_auc", "train_auc"} <= set(run.metrics)
    lineage = run.record["lineage"]
    assert lineage["fact_log_watermark"] > 0
    assert set(lineage["feature_definitions"]) == {"activity"}
    assert lineage["spec_sha256"] == load_spec(tmp_path / "buyers.toml").sha256
    assert lineage["training_set"]["sha256"] == result.fitted.data.sha256
    assert lineage["training_set"]["rows"]["train"] == len(result.fitted.data.train)
    assert lineage["code"]["commit"] is None  # not in a git repository
    assert set(run.record["timings_s"]) >= {"rows", "features", "fit", "evaluate", "record"}
    assert run.record["environment"]["packages"]["lightgbm"]
    assert {"model", "sample", "curves.svg"} <= set(run.record["artifacts"])
    assert run.record["spec"]["text"] == (tmp_path / "buyers.toml").read_text()
    # The same spec again: the same metrics, bit for bit.
    again = train_spec(load_spec(tmp_path / "buyers.toml"), config, stores)
    assert again.fitted.metrics == result.fitted.metrics
    assert again.fitted.data.sha256 == result.fitted.data.sha256
    checked = verify_run(stores, config, result.run_id[:8])
    assert checked.reproduced and checked.exact and not checked.problems
    assert checked.metrics["auc"][2]


def test_verify_says_when_a_view_changed_since_the_run(tmp_path: Path) -> None:
    _, stores, result = _trained(tmp_path)
    toml = (tmp_path / "gyre.toml").read_text().replace("over 1d", "over 2d")
    (tmp_path / "gyre.toml").write_text(toml)
    from gyre.config import load_config

    changed = load_config(tmp_path / ".gyre", tmp_path / "gyre.toml")
    checked = verify_run(stores, changed, result.run_id)
    assert not checked.reproduced
    assert "feature view `activity` changed since the run" in checked.problems[0]


def test_a_dirty_working_tree_is_recorded_as_dirty(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    config = write_world(tmp_path)
    fill(config, users=20, hours=30)
    (tmp_path / ".gitignore").write_text(".gyre/\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "spec")
    stores = Stores.from_config(config)
    clean = train_spec(load_spec(tmp_path / "buyers.toml"), config, stores)
    (tmp_path / "train.py").write_text("print('uncommitted')\n")
    dirty = train_spec(load_spec(tmp_path / "buyers.toml"), config, stores)
    (tmp_path / "train.py").write_text("print('changed again')\n")
    dirtier = train_spec(load_spec(tmp_path / "buyers.toml"), config, stores)
    runs = stores.open_runs()
    codes = [runs.get(r.run_id).record["lineage"]["code"] for r in (clean, dirty, dirtier)]
    runs.close()
    assert codes[0]["dirty"] is False and "diff_sha256" not in codes[0]
    assert codes[1]["dirty"] is True and codes[1]["commit"] == codes[0]["commit"]
    assert codes[1]["diff_sha256"] != codes[2]["diff_sha256"]


class _StopAtEpoch:
    def __init__(self, epoch: int) -> None:
        self.at = epoch

    def started(self, run_id: str) -> None:
        self.run_id = run_id

    def stage(self, name: str) -> None:
        pass

    def epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


def test_ctrl_c_in_an_epoch_marks_the_run_interrupted_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    config = write_world(tmp_path)
    fill(config, users=20, hours=30)
    stores = Stores.from_config(config)
    stop = _StopAtEpoch(3)
    with pytest.raises(KeyboardInterrupt):
        train_spec(load_spec(tmp_path / "buyers.toml"), config, stores, reporter=stop)
    runs = stores.open_runs()
    run = runs.get(stop.run_id)
    runs.close()
    assert run.status == "interrupted"
    assert "model" not in run.record.get("artifacts", {})
    assert "timings_s" not in run.record
    with pytest.raises(RunError, match=r"is interrupted .*only a finished run can be published"):
        run_model(stores, stop.run_id)
    registry = Registry(stores)
    assert registry.versions() == []
    registry.close()


def test_the_cli_trains_publishes_the_run_and_shows_where_it_came_from(tmp_path: Path) -> None:
    config = write_world(tmp_path)
    fill(config, users=30, hours=40)
    base = ["--home", str(tmp_path / ".gyre"), "--config", str(tmp_path / "gyre.toml")]
    runner = CliRunner()
    dry = runner.invoke(app, [*base, "train", str(tmp_path / "buyers.toml"), "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["rows"] > 100
    done = runner.invoke(app, [*base, "train", str(tmp_path / "buyers.toml"), "--json"])
    assert done.exit_code == 0, done.output
    run_id = json.loads(done.stdout)["run_id"]
    published = runner.invoke(app, [*base, "registry", "publish", "--run", run_id[:10]])
    assert published.exit_code == 0, published.output
    assert "published buyers version 1" in published.stdout
    registry = Registry(Stores.from_config(config))
    (mv,) = registry.versions("buyers")
    registry.close()
    assert mv.lineage["run"]["run_id"] == run_id
    assert mv.signature.features is not None and mv.signature.features.view == "activity"
    shown = runner.invoke(app, [*base, "registry", "show", "buyers:1"])
    made_by = next(line for line in shown.stdout.splitlines() if "made by run" in line)
    assert run_id in made_by and "spec " in made_by and "training set" in made_by


def test_the_cli_names_every_problem_of_a_bad_spec(tmp_path: Path) -> None:
    write_world(tmp_path)
    spec = tmp_path / "buyers.toml"
    spec.write_text(
        spec.read_text()
        .replace("num_leaves", "num_leafs")
        .replace('views = ["activity"]', 'views = ["activty"]')
    )
    base = ["--home", str(tmp_path / ".gyre"), "--config", str(tmp_path / "gyre.toml")]
    result = subprocess.run(
        [sys.executable, "-m", "gyre", *base, "train", str(spec), "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "`activty` is not declared in [features.views]" in result.stderr
    assert "num_leafs" in result.stderr and "num_leaves" in result.stderr


def test_runs_verify_on_the_cli_reproduces_a_run_and_fails_when_it_cannot(tmp_path: Path) -> None:
    config, _, result = _trained(tmp_path)
    base = ["--home", str(config.home), "--config", str(tmp_path / "gyre.toml")]
    runner = CliRunner()
    ok = runner.invoke(app, [*base, "runs", "verify", result.run_id[:8]])
    assert ok.exit_code == 0, ok.output
    assert "reproduced" in ok.stdout and "bit for bit" in ok.stdout
    as_json = runner.invoke(app, [*base, "runs", "verify", result.run_id, "--json"])
    assert json.loads(as_json.stdout)["metrics"]["auc"]["match"] is True
    toml = (tmp_path / "gyre.toml").read_text().replace("mean(pages)", "max(pages)")
    (tmp_path / "gyre.toml").write_text(toml)
    changed = runner.invoke(app, [*base, "runs", "verify", result.run_id])
    assert changed.exit_code == 1
    assert "cannot redo" in changed.stdout and "NOT reproduced" in changed.stdout


def test_a_run_on_either_store_backend(tmp_path: Path, store_config: StoreConfig) -> None:
    config = write_world(tmp_path, store_toml(store_config))
    fill(config, users=20, hours=30)
    stores = Stores.from_config(config)
    result = train_spec(load_spec(tmp_path / "buyers.toml"), config, stores)
    runs = stores.open_runs()
    try:
        (found,) = runs.search("metrics.auc > 0 and params.num_leaves = 8")
        assert found.run_id == result.run_id and found.status == "finished"
    finally:
        runs.close()
    assert verify_run(stores, config, result.run_id).reproduced


def test_sigint_to_gyre_train_marks_the_run_interrupted(tmp_path: Path) -> None:
    config = write_world(tmp_path)
    fill(config, users=20, hours=30)
    slow = (
        (tmp_path / "buyers.toml")
        .read_text()
        .replace('family = "lightgbm"', 'family = "torch.mlp"')
        .replace(
            "params = {n_estimators = 40, num_leaves = 8}",
            "params = {hidden = [512, 512], epochs = 100000, patience = 100000}",
        )
    )
    (tmp_path / "buyers.toml").write_text(slow)
    base = ["--home", str(config.home), "--config", str(tmp_path / "gyre.toml")]
    process = subprocess.Popen(
        [sys.executable, "-m", "gyre", *base, "train", str(tmp_path / "buyers.toml")],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # wait for the second epoch, recorded before it is shown
        lines.append(line)
        if "epoch 2:" in line:
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(lines) + rest
    assert "is marked interrupted; nothing was published" in rest
    run_id = lines[0].split()[1]
    runs = Stores.from_config(config).open_runs()
    run = runs.get(run_id)
    history = runs.metric_history(run_id, "loss")
    runs.close()
    assert run.status == "interrupted" and "model" not in run.record.get("artifacts", {})
    assert len(history) >= 2  # the epochs logged before the signal are kept


def test_the_split_scored_side_by_side_gives_the_metrics_scored_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gyre.learn._sklearn import LightGBMTrainer
    from gyre.learn._train import _scores, _SideBySide

    _, _, result = _trained(tmp_path)
    fitted = result.fitted
    assert LightGBMTrainer.predicts_in_threads
    monkeypatch.setattr(_SideBySide, "SLICE_ROWS", 7)  # every part in slices, one per core
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    side_by_side = _scores("classification", fitted.trainer, fitted.data)
    monkeypatch.setattr(LightGBMTrainer, "predicts_in_threads", False)
    in_turn = _scores("classification", fitted.trainer, fitted.data)
    assert list(side_by_side.items()) == list(in_turn.items())
    assert side_by_side == fitted.metrics
