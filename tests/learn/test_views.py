"""Training on a feature view: the model learns, and the run records what it learned from."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from gyre.collect import SQLiteFactLog
from gyre.errors import InvalidFeatureInput
from gyre.features import Aggregation, FeatureView
from gyre.learn import train_on_view
from tests.features.test_conformance import MINUTE, ORDERS, order

VIEW = FeatureView(
    "busy", ORDERS, (Aggregation("count", None, "1h"), Aggregation("mean", "amount", "1h"))
)


def test_a_model_learns_from_a_view_and_records_its_lineage(tmp_path: Path) -> None:
    log = SQLiteFactLog(tmp_path / "facts.db")
    rng = random.Random(0)
    # Shop 1 is busy, shop 2 quiet: the label says which, the count feature can tell.
    log.append([(ORDERS, [order(i, rng.uniform(0, 600), shop=1 + (i % 10 == 0))
                          for i in range(2000)])])  # fmt: skip
    rows = [{"shop": s, "ts": rng.randrange(60, 600) * MINUTE, "label": int(s == 1)}
            for s in (rng.choice([1, 2]) for _ in range(400))]  # fmt: skip
    trained = train_on_view(log, VIEW, rows)
    lineage = trained.lineage
    assert lineage["feature_definition_hash"] == VIEW.definition_hash
    assert lineage["fact_log_watermark"] == 2000
    assert lineage["metrics"]["train_rows"] == 300 and lineage["metrics"]["test_score"] > 0.95
    assert trained.sample.shape == (300, 2)
    log.append([(ORDERS, [order(5000, 100, shop=2)])])
    again = train_on_view(log, VIEW, rows, estimator=LogisticRegression())
    assert again.lineage["fact_log_watermark"] == 2001
    assert again.lineage["estimator"] == "LogisticRegression"
    with pytest.raises(InvalidFeatureInput, match="have no `label` column"):
        train_on_view(log, VIEW, [{"shop": 1, "ts": 0}])
    log.close()
