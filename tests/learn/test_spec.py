"""Training specs: every wrong, missing or unused key is named with where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyre.errors import SpecError
from gyre.learn import load_spec, parse_spec
from gyre.learn._spec import ColumnLabel, EventLabel, EventRows, TableRows
from tests.learn.world import SPEC


def test_the_example_spec_reads_whole(tmp_path: Path) -> None:
    (tmp_path / "buyers.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "buyers.toml")
    assert (spec.name, spec.task, spec.seed) == ("buyers", "classification", 7)
    assert spec.model.family == "lightgbm" and spec.model.params["num_leaves"] == 8
    assert spec.rows == EventRows("visits")
    assert spec.label == EventLabel("purchases", None, "1h", 0)  # no field: 0 when none came
    assert spec.label.within_us == 3_600_000_000
    assert (spec.holdout, spec.validation) == (0.2, 0.1)
    assert len(spec.sha256) == 64 and spec.search == {}


def test_every_problem_is_named_at_once_with_its_line() -> None:
    text = """
[model]
name = "m"
task = "clasification"
family = "lightgbm"
seeed = 3

[features]
views = ["a"]

[rows]
event = "visits"

[label]
event = "purchases"
within = "1 hour"

[split]
holdout = 1.5
"""
    with pytest.raises(SpecError) as raised:
        parse_spec(text, Path("train/m.toml"))
    message = str(raised.value)
    assert "4 problems" in message
    assert (
        "train/m.toml:4: [model] `task`: must be one of classification, regression; "
        "did you mean `classification`?" in message
    )
    assert (
        "train/m.toml:6: [model] `seeed`: unknown key (nothing reads it); did you mean `seed`?"
        in message
    )
    assert "train/m.toml:16: [label] `within`: window '1 hour' must be" in message
    assert "train/m.toml:19: [split] `holdout`: must be a fraction in [0, 1), got 1.5" in message


def test_missing_tables_and_keys_are_named() -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec('[model]\nname = "m"\n', Path("m.toml"))
    message = str(raised.value)
    for expected in (
        "[model] `task`: missing; one of classification, regression",
        "[model] `family`: missing",
        "[features]: missing; add a [features] table",
        "[rows]: missing",
        "[label]: missing",
    ):
        assert expected in message


def test_an_unknown_top_level_table_is_configuration_debt() -> None:
    text = SPEC + "\n[serving]\nport = 1\n"
    with pytest.raises(SpecError, match=r"\[\] `serving`: unknown key \(nothing reads it\)"):
        parse_spec(text, Path("m.toml"))


def test_rows_from_a_table_with_a_column_label(tmp_path: Path) -> None:
    text = (
        SPEC.split("[rows]")[0].replace('views = ["activity"]', 'columns = ["a", "b"]')
        + """
[rows]
table = "labels.parquet"
time_column = "when"
time_unit = "ms"

[label]
column = "y"
known_at_column = "seen"
"""
    )
    spec = parse_spec(text, tmp_path / "m.toml")
    assert spec.rows == TableRows((tmp_path / "labels.parquet").resolve(), "when", "ms")
    assert spec.label == ColumnLabel("y", "seen")
    assert spec.columns == ("a", "b")


def test_rows_from_events_cannot_take_a_column_label_or_table_columns() -> None:
    text = SPEC.replace('views = ["activity"]', 'views = ["activity"]\ncolumns = ["x"]')
    text = text.replace('event = "purchases"\nwithin = "1h"', 'column = "y"')
    with pytest.raises(SpecError) as raised:
        parse_spec(text, Path("m.toml"))
    assert "only rows from a table have columns" in str(raised.value)
    assert "rows from events take their label from events" in str(raised.value)


def test_a_regression_label_from_events_needs_its_field() -> None:
    text = SPEC.replace('task = "classification"', 'task = "regression"')
    with pytest.raises(SpecError, match="a regression label needs the field"):
        parse_spec(text, Path("m.toml"))


def test_the_search_space_is_checked() -> None:
    text = (
        SPEC
        + """
[search]
learning_rate = {log_uniform = [0.01, 0.3]}
num_leaves = {int = [4, 64]}
boosting = {choice = ["gbdt", "dart"]}
drop_rate = {uniform = [0.0, 0.5], when = {boosting = "dart"}}
"""
    )
    spec = parse_spec(text, Path("m.toml"))
    assert spec.search["learning_rate"].kind == "log_uniform"
    assert spec.search["drop_rate"].when == {"boosting": "dart"}
    bad = (
        SPEC
        + """
[search]
lr = {log_uniform = [0, 1]}
depth = {int = [8, 2]}
x = {uniform = [0, 1], when = {nope = 1}}
y = {between = [1, 2]}
"""
    )
    with pytest.raises(SpecError) as raised:
        parse_spec(bad, Path("m.toml"))
    message = str(raised.value)
    assert "log_uniform needs low > 0" in message
    assert "int takes [low, high] with low < high" in message
    assert "`nope` is not a searched parameter" in message
    assert "give exactly one of choice, uniform, log_uniform, int" in message


def test_a_file_that_is_not_toml_or_not_there(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot be read"):
        load_spec(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[model\n")
    with pytest.raises(SpecError, match="is not valid TOML"):
        load_spec(tmp_path / "bad.toml")


def test_the_evaluate_table_names_every_wrong_gate_with_its_line() -> None:
    text = (
        SPEC
        + """
[evaluate]
threshold = "precision>=2"
confidence = 0.99

[evaluate.gates]
absolute = {roc_auc = 0.8, auc = 0.7}
change = {log_loss = -1}
baseline = ["roc_auc"]
cost = {p99_ms = 5}
latency = 3

[evaluate.slices]
columns = ["pages"]
min_rows = 0
"""
    )
    with pytest.raises(SpecError) as raised:
        parse_spec(text, Path("buyers.toml"))
    message = str(raised.value)
    assert "5 problems" in message
    assert "[evaluate] `threshold`" in message
    assert "`auc` is not a metric here" in message and "roc_auc" in message
    assert "`log_loss` must be a finite number" in message
    assert "[evaluate.gates] `latency`: unknown key" in message
    assert "[evaluate.slices] `min_rows`: must be a positive integer" in message
    line = text.splitlines().index("absolute = {roc_auc = 0.8, auc = 0.7}") + 1
    assert f"buyers.toml:{line}: [evaluate.gates] `absolute`" in message
    fixed = text.replace("precision>=2", "precision>=0.9").replace(", auc = 0.7", "")
    fixed = fixed.replace("-1", "0.01").replace("latency = 3\n", "")
    good = parse_spec(fixed.replace("min_rows = 0", "min_rows = 50"), Path("buyers.toml"))
    assert good.evaluate.absolute == {"roc_auc": 0.8} and good.evaluate.confidence == 0.99
    assert good.evaluate.slice_columns == ("pages",) and good.evaluate.cost == {"p99_ms": 5.0}


def test_leave_one_feature_out_in_the_evaluate_table_is_a_boolean() -> None:
    base = SPEC + "\n[evaluate]\n"
    with pytest.raises(SpecError, match="`leave_one_feature_out`: must be true or false"):
        parse_spec(base + 'leave_one_feature_out = "yes"\n', Path("buyers.toml"))
    with pytest.raises(SpecError, match="`leave_one_features_out`: unknown key"):
        parse_spec(base + "leave_one_features_out = true\n", Path("buyers.toml"))
    assert not parse_spec(SPEC, Path("buyers.toml")).evaluate.leave_one_feature_out
    on = parse_spec(base + "leave_one_feature_out = true\n", Path("buyers.toml"))
    assert on.evaluate.leave_one_feature_out
