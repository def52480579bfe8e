"""One suite over every trainer of every family and task in `gyre.learn.FAMILIES`: the
estimator contract, reproducibility from the seed, that one step of training lowers the loss,
that a tiny set can be learned by heart, that Ctrl-C in `on_epoch` stops fit, and that
`check_params` catches a typo with a suggestion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone

from gyre.errors import LearnError, SpecError
from gyre.learn import FAMILIES, check_params, family_names, make_trainer

LABELS = np.array(["ant", "bee", "cat"])
FEATURES = 16  # a 1 x 4 x 4 image for torch.cnn


@dataclass(frozen=True)
class Case:
    """How each check exercises one family on one task."""

    family: str
    task: str
    params: dict[str, Any]  # small and fast: every check starts from these
    step: dict[str, Any]  # what makes fit one gradient step or one boosting round
    overfit: dict[str, Any] | None  # what learns 12 rows by heart; None: a constant baseline
    typo: tuple[str, str]  # (a misspelt parameter, the parameter check_params suggests)
    seeded: bool = False  # whether another seed gives another model on the same rows
    epochs: bool = False  # reports several epochs or rounds (else one, after a one-shot fit)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.family}-{self.task[:3]}"


NET = {"hidden": [16], "epochs": 3, "batch_size": 32}
NET_STEP = {"epochs": 1, "batch_size": 1000, "lr": 0.01}  # one batch: one step
NET_OVERFIT = {"hidden": [64], "epochs": 300, "batch_size": 12, "lr": 0.01}
CNN = {"image_shape": [1, 4, 4], "channels": [4], "hidden": [], "epochs": 3, "batch_size": 32}
# Leaves hold their own training rows: the training loss of a split is never above the
# constant model's (conditional entropy, within-leaf variance), and strictly below for a
# split that separates anything.
TREE_STEP = {"n_estimators": 1, "max_depth": 2, "bootstrap": False}
LGBM_TINY = {"min_child_samples": 1, "min_data_in_bin": 1, "min_child_weight": 1e-5}


def _cases() -> list[Case]:
    cases = []
    for task, suffix in (("classification", "Classifier"), ("regression", "Regressor")):
        cases += [
            Case(f"sklearn.RandomForest{suffix}", task, {"n_estimators": 5}, TREE_STEP,
                 {"bootstrap": False}, ("n_estimator", "n_estimators"), seeded=True),
            Case(f"sklearn.ExtraTrees{suffix}", task, {"n_estimators": 5},
                 {"n_estimators": 1, "max_depth": 2}, {}, ("max_dept", "max_depth"), seeded=True),
            Case(f"sklearn.GradientBoosting{suffix}", task, {"n_estimators": 10},
                 {"n_estimators": 1}, {"n_estimators": 100, "learning_rate": 0.5},
                 ("learning_rat", "learning_rate")),
            Case(f"sklearn.HistGradientBoosting{suffix}", task, {"max_iter": 10}, {"max_iter": 1},
                 {"max_iter": 100, "learning_rate": 0.5, "min_samples_leaf": 1},
                 ("max_iters", "max_iter")),
            Case(f"sklearn.KNeighbors{suffix}", task, {}, {}, {"n_neighbors": 1},
                 ("n_neighbours", "n_neighbors")),
            Case(f"sklearn.Dummy{suffix}", task, {}, {}, None, ("strategie", "strategy")),
            Case("lightgbm", task, {"n_estimators": 5, "min_child_samples": 5},
                 {"n_estimators": 1, "min_child_samples": 5},
                 {"n_estimators": 200, "learning_rate": 0.5, **LGBM_TINY},
                 ("num_leave", "num_leaves"), epochs=True),
            Case("torch.mlp", task, NET, NET_STEP, NET_OVERFIT, ("epoch", "epochs"),
                 seeded=True, epochs=True),
            Case("torch.cnn", task, CNN, NET_STEP, {**NET_OVERFIT, "hidden": [32]},
                 ("kernel", "kernel_size"), seeded=True, epochs=True),
            Case("keras.mlp", task, NET, NET_STEP, {**NET_OVERFIT, "epochs": 150, "lr": 0.02},
                 ("batchsize", "batch_size"), seeded=True, epochs=True),
        ]  # fmt: skip
    cases += [
        Case("sklearn.LogisticRegression", "classification", {}, {},
             {"C": 100.0, "max_iter": 1000}, ("max_iterations", "max_iter")),
        Case("sklearn.LinearRegression", "regression", {}, {}, {},
             ("fit_intercep", "fit_intercept")),
        Case("sklearn.Ridge", "regression", {}, {}, {"alpha": 1e-8}, ("alpah", "alpha")),
    ]  # fmt: skip
    return cases


CASES = _cases()


def cases(select: Any = None) -> Any:
    chosen = [c for c in CASES if select is None or select(c)]
    return pytest.mark.parametrize("case", chosen, ids=[c.id for c in chosen])


def problem(task: str, rows: int, seed: int, *, missing: float = 0.05) -> tuple[Any, Any]:
    """Random rows (with NaN) whose labels or values follow their first columns."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    if task == "classification":
        y: Any = LABELS[np.argmax(x[:, :3], axis=1)]
    else:
        y = 10.0 + 3.0 * x[:, 0] - 2.0 * x[:, 1] + 0.1 * rng.normal(size=rows)
    x[rng.random(x.shape) < missing] = np.nan
    return x, y


def trainer(case: Case, seed: int = 0, **params: Any) -> Any:
    return make_trainer(case.family, case.task, {**case.params, **params}, seed)


def constant_loss(task: str, y: np.ndarray) -> float:
    """The loss of the model that ignores X: the class frequencies, or the mean."""
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        prior = counts / counts.sum()
        return float(-np.sum(prior * np.log(prior)))
    return float(np.var(y))


def test_every_family_and_task_has_a_case() -> None:
    expected = {(name, task) for name, family in FAMILIES.items() for task in family.tasks}
    assert {(c.family, c.task) for c in CASES} == expected
    assert set(family_names("classification")) | set(family_names("regression")) == set(FAMILIES)


@cases()
def test_fit_returns_self_and_learns_only_into_underscore_attributes(case: Case) -> None:
    x, y = problem(case.task, 60, 0)
    model = trainer(case)
    params = model.get_params()
    assert set(vars(model)) == set(params)
    assert model.fit(x, y) is model
    learned = set(vars(model)) - set(params)
    assert learned and all(name.endswith("_") for name in learned)
    assert {"model_", "history_", "n_features_in_"} <= learned
    assert model.get_params() == params  # fit changed no parameter
    assert model.n_features_in_ == FEATURES
    predicted = model.predict(x)
    assert predicted.shape == (60,)
    if case.task == "classification":
        assert list(model.classes_) == list(LABELS)
        proba = model.predict_proba(x)
        assert proba.shape == (60, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(model.classes_[np.argmax(proba, axis=1)], predicted)
        assert set(predicted) <= set(LABELS)  # the original label values
    else:
        assert "classes_" not in vars(model) and np.isfinite(predicted).all()
        with pytest.raises(LearnError, match="no predict_proba"):
            model.predict_proba(x)
    assert np.isfinite(model.loss(x, y))


@cases()
def test_clone_is_an_unfitted_copy_with_equal_parameters(case: Case) -> None:
    x, y = problem(case.task, 60, 0)
    fitted = trainer(case).fit(x, y)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not any(name.endswith("_") for name in vars(copy))
    with pytest.raises(LearnError, match="not fitted"):
        copy.predict(x)


@cases()
def test_the_same_seed_gives_the_same_model(case: Case) -> None:
    x, y = problem(case.task, 60, 0)
    test, _ = problem(case.task, 40, 1)
    first, second = trainer(case, seed=3).fit(x, y), trainer(case, seed=3).fit(x, y)
    answer = "predict_proba" if case.task == "classification" else "predict"
    # Bitwise: the same seed, rows and thread count on the same machine and build.
    np.testing.assert_array_equal(getattr(first, answer)(test), getattr(second, answer)(test))
    assert first.history_ == second.history_
    if case.seeded:
        other = trainer(case, seed=4).fit(x, y)
        assert not np.array_equal(getattr(other, answer)(test), getattr(first, answer)(test))


@cases()
def test_one_step_of_training_lowers_the_loss(case: Case) -> None:
    x, y = problem(case.task, 60, 0)
    model = trainer(case, **case.step)
    if case.family.startswith(("torch", "keras")):
        model.set_params(dropout=0.0)
        model.fit(x, y)
        # One batch: epoch 1's loss is the initial weights', measured before the step.
        before = model.history_[0]["loss"]
    else:
        model.fit(x, y)
        before = constant_loss(case.task, y)
    after = model.loss(x, y)
    if case.family.startswith("sklearn.Dummy"):
        assert after == pytest.approx(before, rel=1e-9)  # the baseline is the constant model
    else:
        assert after < before


@cases(lambda c: c.overfit is not None)
def test_a_tiny_set_is_learned_by_heart(case: Case) -> None:
    x, y = problem(case.task, 12, 5, missing=0.0)
    assert case.overfit is not None
    model = trainer(case, **case.overfit).fit(x, y)
    if case.task == "classification":
        assert np.mean(model.predict(x) == y) == 1.0
    else:
        assert model.loss(x, y) < 0.01 * np.var(y)


@cases()
def test_each_epoch_reports_the_loss_and_the_validation_metrics(case: Case) -> None:
    x, y = problem(case.task, 60, 0)
    validation = problem(case.task, 30, 1)
    seen: list[tuple[int, dict[str, float]]] = []
    model = trainer(case).fit(
        x, y, validation=validation, on_epoch=lambda e, m: seen.append((e, m))
    )
    assert [epoch for epoch, _ in seen] == list(range(1, len(seen) + 1))
    assert len(seen) > 1 if case.epochs else len(seen) == 1
    assert model.history_ == [metrics for _, metrics in seen]
    metric = "val_accuracy" if case.task == "classification" else "val_rmse"
    for _, metrics in seen:
        assert {"loss", "val_loss", metric} <= set(metrics)
        assert all(np.isfinite(v) for v in metrics.values())


@cases()
def test_ctrl_c_in_on_epoch_stops_fit_and_leaves_it_unfitted(case: Case) -> None:
    x, y = problem(case.task, 60, 0)
    calls = []

    def interrupt(epoch: int, metrics: dict[str, float]) -> None:
        calls.append(epoch)
        raise KeyboardInterrupt

    model = trainer(case)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, on_epoch=interrupt)
    assert calls == [1]
    assert not any(name.endswith("_") for name in vars(model))
    with pytest.raises(LearnError, match="not fitted"):
        model.predict(x)


@cases()
def test_check_params_suggests_the_parameter_a_typo_meant(case: Case) -> None:
    typo, meant = case.typo
    assert check_params(case.family, case.task, case.params) == []
    problems = check_params(case.family, case.task, {**case.params, typo: 1})
    assert problems == [
        f"parameter `{typo}`: family `{case.family}` has no such parameter; did you mean `{meant}`?"
    ]
    with pytest.raises(SpecError, match=f"did you mean `{meant}`"):
        make_trainer(case.family, case.task, {typo: 1}, seed=0)
    seed = "random_state" if case.family.startswith("sklearn") else "seed"
    (problem,) = check_params(case.family, case.task, {**case.params, seed: 1})
    assert problem.startswith(f"parameter `{seed}`: the seed is set by the spec's `seed`")


def test_check_params_names_an_unknown_family_and_a_task_the_family_does_not_do() -> None:
    (unknown,) = check_params("sklearn.RandomForest", "classification", {})
    assert unknown.startswith(
        "family `sklearn.RandomForest` is not a model family gyre trains; did you mean "
        "`sklearn.RandomForestClassifier`? (families: keras.mlp, lightgbm, sklearn."
    )
    (wrong,) = check_params("sklearn.Ridge", "classification", {})
    assert wrong.startswith("family `sklearn.Ridge` does regression, not classification; for "
                            "classification use one of: keras.mlp, lightgbm,")  # fmt: skip
    assert check_params("lightgbm", "ranking", {}) == [
        "task `ranking` is not one of classification, regression"
    ]
    with pytest.raises(SpecError, match=r"the seed must be an integer in \[0, 2147483647\]"):
        make_trainer("lightgbm", "regression", {}, seed=2**31)
