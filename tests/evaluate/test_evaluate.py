"""`gyre evaluate` end to end: a run of `gyre train` against the champion on the run's own
holdout, with baselines, slices and the verdict's exit status."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gyre.cli._main import app
from gyre.config import Config, load_config
from gyre.errors import EvaluationError, InvalidModel, NotBlessed
from gyre.evaluate import evaluate
from gyre.learn import load_spec, train_spec
from gyre.registry import Registry
from gyre.stores import Stores
from tests.forced import UNBLESSED
from tests.learn.world import SPEC, fill, write_world

GATES = """
[evaluate]
threshold = "max_f1"

[evaluate.gates]
absolute = {roc_auc = 0.6}
change = {roc_auc = 0.02}
"""
BASELINE = GATES + 'baseline = ["roc_auc"]\n'


def _train(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    config = _config(folder)
    spec = load_spec(folder / name)
    return train_spec(spec, config, Stores.from_config(config)).run_id


def _config(folder: Path) -> Config:
    return load_config(folder / ".gyre", folder / "gyre.toml")


@pytest.fixture
def world(tmp_path: Path) -> Path:
    config = write_world(tmp_path)
    fill(config, users=60, hours=96)
    return tmp_path


def test_a_run_is_judged_against_the_champion_on_the_same_rows(world: Path) -> None:
    config = _config(world)
    stores = Stores.from_config(config)
    first = _train(world, "first.toml", SPEC + GATES)
    alone = evaluate(stores, config, first)
    assert alone.champion is None and alone.differences is None
    assert {"majority", "linear"} == set(alone.baselines)
    assert alone.verdict.blessed, alone.verdict.reasons
    assert 0 < alone.threshold["challenger"] < 1  # learned on the validation rows
    runner = CliRunner()
    base = ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]
    published = runner.invoke(
        app, [*base, "registry", "publish", "--run", first, "--alias", "champion"]
    )
    assert published.exit_code == 0, published.output
    registry = Registry.from_config(config)
    try:
        version = registry.resolve("buyers@champion")
    finally:
        registry.close()
    assert version.decision_threshold == alone.threshold["challenger"]  # what the server uses
    assert version.lineage["run"]["evaluation"]["verdict"] == "blessed"
    shown = runner.invoke(app, [*base, "registry", "show", "buyers:1"])
    assert "blessed on" in shown.output
    second = _train(
        world, "second.toml", (SPEC + GATES).replace("num_leaves = 8", "num_leaves = 4")
    )
    found = evaluate(stores, config, second)
    assert found.champion == "buyers:1"
    assert found.differences is not None and found.rows == alone.rows
    roc = found.differences["roc_auc"]
    assert roc.low <= roc.delta <= roc.high
    recorded = stores.open_runs()
    try:
        assert recorded.get(second).record["evaluation"]["champion"] == "buyers:1"
    finally:
        recorded.close()
    # The published version evaluates through its run, against none.
    by_version = evaluate(stores, config, "buyers@champion", against=None)
    assert by_version.run_id == first


def test_a_model_worse_than_the_baseline_is_vetoed_and_the_cli_exits_3(world: Path) -> None:
    dummy = (SPEC + BASELINE).replace('family = "lightgbm"', 'family = "sklearn.DummyClassifier"')
    dummy = dummy.replace("params = {n_estimators = 40, num_leaves = 8}", "")
    run = _train(world, "dummy.toml", dummy)
    runner = CliRunner()
    args = ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]
    result = runner.invoke(app, [*args, "evaluate", run, "--json"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.output)
    assert summary["verdict"] == "vetoed"
    assert any("better than the linear baseline" in r for r in summary["reasons"])
    # Labelling nothing positive leaves precision undefined: shown as a dash, no traceback.
    never = _train(world, "never.toml", dummy.replace('"max_f1"', '"cost=0.0001"'))
    result = runner.invoke(app, [*args, "evaluate", never])
    assert result.exit_code == 3 and "VETOED" in result.output, result.output
    assert "—" in result.output
    good = _train(world, "good.toml", SPEC + GATES)
    result = runner.invoke(app, [*args, "evaluate", good])
    assert result.exit_code == 0, result.output
    assert "BLESSED" in result.output
    page = world / "report.html"
    result = runner.invoke(app, [*args, "evaluate", good, "--report", str(page), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)["report"]
    text = page.read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == written["sha256"]
    assert text.index("blessed") < text.index("<img") and len(text) < 2_000_000


def test_a_clearly_worse_slice_vetoes(world: Path) -> None:
    slices = (
        GATES
        + """
[evaluate.slices]
columns = ["pages"]
min_rows = 30
absolute = {roc_auc = 0.95}
"""
    )
    config = _config(world)
    run = _train(world, "sliced.toml", SPEC + slices)
    found = evaluate(Stores.from_config(config), config, run)
    assert not found.verdict.blessed
    assert any(r.startswith("pages=") for r in found.verdict.reasons)
    assert {s.column for s in found.slices} == {"pages"}
    unsliced = SPEC + slices.replace("min_rows = 30", "min_rows = 100000")
    relaxed = evaluate(Stores.from_config(config), config, _train(world, "small.toml", unsliced))
    assert all(not s.gated for s in relaxed.slices) and relaxed.verdict.blessed
    with pytest.raises(EvaluationError, match=r"slice column.*nowhere"):
        evaluate(Stores.from_config(config), config, run, slices=["nowhere"])


def test_a_version_not_made_by_a_run_is_refused_with_what_to_do(world: Path) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    config = _config(world)
    registry = Registry.from_config(config)
    try:
        x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
        model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
        registry.publish("hand", model, x[:10])
    finally:
        registry.close()
    with pytest.raises(EvaluationError, match="not published from a run"):
        evaluate(Stores.from_config(config), config, "hand:1")


def test_a_version_whose_lineage_names_a_run_it_was_not_made_by_is_not_blessed(
    world: Path,
) -> None:
    """A lineage is the publisher's word: `--lineage` naming a good run does not make
    another model that run's, so evaluating the version cannot bless it."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    config = _config(world)
    stores = Stores.from_config(config)
    good = _train(world, "good.toml", SPEC + GATES)
    from gyre.learn import run_model

    made = run_model(stores, good)
    x = made.sample.astype(np.float32)
    other = LogisticRegression().fit(x, (x[:, 0] > x[:, 0].mean()).astype(int))
    joblib.dump(other, world / "other.joblib")
    np.save(world / "sample.npy", x[:10])
    runner = CliRunner()
    base = ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]
    forged = json.dumps({"run": {"run_id": good}})
    published = runner.invoke(app, [*base, "registry", "publish", "forged",
                                    str(world / "other.joblib"), "--sample",
                                    str(world / "sample.npy"), "--lineage", forged])  # fmt: skip
    assert published.exit_code == 0, published.output
    with pytest.raises(EvaluationError, match="is not the one that run stored"):
        evaluate(stores, config, "forged:1", against=None)
    registry = Registry.from_config(config)
    try:  # nor can the run's bytes be stored beside another model
        with pytest.raises(InvalidModel, match="native bytes given are another model"):
            registry.publish("forged", other, x[:10], native_bytes=made.model_bytes,
                             lineage={"run": {"run_id": good}})  # fmt: skip
        with pytest.raises(InvalidModel, match="do not load and predict"):
            registry.publish("forged", other, x[:10], native_bytes=b"not a pickle")
    finally:
        registry.close()
    registry = Registry.from_config(config)
    try:
        with pytest.raises(NotBlessed):
            registry.set_alias("forged", "champion", 1)
    finally:
        registry.close()
    # The run's own model, published from the run, is its model: it evaluates.
    mine = runner.invoke(app, [*base, "registry", "publish", "mine", "--run", good])
    assert mine.exit_code == 0, mine.output
    assert evaluate(stores, config, "mine:1", against=None).verdict.blessed


def test_cost_gates_are_measured_on_the_published_version(world: Path) -> None:
    config = _config(world)
    stores = Stores.from_config(config)
    costly = SPEC + GATES + "cost = {file_bytes = 1, p99_ms = 10000}\n"
    run = _train(world, "costly.toml", costly)
    unpublished = evaluate(stores, config, run)
    assert not unpublished.verdict.blessed and "not measured" in unpublished.verdict.reasons[0]
    registry = Registry.from_config(config)
    try:
        from gyre.learn import run_model

        made = run_model(stores, run)
        registry.publish("buyers", made.model, made.sample, lineage={"run": made.lineage},
                         native_bytes=made.model_bytes)  # fmt: skip
    finally:
        registry.close()
    found = evaluate(stores, config, "buyers:1")
    assert found.cost is not None and found.cost["file_bytes"] > 1
    assert [r.split(":")[0] for r in found.verdict.reasons] == ["file_bytes at most 1"]


def test_a_champion_that_learned_from_this_holdout_is_refused(world: Path) -> None:
    config = _config(world)
    stores = Stores.from_config(config)
    older = _train(world, "older.toml", SPEC + GATES)
    later = SPEC.replace("holdout = 0.2\nvalidation = 0.1", "holdout = 0.05\nvalidation = 0.05")
    newer = _train(world, "newer.toml", later + GATES)
    registry = Registry.from_config(config)
    try:
        from gyre.learn import run_model

        made = run_model(stores, newer)
        registry.publish("buyers", made.model, made.sample, alias="champion",
                         lineage={"run": made.lineage}, native_bytes=made.model_bytes,
                         force_alias=UNBLESSED)  # fmt: skip
    finally:
        registry.close()
    with pytest.raises(EvaluationError, match="learned from rows up to"):
        evaluate(stores, config, older)
    assert evaluate(stores, config, older, against=None).champion is None


def test_only_a_version_that_gyre_evaluate_blessed_can_be_champion(world: Path) -> None:
    config = _config(world)
    runner = CliRunner()
    base = ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]
    good = _train(world, "good.toml", SPEC + GATES)
    published = runner.invoke(app, [*base, "registry", "publish", "--run", good])
    assert published.exit_code == 0, published.output
    # Not evaluated yet: refused, saying what to do.
    refused = runner.invoke(app, [*base, "registry", "alias", "buyers", "champion", "1"])
    assert isinstance(refused.exception, NotBlessed), refused.output
    assert "gyre evaluate buyers:1" in str(refused.exception)
    page = world / "report.html"
    judged = runner.invoke(
        app, [*base, "evaluate", "buyers:1", "--against", "none", "--report", str(page), "--json"]
    )
    assert judged.exit_code == 0, judged.output
    sha = json.loads(judged.output)["report"]["sha256"]
    registry = Registry.from_config(config)
    try:
        found = registry.evaluation("buyers", 1)
        assert found is not None and found.blessed and found.evaluation["run_id"] == good
        assert found.evaluation["report_sha256"] == sha
    finally:
        registry.close()
    shown = json.loads(runner.invoke(app, [*base, "registry", "show", "buyers:1", "--json"]).output)
    assert (shown["evaluation"]["verdict"], shown["evaluation"]["report_sha256"]) == (
        "blessed",
        sha,
    )
    text = runner.invoke(app, [*base, "registry", "show", "buyers:1"]).output
    assert "blessed on" in text and sha[:12] in text.replace("\n", "")
    moved = runner.invoke(app, [*base, "registry", "alias", "buyers", "champion", "1"])
    assert moved.exit_code == 0, moved.output
    # A run an absolute gate vetoes: its version is published, but not as challenger.
    strict = (SPEC + GATES).replace("roc_auc = 0.6", "roc_auc = 0.999")
    bad = _train(world, "strict.toml", strict.replace("num_leaves = 8", "num_leaves = 4"))
    assert runner.invoke(app, [*base, "evaluate", bad, "--against", "none"]).exit_code == 3
    vetoed = runner.invoke(
        app, [*base, "registry", "publish", "--run", bad, "--alias", "challenger"]
    )
    assert isinstance(vetoed.exception, NotBlessed), vetoed.output
    assert "version 2 was vetoed" in str(vetoed.exception)
    assert "roc_auc" in str(vetoed.exception)
    forced = runner.invoke(
        app,
        [*base, "registry", "alias", "buyers", "challenger", "2", "--force", "--reason", "A/B"],
    )
    assert forced.exit_code == 0, forced.output
    history = json.loads(runner.invoke(app, [*base, "registry", "history", "--json"]).output)
    assert [(c["action"], c.get("forced")) for c in history if c["action"] != "publish"] == [
        ("evaluate", None), ("alias", None), ("evaluate", None), ("alias", True),
    ]  # fmt: skip
