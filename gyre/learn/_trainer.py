"""The trainer contract, the table of model families, and the checks of their parameters.

Every trainer is a scikit-learn estimator (`__init__` stores its parameters and nothing
else, `sklearn.base.clone` gives an unfitted copy, learned state lives in `name_`
attributes set only when `fit` succeeds) with:

- `task`: "classification" or "regression";
- `fit(X, y, *, validation=None, on_epoch=None) -> self`: X is a 2-D float table (NaN is a
  missing value; trainers that cannot take NaN impute it with medians learned on the
  training rows). `validation` is used for early stopping and reporting only, never to fit
  weights. `on_epoch(epoch, metrics)` is called after each epoch or boosting round
  (epochs count from 1; a one-shot estimator reports once) with at least `loss`, the
  training objective, and `val_loss` plus `val_accuracy` or `val_rmse` when validation is
  given. If it raises KeyboardInterrupt, fit stops at once and re-raises it, and the
  trainer stays unfitted;
- `predict(X)` (labels in the original label values, or values), `predict_proba(X)`
  (classification, columns in `classes_` order), `loss(X, y)` (log loss or mean squared
  error: the training objective), `classes_`, `history_` (one dict per epoch or round),
  `model_` (the native fitted model) and `n_features_in_`.

The families are named here, explicitly: no dotted import path ever comes from a spec.
The seed is not a parameter of a family: `make_trainer` takes it apart, from the spec.
"""

from __future__ import annotations

import difflib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, Self

import numpy as np

from gyre.errors import LearnError, SpecError

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

#: The largest seed every library takes (LightGBM's is a C int).
MAX_SEED = 2**31 - 1

#: Training rows a metric of the training data is taken on, at most (the train_* metrics
#: of a run, a GBDT's loss each round): a check for overfitting, not a result, and scoring
#: every row would cost as much as a large part of the fit.
TRAIN_SCORE_ROWS = 10_000

OnEpoch = Callable[[int, dict[str, float]], None]
Validation = tuple[np.ndarray, np.ndarray]


def evenly_spaced(rows: int, at_most: int = TRAIN_SCORE_ROWS) -> np.ndarray | None:
    """At most `at_most` row indices spread evenly over `rows` (in time, for rows in time
    order); None when every row fits."""
    if rows <= at_most:
        return None
    return np.linspace(0, rows - 1, at_most).astype(np.int64)


class Trainer(Protocol):
    """What every trainer of `FAMILIES` is (see the module docstring)."""

    task: str

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        validation: Validation | None = None,
        on_epoch: OnEpoch | None = None,
    ) -> Self: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def loss(self, X: np.ndarray, y: np.ndarray) -> float: ...

    def get_params(self, deep: bool = True) -> dict[str, Any]: ...

    def set_params(self, **params: Any) -> Self: ...


# -- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A parameter of a family that gyre itself defines: its default and what it takes."""

    default: Any
    expected: str  # what a valid value is, as the error message says it
    valid: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


def positive_int(default: int) -> Param:
    return Param(default, "a positive integer", lambda v: _is_int(v) and v >= 1)


def number(default: float, low: float, high: float, *, high_open: bool = False) -> Param:
    bracket = ")" if high_open else "]"
    expected = f"a number in [{low:g}, {high:g}{bracket}"
    return Param(
        default,
        expected,
        lambda v: _is_number(v) and low <= v and (v < high if high_open else v <= high),
    )


def positive_number(default: float) -> Param:
    return Param(default, "a positive number", lambda v: _is_number(v) and v > 0)


def one_of(default: str, *choices: str) -> Param:
    expected = "one of " + ", ".join(f'"{c}"' for c in choices)
    return Param(default, expected, lambda v: isinstance(v, str) and v in choices)


def int_list(default: tuple[int, ...], *, length: int | None = None, empty: bool = True) -> Param:
    what = f"a list of {length} positive integers" if length else "a list of positive integers"
    return Param(
        default,
        what + ("" if empty or length else ", not empty"),
        lambda v: (
            isinstance(v, list | tuple)
            and all(_is_int(w) and w >= 1 for w in v)
            and (length is None or len(v) == length)
            and (empty or len(v) > 0)
        ),
    )


def unknown_param(family: str, name: str, known: list[str]) -> str:
    """The problem for parameter `name`, which `family` does not have."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"its parameters: {', '.join(known)}"
    return f"parameter `{name}`: family `{family}` has no such parameter; {hint}"


def seed_param(name: str) -> str:
    return (
        f"parameter `{name}`: the seed is set by the spec's `seed`, not by the family's "
        "parameters; remove it"
    )


def table_problems(family: str, table: Mapping[str, Param], params: Mapping[str, Any]) -> list[str]:
    """Unknown names and values of the wrong kind, for a family with a table of `Param`s."""
    problems = []
    for name, value in params.items():
        if name == "seed":
            problems.append(seed_param(name))
        elif name not in table:
            problems.append(unknown_param(family, name, sorted(table)))
        elif not table[name].valid(value):
            problems.append(
                f"parameter `{name}` of `{family}` must be {table[name].expected}, not {value!r}"
            )
    return problems


# -- the family table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A model family: the tasks it does, the library it needs, and how its trainers are
    checked and made (the trainer modules are imported only then)."""

    name: str
    tasks: tuple[str, ...]
    requires: tuple[str, ...]  # the modules it needs beyond gyre's core
    extra: str | None  # the pip extra that brings them
    problems: Callable[[str, str, Mapping[str, Any]], list[str]]  # (family, task, params)
    build: Callable[[str, str, Mapping[str, Any], int], Any]  # (family, task, params, seed)


def _sklearn_problems(family: str, task: str, params: Mapping[str, Any]) -> list[str]:
    from gyre.learn import _sklearn

    return _sklearn.param_problems(family, params)


def _sklearn_build(family: str, task: str, params: Mapping[str, Any], seed: int) -> Any:
    from gyre.learn import _sklearn

    if family == "lightgbm":
        return _sklearn.LightGBMTrainer(task=task, params=dict(params), seed=seed)
    return _sklearn.SklearnTrainer(
        estimator=family.removeprefix("sklearn."), task=task, params=dict(params), seed=seed
    )


def _net_problems(family: str, task: str, params: Mapping[str, Any]) -> list[str]:
    from gyre.learn import _netparams

    return _netparams.param_problems(family, params)


def _torch_build(family: str, task: str, params: Mapping[str, Any], seed: int) -> Any:
    from gyre.learn import _torch

    trainer = _torch.TorchCNN if family == "torch.cnn" else _torch.TorchMLP
    return trainer(task=task, seed=seed, **params)


def _keras_build(family: str, task: str, params: Mapping[str, Any], seed: int) -> Any:
    from gyre.learn import _keras

    return _keras.KerasMLP(task=task, seed=seed, **params)


#: scikit-learn estimators gyre trains, by name, and the task each does. Each exports to ONNX
#: through the registry, except the Dummy baselines (skl2onnx has no converter for them).
SKLEARN_ESTIMATORS: Mapping[str, str] = MappingProxyType(
    {
        "LogisticRegression": CLASSIFICATION,
        "LinearRegression": REGRESSION,
        "Ridge": REGRESSION,
        "RandomForestClassifier": CLASSIFICATION,
        "RandomForestRegressor": REGRESSION,
        "ExtraTreesClassifier": CLASSIFICATION,
        "ExtraTreesRegressor": REGRESSION,
        "GradientBoostingClassifier": CLASSIFICATION,
        "GradientBoostingRegressor": REGRESSION,
        "HistGradientBoostingClassifier": CLASSIFICATION,
        "HistGradientBoostingRegressor": REGRESSION,
        "KNeighborsClassifier": CLASSIFICATION,
        "KNeighborsRegressor": REGRESSION,
        "DummyClassifier": CLASSIFICATION,
        "DummyRegressor": REGRESSION,
    }
)


def _families() -> dict[str, Family]:
    both = (CLASSIFICATION, REGRESSION)
    table = {
        f"sklearn.{name}": Family(
            f"sklearn.{name}", (task,), (), None, _sklearn_problems, _sklearn_build
        )
        for name, task in SKLEARN_ESTIMATORS.items()
    }
    table["lightgbm"] = Family("lightgbm", both, (), None, _sklearn_problems, _sklearn_build)
    for name in ("torch.mlp", "torch.cnn"):
        table[name] = Family(name, both, ("torch",), "torch", _net_problems, _torch_build)
    keras = ("torch", "keras")
    table["keras.mlp"] = Family("keras.mlp", both, keras, "torch", _net_problems, _keras_build)
    return dict(sorted(table.items()))


FAMILIES: Mapping[str, Family] = MappingProxyType(_families())


def family_names(task: str | None = None) -> list[str]:
    """Every family's name (of those that do `task`, when given), sorted."""
    return [name for name, family in FAMILIES.items() if task is None or task in family.tasks]


def check_params(family: str, task: str, params: Mapping[str, Any]) -> list[str]:
    """Every problem with training `family` for `task` with `params`, one line each naming
    what is wrong and the fix; an empty list when there is none."""
    problems = []
    if task not in TASKS:
        problems.append(f"task `{task}` is not one of {', '.join(TASKS)}")
    if family not in FAMILIES:
        # The families that do the task first: `sklearn.RandomForest` for classification
        # means the classifier.
        candidates = family_names(task) if task in TASKS else list(FAMILIES)
        close = difflib.get_close_matches(family, candidates, n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        problems.append(
            f"family `{family}` is not a model family gyre trains{hint} (families: "
            f"{', '.join(FAMILIES)})"
        )
        return problems
    entry = FAMILIES[family]
    if task in TASKS and task not in entry.tasks:
        problems.append(
            f"family `{family}` does {' and '.join(entry.tasks)}, not {task}; for {task} "
            f"use one of: {', '.join(family_names(task))}"
        )
    missing = [name for name in entry.requires if importlib.util.find_spec(name) is None]
    if missing:
        problems.append(
            f"family `{family}` needs {' and '.join(missing)}, which is not installed; "
            f"install it with: pip install 'gyre[{entry.extra}]'"
        )
        return problems
    return problems + entry.problems(family, task, params)


def make_trainer(family: str, task: str, params: Mapping[str, Any], seed: int) -> Trainer:
    """An unfitted trainer of `family` for `task`; SpecError naming every problem that
    `check_params` finds."""
    problems = check_params(family, task, params)
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        problems.append(f"the seed must be an integer in [0, {MAX_SEED}], not {seed!r}")
    if problems:
        raise SpecError(f"family `{family}` ({task}): " + "; ".join(problems))
    trainer: Trainer = FAMILIES[family].build(family, task, params, int(seed))
    return trainer


# -- what every trainer shares -----------------------------------------------------------------


def as_rows(X: Any, n_features: int | None = None, *, what: str = "X") -> np.ndarray:
    """`X` as float64 rows, or LearnError saying what it should be."""
    try:
        rows = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise LearnError(
            f"{what} must be a 2-D table of numbers (NaN for a missing value); it holds "
            "values that are not numbers"
        ) from None
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise LearnError(f"{what} must be a non-empty 2-D table of rows, not shape {rows.shape}")
    if n_features is not None and rows.shape[1] != n_features:
        raise LearnError(
            f"{what} has {rows.shape[1]} columns; the model was fitted on {n_features}"
        )
    if np.isinf(rows).any():
        raise LearnError(
            f"{what} holds infinite values; replace them (NaN stands for a missing value)"
        )
    return rows


def as_targets(y: Any, rows: int, task: str, *, what: str = "y") -> np.ndarray:
    """`y` as a 1-D array of `rows` labels (classification) or finite numbers."""
    target = np.asarray(y)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 1 or len(target) != rows:
        raise LearnError(f"{what} must hold one value per row ({rows}), not shape {target.shape}")
    if task == REGRESSION:
        try:
            target = target.astype(np.float64)
        except (TypeError, ValueError):
            raise LearnError(f"{what} must hold numbers for regression") from None
        if not np.isfinite(target).all():
            raise LearnError(f"{what} holds NaN or infinite values; drop those rows")
    elif target.dtype.kind == "f" and np.isnan(target).any():
        raise LearnError(f"{what} holds NaN labels; drop those rows")
    return target


def check_task(task: Any) -> str:
    if task not in TASKS:
        raise SpecError(f"task `{task}` is not one of {', '.join(TASKS)}")
    return str(task)


def class_indices(classes: np.ndarray, y: np.ndarray, *, what: str = "the labels") -> np.ndarray:
    """The position of each label of `y` in `classes`; LearnError for a label not there."""
    index = np.searchsorted(classes, y)
    index = np.clip(index, 0, len(classes) - 1)
    unseen = classes[index] != y
    if np.any(unseen):
        shown = ", ".join(map(str, np.unique(y[unseen])[:5]))
        raise LearnError(
            f"{what} include {shown}, which no training row has; every label must occur in "
            "the training rows"
        )
    return index


def classes_of(y: np.ndarray) -> np.ndarray:
    try:
        classes = np.unique(y)
    except TypeError:
        raise LearnError("the labels mix types (numbers and strings); use one type") from None
    if len(classes) < 2:
        raise LearnError(
            f"classification needs at least two classes; the training rows have only {classes!r}"
        )
    return classes


def log_loss(proba: np.ndarray, index: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (probabilities clipped at 1e-15)."""
    chosen = np.asarray(proba, dtype=np.float64)[np.arange(len(index)), index]
    return float(-np.mean(np.log(np.clip(chosen, 1e-15, 1.0)))) + 0.0  # never -0.0


class TrainerBase(ABC):
    """`loss`, the validation metrics and the fitted check, shared by every trainer (mixed
    into scikit-learn's BaseEstimator by each)."""

    task: str
    #: Whether one fitted trainer may predict from several threads at once (the evaluate
    #: stage of `gyre train` then scores the split's parts side by side). Not where
    #: predicting changes shared state, such as torch's thread count.
    predicts_in_threads: bool = False

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise LearnError(f"{type(self).__name__} is not fitted; call fit(X, y) first")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    @abstractmethod
    def predict(self, X: Any) -> np.ndarray: ...

    @abstractmethod
    def predict_proba(self, X: Any) -> np.ndarray: ...

    def loss(self, X: Any, y: Any) -> float:
        """The training objective on (X, y): log loss, or mean squared error."""
        self._check_fitted()
        rows = as_rows(X, getattr(self, "n_features_in_", None))
        target = as_targets(y, len(rows), self.task)
        if self.task == CLASSIFICATION:
            classes = getattr(self, "classes_")  # noqa: B009
            found = scores(self.task, target, proba=self.predict_proba(rows), classes=classes)
        else:
            found = scores(self.task, target, values=self.predict(rows))
        return found["loss"]


def scores(
    task: str,
    y: np.ndarray,
    *,
    prefix: str = "",
    proba: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    values: np.ndarray | None = None,
) -> dict[str, float]:
    """{prefix}loss and {prefix}accuracy (from `proba` over `classes`), or {prefix}loss and
    {prefix}rmse (from `values`), against the targets `y`."""
    if task == CLASSIFICATION:
        assert proba is not None and classes is not None
        index = class_indices(classes, y, what="the validation labels" if prefix else "the labels")
        accuracy = float(np.mean(np.argmax(proba, axis=1) == index))
        return {f"{prefix}loss": log_loss(proba, index), f"{prefix}accuracy": accuracy}
    assert values is not None
    mse = float(np.mean((np.asarray(values, dtype=np.float64).reshape(-1) - y) ** 2))
    return {f"{prefix}loss": mse, f"{prefix}rmse": float(np.sqrt(mse))}


def checked_validation(
    validation: Validation | None, n_features: int, task: str
) -> Validation | None:
    """The validation rows and targets, checked like the training ones."""
    if validation is None:
        return None
    try:
        x, y = validation
    except (TypeError, ValueError):
        raise LearnError("validation must be a pair (X, y)") from None
    rows = as_rows(x, n_features, what="the validation X")
    return rows, as_targets(y, len(rows), task, what="the validation y")
