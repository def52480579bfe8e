"""A binary classifier's decision threshold: stored with its version (both backends),
checked before it is stored, and read back by one reader that refuses what it cannot use."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from gyre.errors import InvalidModel, ModelNotFound
from gyre.registry import Registry, decision_of
from gyre.registry._decision import check_decision
from gyre.stores import Stores
from gyre.types import Signature, TensorSpec

RNG = np.random.default_rng(3)
X = RNG.normal(size=(200, 3))
Y = (X[:, 0] + 0.5 * RNG.normal(size=200) > 0).astype(int)


@pytest.fixture(scope="module")
def binary() -> LogisticRegression:
    return LogisticRegression().fit(X, Y)


@pytest.fixture
def shared(stores: Stores) -> Iterator[Registry]:
    """A registry on each backend (SQLite under the home, PostgreSQL)."""
    registry = Registry(stores)
    yield registry
    registry.close()


def test_a_threshold_set_on_a_version_is_stored_with_it_and_logged(
    shared: Registry, binary: LogisticRegression
) -> None:
    mv = shared.publish("churn", binary, X)
    assert (mv.decision, mv.decision_threshold) == (None, None)
    updated = shared.set_decision_threshold("churn", 1, 0.83, reason="F1 on May")
    assert updated.decision == {"threshold": 0.83, "classes": [0, 1]}
    assert updated.decision_threshold == 0.83
    (listed,) = shared.versions("churn")
    assert listed.decision_threshold == 0.83
    assert shared.snapshot().versions[0].decision == updated.decision
    change = shared.changes("churn")[-1]
    assert (change["action"], change["version"], change["why"]) == ("decision", 1, "F1 on May")
    assert change["decision"] == {"threshold": 0.83, "classes": [0, 1]}
    cleared = shared.set_decision_threshold("churn", 1, None, reason="back to 0.5")
    assert (cleared.decision, cleared.decision_threshold) == (None, None)
    assert shared.changes("churn")[-1]["decision"] is None


def test_a_threshold_given_at_publish_is_in_the_new_versions_record(
    shared: Registry, binary: LogisticRegression
) -> None:
    mv = shared.publish("churn", binary, X, decision_threshold=0.3)
    assert mv.decision == {"threshold": 0.3, "classes": [0, 1]}
    (publish,) = shared.changes("churn")
    assert publish["action"] == "publish" and publish["decision"] == mv.decision
    # The same content again, with a threshold learned again: that version takes it.
    again = shared.publish("churn", binary, X, decision_threshold=0.4)
    assert (again.version, again.reused, again.decision_threshold) == (1, True, 0.4)
    assert shared.changes("churn")[-1]["why"] == "set at publish"
    # Without one, a publish leaves the version's threshold as it is.
    assert shared.publish("churn", binary, X).decision_threshold == 0.4


def test_string_classes_come_from_the_native_model(registry: Registry) -> None:
    model = LogisticRegression().fit(X, np.where(Y == 1, "churns", "stays"))
    mv = registry.publish("churn", model, X, decision_threshold=0.7)
    assert mv.decision == {"threshold": 0.7, "classes": ["churns", "stays"]}


def test_an_onnx_version_gets_its_classes_from_the_graph(
    registry: Registry, binary: LogisticRegression
) -> None:
    model = LogisticRegression().fit(X, Y + 3)  # classes 3 and 4
    exported = registry.publish("native", model, X)
    onnx_bytes = registry.artifact(exported)
    registry.publish_onnx("graph", onnx_bytes)
    assert registry.set_decision_threshold("graph", 1, 0.6).decision == {
        "threshold": 0.6,
        "classes": [3, 4],
    }


def test_a_graph_that_names_no_classes_needs_them_given(registry: Registry) -> None:
    model = KNeighborsClassifier().fit(X, Y)
    exported = registry.publish("native", model, X)
    registry.publish_onnx("knn", registry.artifact(exported))
    with pytest.raises(InvalidModel, match=r"cannot tell its classes.*classes=\[NEGATIVE"):
        registry.set_decision_threshold("knn", 1, 0.6)
    with pytest.raises(InvalidModel, match="holds integers that fit int64; class 'no' is not one"):
        registry.set_decision_threshold("knn", 1, 0.6, classes=["no", "yes"])
    with pytest.raises(InvalidModel, match="the two classes must differ"):
        registry.set_decision_threshold("knn", 1, 0.6, classes=[1, 1])
    mv = registry.set_decision_threshold("knn", 1, 0.6, classes=[0, 1])
    assert mv.decision == {"threshold": 0.6, "classes": [0, 1]}
    # The native model's version reads them off its classes_.
    assert registry.set_decision_threshold("native", 1, 0.6).decision_threshold == 0.6


@pytest.mark.parametrize(
    ("threshold", "match"),
    [
        (0.0, "strictly between 0 and 1"),
        (1.0, "strictly between 0 and 1"),
        (-0.2, "strictly between 0 and 1"),
        (math.nan, "strictly between 0 and 1"),
        (math.inf, "strictly between 0 and 1"),
        (True, "must be a number between 0 and 1, not True"),
        ("0.5", "must be a number between 0 and 1, not '0.5'"),
    ],
)
def test_a_threshold_outside_zero_to_one_is_refused(
    registry: Registry, binary: LogisticRegression, threshold: object, match: str
) -> None:
    registry.publish("churn", binary, X)
    with pytest.raises(InvalidModel, match=match):
        registry.set_decision_threshold("churn", 1, threshold)  # type: ignore[arg-type]
    with pytest.raises(InvalidModel, match=match):
        registry.publish("churn", binary, X, decision_threshold=threshold)  # type: ignore[arg-type]
    assert registry.versions("churn")[0].decision is None
    assert [c["action"] for c in registry.changes("churn")] == ["publish"]


def test_only_binary_classifiers_take_a_threshold(
    registry: Registry, iris_classifier: Pipeline, iris_regressor: object, iris: tuple
) -> None:
    registry.publish("iris", iris_classifier, iris[0])
    registry.publish("ridge", iris_regressor, iris[0])
    with pytest.raises(InvalidModel, match=r"not a binary classifier: .*FP32 \[-1, 3\]"):
        registry.set_decision_threshold("iris", 1, 0.5)
    with pytest.raises(InvalidModel, match="is not a classifier with outputs `label` and"):
        registry.set_decision_threshold("ridge", 1, 0.5)
    with pytest.raises(InvalidModel, match="this Pipeline has 3 classes"):
        registry.publish("iris", iris_classifier, iris[0], decision_threshold=0.5)
    with pytest.raises(InvalidModel, match="a Ridge has no classes_ and predict_proba"):
        registry.publish("ridge", iris_regressor, iris[0], decision_threshold=0.5)
    assert [len(registry.versions(m)) for m in ("iris", "ridge")] == [1, 1]


def test_a_missing_version_is_not_found(registry: Registry, binary: LogisticRegression) -> None:
    registry.publish("churn", binary, X)
    with pytest.raises(ModelNotFound, match="model `churn` version 2 does not exist"):
        registry.set_decision_threshold("churn", 2, 0.5)
    registry.publish("churn", binary, X, force_new=True)
    registry.delete_version("churn", 2)
    with pytest.raises(ModelNotFound, match="version 2 is deleted"):
        registry.set_decision_threshold("churn", 2, 0.5)


def test_a_stored_record_the_reader_refuses_is_reported_never_applied(
    home: Path, registry: Registry, binary: LogisticRegression
) -> None:
    registry.publish("churn", binary, X)
    bad = [
        ({"threshold": 7, "classes": [0, 1]}, "strictly between 0 and 1"),
        ({"threshold": 0.5, "classes": [0]}, "needs the two classes"),
        ({"threshold": 0.5, "classes": ["a", "b"]}, "class 'a' is not one"),
        ({"threshold": 0.5}, "must be"),
        ([0.5], "must be"),
    ]
    for stored, match in bad:
        registry.metadata.set_decision("churn", 1, stored, reason="by hand")  # type: ignore[arg-type]
        mv = registry.versions("churn")[0]
        decision, problem = decision_of(mv)
        assert (decision, mv.decision_threshold) == (None, None)
        assert problem is not None and match in problem, problem
    with sqlite3.connect(home / "registry.db") as conn:  # not even JSON
        conn.execute("UPDATE versions SET decision = '{0.5' WHERE model = 'churn'")
    conn.close()
    mv = registry.versions("churn")[0]
    assert mv.decision == "{0.5" and mv.decision_threshold is None
    assert "must be" in str(decision_of(mv)[1])


def test_the_threshold_relabels_from_the_positive_probability() -> None:
    signature = Signature(
        (TensorSpec("X", "FP32", (-1, 3)),),
        (TensorSpec("label", "BYTES", (-1, 1)), TensorSpec("probabilities", "FP32", (-1, 2))),
    )
    decision = check_decision({"threshold": 0.7, "classes": ["no", "yes"]}, signature, "m")
    probabilities = np.array([[0.5, 0.5], [0.2, 0.8], [0.3, 0.7]], dtype=np.float32)
    probabilities.flags.writeable = False  # a cached answer is read-only
    label = np.array([["yes"], ["no"], ["no"]], dtype=object)
    out = decision.apply({"label": label, "probabilities": probabilities})
    # float32 0.7 is 0.699999988: compared in float64 it is below the threshold 0.7.
    assert out["label"].tolist() == [["no"], ["yes"], ["no"]]
    assert out["label"].dtype == object and out["probabilities"] is probabilities
    assert label.tolist() == [["yes"], ["no"], ["no"]]  # the model's own answer, untouched
    exact = decision.apply({"label": label, "probabilities": np.array([[0.3, 0.7]])})
    assert exact["label"].tolist() == [["yes"]]  # at the threshold: the positive class
