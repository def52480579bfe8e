"""The quick-start model: a classifier on scikit-learn's bundled breast-cancer data set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QuickstartModel:
    model: Any
    sample: np.ndarray
    feature_names: tuple[str, ...]
    test_rows: np.ndarray
    lineage: dict[str, Any]


def train_quickstart_model(seed: int = 0) -> QuickstartModel:
    """Fit a scaled logistic regression on 75% of the data; report accuracy on the rest."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )
    params = {"C": 1.0, "max_iter": 1000}
    model = make_pipeline(StandardScaler(), LogisticRegression(**params)).fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))
    return QuickstartModel(
        model=model,
        sample=x_train,
        feature_names=tuple(str(n) for n in data.feature_names),
        test_rows=x_test,
        lineage={
            "dataset": "sklearn.datasets.load_breast_cancer",
            "split": {"test_size": 0.25, "random_state": seed},
            "params": params,
            "metrics": {"test_accuracy": round(accuracy, 4)},
        },
    )
