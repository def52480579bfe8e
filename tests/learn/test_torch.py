"""The PyTorch trainers on scikit-learn's digits, and what their training loop promises:
early stopping that keeps the best epoch, learning-rate schedules, training-set medians for
NaN, regression targets in their own units, and the caller's torch state left alone."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from gyre.errors import LearnError, SpecError
from gyre.learn import TorchCNN, TorchMLP, check_params, make_trainer


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    """A stratified holdout of a quarter of the digits, and a validation split of the rest."""
    x, y = load_digits(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, random_state=0, stratify=y_rest
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def test_an_mlp_on_digits_reaches_95_percent_holdout_accuracy(digits: dict[str, Any]) -> None:
    model = make_trainer("torch.mlp", "classification", {"hidden": [128], "epochs": 40}, seed=0)
    model.fit(*digits["train"], validation=digits["val"])
    x_test, y_test = digits["test"]
    assert np.mean(model.predict(x_test) == y_test) >= 0.95
    assert isinstance(model.model_, torch.nn.Module)


def test_a_cnn_on_digits_beats_chance_by_far(digits: dict[str, Any]) -> None:
    params = {"image_shape": [1, 8, 8], "channels": [8, 16], "hidden": [], "epochs": 8}
    model = make_trainer("torch.cnn", "classification", params, seed=0)
    model.fit(*digits["train"], validation=digits["val"])
    x_test, y_test = digits["test"]
    assert np.mean(model.predict(x_test) == y_test) >= 0.9  # chance: 0.1
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.model_.modules())


def test_early_stopping_stops_after_patience_and_keeps_the_best_epoch(
    digits: dict[str, Any],
) -> None:
    x_train, y_train = digits["train"]
    # Forty rows and a large step: the validation loss soon climbs while training goes on.
    params = {"hidden": [256], "lr": 0.05, "epochs": 200, "patience": 4, "batch_size": 8}
    model = TorchMLP(**params).fit(x_train[:40], y_train[:40], validation=digits["val"])
    losses = [metrics["val_loss"] for metrics in model.history_]
    best = int(np.argmin(losses)) + 1
    assert len(losses) == best + 4 < 200
    assert model.best_epoch_ == best
    # The weights kept are the best epoch's, not the last one's.
    assert model.loss(*digits["val"]) == pytest.approx(losses[best - 1], rel=1e-6)
    assert model.loss(*digits["val"]) < losses[-1]


def test_without_validation_every_epoch_runs_and_the_last_weights_stay(
    digits: dict[str, Any],
) -> None:
    x_train, y_train = digits["train"]
    model = TorchMLP(epochs=7, patience=1).fit(x_train, y_train)
    assert len(model.history_) == 7 and model.best_epoch_ == 7
    assert all(set(m) == {"loss", "lr"} for m in model.history_)


@pytest.mark.parametrize(
    ("schedule", "extra", "expected"),
    [
        ("none", {}, [0.01] * 6),
        ("cosine", {}, [0.01 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)]),
        ("step", {"step_size": 2, "gamma": 0.5}, [0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025]),
    ],
)
def test_the_schedule_sets_each_epochs_learning_rate(
    digits: dict[str, Any], schedule: str, extra: dict[str, Any], expected: list[float]
) -> None:
    x_train, y_train = digits["train"]
    model = TorchMLP(lr=0.01, epochs=6, schedule=schedule, **extra).fit(x_train, y_train)
    assert [m["lr"] for m in model.history_] == pytest.approx(expected)


def test_the_schedule_changes_what_is_learned(digits: dict[str, Any]) -> None:
    x_train, y_train = digits["train"]
    flat = TorchMLP(lr=0.01, epochs=4).fit(x_train, y_train)
    cosine = TorchMLP(lr=0.01, epochs=4, schedule="cosine").fit(x_train, y_train)
    assert flat.history_[0] == cosine.history_[0]  # the same first epoch, at the same rate
    assert flat.history_[-1]["loss"] != cosine.history_[-1]["loss"]


def test_sgd_with_momentum_trains_too(digits: dict[str, Any]) -> None:
    x_train, y_train = digits["train"]
    params = {"optimizer": "sgd", "momentum": 0.9, "lr": 0.05, "epochs": 10}
    model = make_trainer("torch.mlp", "classification", params, seed=0).fit(x_train, y_train)
    x_test, y_test = digits["test"]
    assert np.mean(model.predict(x_test) == y_test) >= 0.9


def test_missing_values_become_the_training_medians() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(int)
    x[::7, 1] = np.nan
    model = TorchMLP(epochs=3).fit(x, y)
    medians = np.nanmedian(x, axis=0).astype(np.float32)
    np.testing.assert_array_equal(model.model_.prepare.median.numpy(), medians)
    row = np.array([[0.5, np.nan, -1.0]])
    filled = np.array([[0.5, medians[1], -1.0]])
    np.testing.assert_array_equal(model.predict_proba(row), model.predict_proba(filled))


def test_a_regression_target_is_learned_in_its_own_units() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4))
    y = 10_000.0 + 500.0 * x[:, 0] - 300.0 * x[:, 1]
    model = TorchMLP(task="regression", epochs=60, lr=0.01).fit(x, y)
    assert model.loss(x, y) < 0.01 * np.var(y)
    assert model.history_[-1]["loss"] == pytest.approx(model.loss(x, y), rel=0.5)


def test_fit_leaves_the_callers_torch_generator_and_threads_as_they_were(
    digits: dict[str, Any],
) -> None:
    x_train, y_train = digits["train"]
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    TorchMLP(epochs=2, dropout=0.2).fit(x_train, y_train)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_a_diverging_fit_says_to_lower_the_learning_rate() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)) * 1e3
    y = x[:, 0] * 1e3
    model = TorchMLP(task="regression", optimizer="sgd", lr=1e6, epochs=5, batch_size=8)
    with pytest.raises(LearnError, match=r"training diverged in epoch .*; lower `lr`"):
        model.fit(x, y)
    assert not hasattr(model, "model_")


def test_a_cnn_needs_an_image_shape_that_holds_the_row(digits: dict[str, Any]) -> None:
    x_train, y_train = digits["train"]
    (problem,) = check_params("torch.cnn", "classification", {})
    assert problem.startswith("parameter `image_shape` of `torch.cnn` is required")
    with pytest.raises(SpecError, match=r"torch\.cnn needs `image_shape`"):
        TorchCNN().fit(x_train, y_train)
    with pytest.raises(LearnError, match=r"image_shape \[1, 4, 4\] holds 16 values, but the rows"):
        TorchCNN(image_shape=[1, 4, 4]).fit(x_train, y_train)


def test_wrong_parameters_are_named_with_what_they_take() -> None:
    problems = check_params(
        "torch.mlp",
        "classification",
        {"optimizer": "rmsprop", "hidden": [0], "dropout": 1.0, "momentum": 0.5, "gamma": 0.5},
    )
    assert problems == [
        'parameter `optimizer` of `torch.mlp` must be one of "adam", "sgd", not \'rmsprop\'',
        "parameter `hidden` of `torch.mlp` must be a list of positive integers, not [0]",
        "parameter `dropout` of `torch.mlp` must be a number in [0, 1), not 1.0",
        'parameter `momentum` of `torch.mlp` is used by optimizer "sgd" only; remove it or set '
        'optimizer = "sgd"',
        'parameter `gamma` of `torch.mlp` is used by schedule "step" only; remove it or set '
        'schedule = "step"',
    ]
    with pytest.raises(SpecError, match=r"parameter `epochs` of `torch\.mlp` must be a positive"):
        TorchMLP(epochs=0).fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_validation_labels_the_training_rows_lack_are_refused() -> None:
    x = np.random.default_rng(3).normal(size=(20, 2))
    with pytest.raises(
        LearnError, match="the validation labels include 2, which no training row has"
    ):
        TorchMLP(epochs=1).fit(x, [0, 1] * 10, validation=(x, [0, 2] * 10))
