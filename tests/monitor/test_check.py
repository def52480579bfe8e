"""`gyre monitor check`: the inputs a version was served, read back from the prediction log,
against the input profile its run took of the training rows. End to end: a run of `gyre
train`, published from the run, served over HTTP by the real app, checked from the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from gyre.cli._main import app
from gyre.config import load_config
from gyre.errors import MonitorError
from gyre.learn import load_spec, run_profile, train_spec
from gyre.learn._verify import rebuilt_data
from gyre.monitor import InputProfile, check_inputs, input_profile
from gyre.stores import Stores
from tests.learn.world import SPEC, fill, write_world
from tests.serve.apptest import AppClient


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, np.ndarray]:
    """A world, its run published as `buyers` version 1, and 500 of its training rows
    drawn at random (its time-ordered holdout has drifted from them: the world's counts
    grow as its log fills)."""
    world = tmp_path_factory.mktemp("check")
    config = write_world(world)
    fill(config, users=60, hours=96)
    (world / "buyers.toml").write_text(SPEC)
    stores = Stores.from_config(config)
    run = train_spec(load_spec(world / "buyers.toml"), config, stores).run_id
    published = CliRunner().invoke(app, [*_base(world), "registry", "publish", "buyers",
                                         "--run", run])  # fmt: skip
    assert published.exit_code == 0, published.output
    _, data = rebuilt_data(stores, config, run)
    picked = np.random.default_rng(0).choice(data.train, size=500, replace=False)
    return world, run, data.x[picked]


def _base(world: Path) -> list[str]:
    return ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]


def _serve(world: Path, rows: np.ndarray, version: str = "1") -> None:
    client = AppClient(load_config(world / ".gyre", world / "gyre.toml"))
    try:
        name = client.get(f"/v2/models/buyers/versions/{version}").json()["inputs"][0]["name"]
        for batch in np.array_split(rows, max(1, len(rows) // 25)):
            tensor = {"name": name, "datatype": "FP32", "shape": list(batch.shape),
                      "data": np.nan_to_num(batch, nan=0.0).ravel().tolist()}  # fmt: skip
            answer = client.post(f"/v2/models/buyers/versions/{version}/infer",
                                 json={"inputs": [tensor]})  # fmt: skip
            assert answer.status_code == 200, answer.text
    finally:
        client.close()


def _check(world: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, [*_base(world), "monitor", "check", "buyers:1", "--json",
                                      *extra])  # fmt: skip
    assert result.exit_code in (0, 3), result.output
    return result.exit_code, json.loads(result.output)


def test_the_run_takes_an_input_profile_of_its_training_rows(
    served: tuple[Path, str, np.ndarray],
) -> None:
    world, run, _ = served
    config = load_config(world / ".gyre", world / "gyre.toml")
    stores = Stores.from_config(config)
    profile = run_profile(stores, run)
    assert profile is not None
    _, data = rebuilt_data(stores, config, run)
    assert profile.features == data.feature_names
    assert profile.rows == len(data.train)
    again = InputProfile.from_bytes(profile.as_bytes())  # stored and read back whole
    assert again.as_record() == profile.as_record()


def test_no_records_yet_is_healthy_and_says_so(served: tuple[Path, str, np.ndarray]) -> None:
    world, _, _ = served
    code, found = _check(world)
    assert (code, found["records"], found["rows"], found["dataset_drift"]) == (0, 0, 0, None)
    assert found["alerts"] == []
    # Staleness needs no records: shown, not stored (--no-record).
    stale = CliRunner().invoke(app, [*_base(world), "monitor", "check", "buyers:1",
                                     "--max-data-age", "1d", "--no-record"])  # fmt: skip
    assert stale.exit_code == 3 and "no inputs to check" in stale.output
    assert "alert (not recorded): staleness: stale: data" in stale.output


def test_served_rows_like_the_training_rows_are_healthy_and_shifted_ones_drift(
    served: tuple[Path, str, np.ndarray],
) -> None:
    world, _, holdout = served
    _serve(world, holdout)
    code, found = _check(world)
    assert found["records"] > 0 and found["rows"] == len(holdout)
    assert found["dataset_drift"] is False, found["features"]
    assert code == 0 and found["healthy"]
    shifted = np.nan_to_num(holdout, nan=0.0) * 3.0 + 10.0  # every feature moves
    _serve(world, shifted)
    code, found = _check(world, "--last", str(max(1, len(holdout) // 25)))
    assert code == 3 and found["dataset_drift"] and not found["healthy"]
    assert {f["feature"] for f in found["features"] if f["drifted"]} == set(
        f["feature"] for f in found["features"]
    )
    assert any(v["rule"] == "out_of_range" for v in found["violations"])
    # What fired is an alert in the fact log, once: the same window checked again is the
    # same alert.
    assert [(a["detector"], a["new"]) for a in found["alerts"]] == [
        ("drift", True), ("invariants", True)
    ]  # fmt: skip
    shown = CliRunner().invoke(app, [*_base(world), "monitor", "check", "buyers:1", "--last",
                                     str(max(1, len(holdout) // 25))])  # fmt: skip
    assert shown.exit_code == 3 and "DATASET DRIFT" in shown.output
    assert "alert (already recorded): drift: dataset drift" in shown.output
    listed = CliRunner().invoke(app, [*_base(world), "monitor", "alerts", "buyers", "--json"])
    assert [(a["detector"], a["version"]) for a in json.loads(listed.output)] == [
        ("invariants", 1), ("drift", 1)
    ]  # fmt: skip
    status = CliRunner().invoke(app, [*_base(world), "monitor", "status", "--json"])
    (buyers,) = [row for row in json.loads(status.output) if row["model"] == "buyers"]
    assert buyers["health"] == "alert" and buyers["latest_alert"]["detector"] == "invariants"
    assert buyers["trained_until"] is not None and buyers["model_age_s"] >= 0
    table = CliRunner().invoke(app, [*_base(world), "monitor", "status"])
    assert table.exit_code == 0 and "buyers" in table.output


def test_a_version_not_made_by_a_run_is_refused(
    served: tuple[Path, str, np.ndarray], tmp_path: Path
) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    world, _, holdout = served
    x = np.nan_to_num(holdout, nan=0.0).astype(np.float32)
    joblib.dump(LogisticRegression().fit(x, x[:, 0] > x[:, 0].mean()), tmp_path / "m.joblib")
    np.save(tmp_path / "rows.npy", x[:10])
    args = [*_base(world), "registry", "publish", "hand", str(tmp_path / "m.joblib"),
            "--sample", str(tmp_path / "rows.npy")]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    refused = CliRunner().invoke(app, [*_base(world), "monitor", "check", "hand:1"])
    assert "not published from a run of `gyre train`" in str(refused.exception)


def test_a_profile_is_checked_whole_and_a_broken_one_refused() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5_000, 3))
    profile = input_profile(("a", "b", "c"), rows)
    same = check_inputs(profile, rng.normal(size=(2_000, 3)))
    assert same.healthy and same.drift is not None and not same.drift.drifted
    assert check_inputs(profile, np.zeros((0, 3))).drift is None
    record = profile.as_record()
    for broken, message in [
        ({**record, "profile_version": 9}, "not one this gyre reads"),
        ({**record, "features": ["a", "b"]}, "name other features"),
        ({**record, "rows": -1}, "must be a count"),
        ({**record, "schema": None}, "needs lists"),
        ({**record, "features": [], "references": [], "schema": []}, "names no feature"),
        ([], "a JSON object"),
    ]:
        with pytest.raises(MonitorError, match=message):
            InputProfile.from_record(broken)
    with pytest.raises(MonitorError, match="not JSON"):
        InputProfile.from_bytes(b"\xff{")
    with pytest.raises(MonitorError, match="not JSON"):  # was a RecursionError
        InputProfile.from_bytes(b"[" * 200_000)
    # A feature no training row has a value of: a schema (its missing share), no reference.
    rows[:, 1] = np.nan
    empty = input_profile(("a", "b", "c"), rows)
    assert [r.feature for r in empty.references] == ["a", "c"]
    assert InputProfile.from_bytes(empty.as_bytes()).features == ("a", "b", "c")
    # A window whose feature has no value left drifts by definition; infinities are the
    # invariants' to report, not an error of the check.
    window = rng.normal(size=(2_000, 3))
    window[:, 0], window[0, 2] = np.nan, np.inf
    found = check_inputs(empty, window)
    assert found.drift is not None
    assert [(f.feature, f.method, f.drifted) for f in found.drift.features] == [
        ("a", "all_missing", True), ("c", "wasserstein", False)
    ]  # fmt: skip
    assert {(v.feature, v.rule) for v in found.violations} >= {("a", "missing"),
                                                               ("c", "non_finite")}  # fmt: skip


def test_stale_models_and_data_and_non_finite_outputs_alert(
    served: tuple[Path, str, np.ndarray],
) -> None:
    import asyncio

    from gyre.monitor import PredictionLog

    world, _, rows = served
    _, fresh = _check(world, "--max-model-age", "3650d", "--max-data-age", "3650000d")
    assert not [a for a in fresh["alerts"] if a["detector"] == "staleness"]
    assert fresh["model_age_s"] >= 0 and fresh["data_age_s"] > 0
    # The world's rows are from long before today: its data is older than a day.
    code, stale = _check(world, "--max-data-age", "1d")
    (alert,) = [a for a in stale["alerts"] if a["detector"] == "staleness"]
    assert code == 3 and alert["summary"].startswith("stale: data ")
    code, slow = _check(world, "--slo-p99-ms", "0.000001", "--max-default-ratio", "1")
    (alert,) = [a for a in slow["alerts"] if a["detector"] == "slo"]
    assert code == 3 and "p99_ms" in alert["summary"] and "default_ratio" not in alert["summary"]
    assert slow["p99_latency_ms"] > 0 and slow["default_records"] == 0
    bad = CliRunner().invoke(app, [*_base(world), "monitor", "check", "buyers:1",
                                   "--max-model-age", "3w"])  # fmt: skip
    assert bad.exit_code == 2 and "is not a duration" in bad.output
    for extra in (["--webhook", "http://[::1/"], ["--webhook", "https://a.example/h",
                                                  "--no-record"]):  # fmt: skip
        refused = CliRunner().invoke(app, [*_base(world), "monitor", "check", "buyers:1", *extra])
        assert refused.exit_code == 2, refused.output  # before any alert is stored

    async def answer_nan() -> None:  # an answer with a NaN output, through the log's writer
        path = Stores.from_config(load_config(world / ".gyre", world / "gyre.toml"))
        log = PredictionLog.open(path.prediction_log_path, max_records=10**6, buffer_bytes=1 << 20)
        x = {"x": np.nan_to_num(rows[:1], nan=0.0).astype(np.float32)}
        log.record("r-nan", "buyers", 1, "pinned", "v2", "", x,
                   {"probabilities": np.array([[np.nan, np.nan]], np.float32)}, 0.001)  # fmt: skip
        await log.close()

    asyncio.run(answer_nan())
    code, found = _check(world, "--last", "5")
    assert found["non_finite_output_records"] == 1
    assert code == 3 and [a["detector"] for a in found["alerts"]].count("outputs") == 1
