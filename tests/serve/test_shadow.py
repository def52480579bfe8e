"""Shadow comparisons: the rule per output type (`_compare.py`) and what the server logs
and reports for a regression challenger and a classifier challenger."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge

from gyre.auth import hash_key
from gyre.monitor import FeedbackStore
from gyre.registry import CHAMPION, Registry
from gyre.serve._compare import Tolerance, compare
from tests.forced import UNBLESSED
from tests.serve.test_traffic import ADMIN_KEY, ROW, client_for, v2

TOLERANCE = Tolerance(abs=1e-6, rel=0.01)


def test_regression_values_agree_within_the_relative_tolerance() -> None:
    primary = {"variable": np.array([[10.0], [-2.0]], np.float32)}
    close = {"variable": np.array([[10.05], [-2.01]], np.float32)}
    result = compare(primary, close, TOLERANCE)
    assert result.agree
    assert result.max_abs_diff is not None and math.isclose(result.max_abs_diff, 0.05, rel_tol=1e-4)
    assert result.mean_abs_diff is not None
    assert math.isclose(result.mean_abs_diff, (0.05 + 0.01) / 2, rel_tol=1e-3)
    assert result.max_rel_diff is not None
    assert math.isclose(result.max_rel_diff, 0.05 / 10.05, rel_tol=1e-3)
    far = {"variable": np.array([[11.0], [-2.0]], np.float32)}
    assert not compare(primary, far, TOLERANCE).agree


def test_the_absolute_tolerance_covers_values_near_zero() -> None:
    primary = {"y": np.array([0.0, 1e-9], np.float64)}
    assert compare(primary, {"y": np.array([5e-7, 0.0])}, TOLERANCE).agree
    assert not compare(primary, {"y": np.array([1e-3, 0.0])}, TOLERANCE).agree
    zeros = compare(primary, {"y": np.array([0.0, 1e-9])}, TOLERANCE)
    assert zeros.agree and zeros.max_rel_diff == 0.0


def test_a_classifier_agrees_on_its_label_whatever_its_probabilities() -> None:
    primary = {"label": np.array([1, 2]), "probabilities": np.array([[0.1, 0.6, 0.3]] * 2)}
    moved = {"label": np.array([1, 2]), "probabilities": np.array([[0.2, 0.5, 0.3]] * 2)}
    result = compare(primary, moved, TOLERANCE)
    assert result.agree
    assert result.max_abs_diff is not None and math.isclose(result.max_abs_diff, 0.1)
    other = {"label": np.array([1, 0]), "probabilities": primary["probabilities"]}
    assert not compare(primary, other, TOLERANCE).agree


def test_strings_compare_as_text_and_non_finite_values_disagree() -> None:
    assert compare(
        {"label": np.array(["cat", "dog"], dtype=object)},
        {"label": np.array([b"cat", b"dog"], dtype=object)},
        TOLERANCE,
    ).agree
    nan = {"y": np.array([np.nan, 1.0])}
    assert compare(nan, {"y": np.array([np.nan, 1.0])}, TOLERANCE).agree
    result = compare(nan, {"y": np.array([0.0, 1.0])}, TOLERANCE)
    assert not result.agree and result.max_abs_diff == 0.0  # only the finite pair measured
    assert not compare({"y": np.array([np.inf])}, {"y": np.array([1.0])}, TOLERANCE).agree


def test_other_shapes_or_missing_outputs_disagree_with_the_reason() -> None:
    primary = {"y": np.zeros((2, 1))}
    assert compare(primary, {"y": np.zeros((2, 2))}, TOLERANCE).mismatch == (
        "output y has shape [2, 2], not [2, 1]"
    )
    missing = compare(primary, {"z": np.zeros((2, 1))}, TOLERANCE)
    assert not missing.agree and missing.mismatch == "the shadow gave no output y"


def _regressors(home: Path, iris: tuple, scale: float) -> Registry:
    """Version 1: a ridge regression; version 2 (`challenger`): the same model whose
    predictions are `scale` times version 1's."""
    x, y = iris
    registry = Registry(home)
    first = Ridge(alpha=1.0).fit(x, y.astype(float) + 1.0)
    second = Ridge(alpha=1.0).fit(x, y.astype(float) + 1.0)
    second.coef_ = second.coef_ * scale
    second.intercept_ = second.intercept_ * scale
    registry.publish("eta", first, x, alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish("eta", second, x, alias="challenger", force_alias=UNBLESSED)
    registry.set_policy("eta", "shadow", {"shadow": "challenger"})
    return registry


def _shadow_report(home: Path, requests: int) -> dict:
    client = client_for(
        home, f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN_KEY)}"\nadmin = true\n'
    )
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        for _ in range(requests):
            response = client.post("/v2/models/eta/infer", json=v2([ROW]), headers=auth)
            assert response.status_code == 200, response.text
            assert response.headers["gyre-model-version"] == "1"
        client.loop.run_until_complete(client.app.predictor.drain())
        report = client.get("/v1/admin/models/eta/shadow", headers=auth).json()
        report["metrics"] = client.get("/metrics").text
        return report
    finally:
        client.close()


def test_a_regression_challenger_within_tolerance_agrees_and_its_differences_are_reported(
    home: Path, iris: tuple
) -> None:
    _regressors(home, iris, scale=1.001)  # 0.1% apart: the same answer for a 1% tolerance
    report = _shadow_report(home, requests=5)
    (pair,) = report["summary"]
    assert (pair["primary_version"], pair["shadow_version"]) == (1, 2)
    assert (pair["comparisons"], pair["agree"], pair["disagree"]) == (5, 5, 0)
    assert 0 < pair["max_abs_diff"] < 0.01
    assert 0.0005 < pair["mean_rel_diff"] <= pair["max_rel_diff"] < 0.002
    row = report["comparisons"][0]
    assert row["agree"] == 1 and row["mismatch"] is None
    assert row["max_abs_diff"] > 0
    metrics = report["metrics"]
    assert 'gyre_shadow_comparisons_total{model="eta",result="agree"} 5.0' in metrics
    assert 'gyre_shadow_rel_diff_bucket{le="0.01",model="eta"} 5.0' in metrics
    assert 'gyre_shadow_rel_diff_bucket{le="0.0001",model="eta"} 0.0' in metrics


def test_a_regression_challenger_past_tolerance_disagrees(home: Path, iris: tuple) -> None:
    _regressors(home, iris, scale=1.2)
    report = _shadow_report(home, requests=3)
    (pair,) = report["summary"]
    assert (pair["agree"], pair["disagree"]) == (0, 3)
    assert 0.1 < pair["max_rel_diff"] < 0.2
    assert 'gyre_shadow_comparisons_total{model="eta",result="disagree"} 3.0' in report["metrics"]


def test_a_version_1_feedback_file_gains_the_difference_columns(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE shadow (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,"
        " model TEXT NOT NULL, primary_version INTEGER NOT NULL, shadow_version INTEGER NOT"
        " NULL, primary_answer TEXT NOT NULL, shadow_answer TEXT NOT NULL, agree INTEGER NOT"
        " NULL, at REAL NOT NULL);"
        "INSERT INTO shadow VALUES (1, 'r', 'eta', 1, 2, '{}', '{}', 1, 0.0);"
        "CREATE TABLE feedback (request_id TEXT PRIMARY KEY, model TEXT NOT NULL, version"
        " INTEGER NOT NULL, reward REAL NOT NULL, consumer TEXT, at REAL NOT NULL);"
        "PRAGMA user_version = 1;"
    )
    conn.close()
    store = FeedbackStore.open(path)

    async def scenario() -> None:
        (row,) = await store.shadow_rows("eta")
        assert row["agree"] == 1 and row["max_abs_diff"] is None
        assert json.loads(row["primary_answer"]) == {}
        (pair,) = await store.shadow_summary("eta")
        assert pair["comparisons"] == 1 and pair["measured"] == 0
        await store.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
