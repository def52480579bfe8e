"""The docs' examples, run together as a reader combines them: the event type of
docs/collect.md under the view of docs/features.md, the view declared in Python as
docs/features.md shows, the README's Python (load the declared view, append events), and
a model trained on that view called by entity with the JSON of docs/features.md. Every
block is read from the markdown itself, so the docs cannot drift from what works."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from gyre.collect import SQLiteFactLog, event_types, parse_timestamp
from gyre.config import load_config
from gyre.features import FeatureView, feature_views, training_set
from gyre.registry import Registry
from tests.serve.apptest import AppClient

ROOT = Path(__file__).parent.parent


def blocks(page: str, language: str, containing: str = "") -> list[str]:
    """The fenced `language` blocks of `page` (a path from the repository root) that
    contain `containing`."""
    text = (ROOT / page).read_text()
    found = re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [block for block in found if containing in block]


def docs_config() -> str:
    """gyre.toml as a reader writes it from the two pages: the event type, then the view."""
    (event_type,) = blocks("docs/collect.md", "toml", "[collect.events.orders]")
    (view,) = blocks("docs/features.md", "toml", "[features.views.shop_orders]")
    return event_type + view


def test_the_event_type_and_the_view_of_the_docs_fit_together(tmp_path: Path) -> None:
    config_file = tmp_path / "gyre.toml"
    config_file.write_text(docs_config())
    config = load_config(home=tmp_path / "home", config_file=config_file)
    types = event_types(config.collect.events)
    view = feature_views(config.features.views, types)["shop_orders"]
    assert view.entity == types["orders"].entity
    # The same view in Python, as docs/features.md declares it there.
    (python,) = blocks("docs/features.md", "python", "FeatureView(")
    namespace: dict[str, Any] = {"orders": types["orders"]}
    exec(compile(python, "docs/features.md", "exec"), namespace)
    declared = namespace["view"]
    assert isinstance(declared, FeatureView) and declared.source is types["orders"]


def _readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the README's events-and-view example in a fresh folder holding the docs'
    gyre.toml, as a reader would; returns its variables."""
    (tmp_path / "gyre.toml").write_text(docs_config())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GYRE_HOME", raising=False)
    monkeypatch.delenv("GYRE_CONFIG", raising=False)
    (python,) = blocks("README.md", "python", "Collector(")
    namespace: dict[str, Any] = {}
    exec(compile(python, "README.md", "exec"), namespace)
    return namespace


def test_the_readme_loads_a_declared_view_and_appends_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = _readme(tmp_path, monkeypatch)
    assert ran["result"].accepted == 2 and ran["result"].rejected == []
    assert ran["config"].home == (tmp_path / ".gyre").resolve()
    (row,) = ran["rows"]
    assert row["count_events_10m"] == 2 and row["sum_amount_1h"] == 42.5
    np.testing.assert_allclose(ran["view"].matrix(ran["rows"]), [[2, 42.5, 11.25, 20.0, 12]])
    # What the README says it prints.
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "2 []" and printed[1].startswith("2 [[ 2.   42.5")
    # Run again: the same orders are retries, stored once.
    again = _readme(tmp_path, monkeypatch)
    assert (again["result"].accepted, again["result"].duplicates) == (0, 2)


def test_a_model_on_the_docs_view_answers_the_docs_entity_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = _readme(tmp_path, monkeypatch)
    config, view = ran["config"], ran["view"]
    log = SQLiteFactLog(tmp_path / ".gyre" / "facts.db")
    try:
        at = parse_timestamp("2026-12-01T12:06:00Z")
        queries = [
            {"shop": shop, "ts": at + minutes * 60_000_000, "basket": 5.0 * minutes, "label": 1}
            for shop in (17, 18)
            for minutes in range(4)
        ]
        rows = training_set(log, view, queries)
    finally:
        log.close()
    x = view.matrix(rows)
    model = make_pipeline(SimpleImputer(strategy="constant", fill_value=0.0), LinearRegression())
    model.fit(x, np.arange(len(rows), dtype=float))
    registry = Registry(config.home)
    registry.publish("shop-model", model, x, features=view)
    registry.close()
    client = AppClient(config)
    try:
        calls = [
            line
            for block in blocks("docs/features.md", "json", '"entity"')
            for line in block.splitlines()
            if line.strip()
        ]
        assert len(calls) == 2
        for call in calls:
            answer = client.post("/v2/models/shop-model/infer", json=json.loads(call))
            assert answer.status_code == 200, answer.text
            entities = json.loads(call)["parameters"]["entity"]
            rows_asked = len(entities) if isinstance(entities, list) else 1
            assert answer.json()["outputs"][0]["shape"][0] == rows_asked
    finally:
        client.close()


def test_the_control_planes_settings_in_docs_serving_load(tmp_path: Path) -> None:
    (block,) = [b for b in blocks("docs/serving.md", "toml", "[control]") if "[serve" not in b]
    config_file = tmp_path / "gyre.toml"
    config_file.write_text(block)
    control = load_config(home=tmp_path / "home", config_file=config_file).control
    assert control.url == "http://127.0.0.1:8002" and control.max_body_bytes == 1024 * 1024


def test_the_spec_of_docs_learn_trains_on_its_gyre_toml_and_is_reproduced(tmp_path: Path) -> None:
    from gyre.learn import load_spec, train_spec, verify_run
    from gyre.stores import Stores
    from tests.learn.world import fill

    (config_block,) = blocks("docs/learn.md", "toml", "[collect.events.visits]")
    (spec_block,) = blocks("docs/learn.md", "toml", "[model]")
    (tmp_path / "gyre.toml").write_text(config_block)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "buyers.toml").write_text(spec_block)
    config = load_config(home=tmp_path / "home", config_file=tmp_path / "gyre.toml")
    fill(config, users=30, hours=48)
    stores = Stores.from_config(config)
    spec = load_spec(tmp_path / "train" / "buyers.toml")
    assert set(spec.search) == {"learning_rate", "num_leaves", "boosting", "drop_rate"}
    result = train_spec(spec, config, stores)
    assert result.fitted.metrics["auc"] > result.fitted.baseline_metrics["auc"]
    assert verify_run(stores, config, result.run_id).reproduced


def test_monitor_md_drift_example_finds_the_feature_it_shifts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (example,) = blocks("docs/monitor.md", "python", "check_drift")
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/monitor.md", "exec"), namespace)
    assert namespace["report"].drifted == ["distance_km"]
    assert capsys.readouterr().out.startswith("['distance_km'] 0.25 False")
