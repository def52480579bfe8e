"""Keras 3 on the torch backend: its own copy beside a TensorFlow-backed Keras in the same
process, digits, early stopping, schedules, and pickling through the `.keras` format."""

from __future__ import annotations

import pickle
import sys
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from gyre.learn import KerasMLP, make_trainer


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    x, y = load_digits(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, random_state=0, stratify=y_rest
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def test_keras_trains_on_torch_beside_a_tensorflow_keras_imported_before(
    digits: dict[str, Any],
) -> None:
    import keras  # the process's own Keras: TensorFlow, the default backend

    assert keras.backend.backend() == "tensorflow"
    model = KerasMLP(epochs=2).fit(*digits["train"])
    assert isinstance(model.model_, torch.nn.Module)  # a Keras model on the torch backend
    assert type(model.model_).__module__.startswith("keras.")
    assert sys.modules["keras"] is keras  # the process's Keras is back in place
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert type(dense(np.zeros((1, 3), np.float32))).__module__.startswith("tensorflow")


def test_an_mlp_in_keras_on_digits_reaches_95_percent_holdout_accuracy(
    digits: dict[str, Any],
) -> None:
    params = {"hidden": [128], "epochs": 30, "lr": 0.002}
    model = make_trainer("keras.mlp", "classification", params, seed=0)
    model.fit(*digits["train"], validation=digits["val"])
    x_test, y_test = digits["test"]
    assert np.mean(model.predict(x_test) == y_test) >= 0.95


def test_early_stopping_restores_the_best_epochs_weights(digits: dict[str, Any]) -> None:
    x_train, y_train = digits["train"]
    params = {"hidden": [256], "lr": 0.05, "epochs": 200, "patience": 4, "batch_size": 8}
    model = KerasMLP(**params).fit(x_train[:40], y_train[:40], validation=digits["val"])
    losses = [metrics["val_loss"] for metrics in model.history_]
    best = int(np.argmin(losses)) + 1
    assert len(losses) == best + 4 < 200
    assert model.best_epoch_ == best
    # The weights kept are the best epoch's: Keras' own val_loss (probabilities clipped to
    # [1e-7, 1 - 1e-7]) of the model is that epoch's.
    x_val, y_val = digits["val"]
    kept = np.clip(model.predict_proba(x_val)[np.arange(len(y_val)), y_val], 1e-7, 1 - 1e-7)
    assert -np.mean(np.log(kept)) == pytest.approx(losses[best - 1], rel=1e-4)
    assert -np.mean(np.log(kept)) < losses[-1]


def test_the_schedule_sets_the_optimizers_learning_rate(digits: dict[str, Any]) -> None:
    x_train, y_train = digits["train"]
    model = KerasMLP(lr=0.01, epochs=4, schedule="step", step_size=1, gamma=0.5)
    model.fit(x_train, y_train)
    assert [m["lr"] for m in model.history_] == pytest.approx([0.01, 0.005, 0.0025, 0.00125])


def test_a_pickled_trainer_carries_its_model_as_a_keras_file(digits: dict[str, Any]) -> None:
    x_train, y_train = digits["train"]
    x_test, _ = digits["test"]
    model = KerasMLP(epochs=2, dropout=0.1).fit(x_train, y_train)
    data = pickle.dumps(model)
    assert b"model.keras" not in data and b"PK\x03\x04" in data  # a zip: the .keras file
    loaded = pickle.loads(data)
    np.testing.assert_array_equal(loaded.predict_proba(x_test), model.predict_proba(x_test))
    assert loaded.get_params() == model.get_params()


def test_a_regression_target_is_put_back_in_its_units() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4))
    x[::9, 2] = np.nan
    y = 10_000.0 + 500.0 * x[:, 0] - 300.0 * x[:, 1]
    model = KerasMLP(task="regression", epochs=60, lr=0.01).fit(x, y)
    assert model.loss(x, y) < 0.01 * np.var(y)
