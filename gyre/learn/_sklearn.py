"""scikit-learn and LightGBM trainers.

- `SklearnTrainer`: one of the estimators of `SKLEARN_ESTIMATORS`, in a Pipeline: a median
  imputer (keep_empty_features=True) first when the estimator cannot take NaN, then a
  StandardScaler for the linear and nearest-neighbour models. `model_` is that Pipeline.
  It is fitted in one shot: `on_epoch` is called once, after fit, and `history_` holds
  that one entry. HistGradientBoosting's own early stopping (on a random split of the
  training rows it makes itself) is off unless the parameters turn it on: the spec's
  split is the validation.
- `LightGBMTrainer`: LGBMClassifier or LGBMRegressor, `model_` that model, one
  `history_` entry per boosting round; with validation rows, early stopping on their log
  loss (or squared error) after `early_stopping_rounds` rounds without improvement
  (default 10), predicting with the best round.

Reproducible: the seed is each estimator's `random_state`; LightGBM runs with
`deterministic=True`, `force_row_wise=True` and a fixed thread count (`n_jobs`, default
1), as LightGBM's documentation requires for identical models. The same seed, parameters
and rows give a bitwise identical model and predictions.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator

from gyre.errors import LearnError, SpecError
from gyre.learn._trainer import (
    CLASSIFICATION,
    REGRESSION,
    SKLEARN_ESTIMATORS,
    OnEpoch,
    TrainerBase,
    Validation,
    as_rows,
    as_targets,
    check_task,
    checked_validation,
    classes_of,
    evenly_spaced,
    scores,
    seed_param,
    unknown_param,
)

#: Where each estimator class lives, by the first word of its name.
_MODULES = {
    "Logistic": "sklearn.linear_model",
    "Linear": "sklearn.linear_model",
    "Ridge": "sklearn.linear_model",
    "KNeighbors": "sklearn.neighbors",
    "Dummy": "sklearn.dummy",
}
#: Estimators fitted on standardized columns (after the imputer).
_SCALED = ("Logistic", "Linear", "Ridge", "KNeighbors")
#: Estimators that take NaN themselves (the Dummy ones never look at X).
_TAKE_NAN = ("HistGradientBoosting", "Dummy")


@functools.cache
def _estimator_class(name: str) -> Any:
    module = next((m for prefix, m in _MODULES.items() if name.startswith(prefix)), None)
    return getattr(importlib.import_module(module or "sklearn.ensemble"), name)


@functools.cache
def _defaults(name: str) -> dict[str, Any]:
    return dict(_estimator_class(name)().get_params())


def _sklearn_problems(family: str, params: Mapping[str, Any]) -> list[str]:
    from sklearn.utils._param_validation import InvalidParameterError

    name = family.removeprefix("sklearn.")
    known = sorted(set(_defaults(name)) - {"random_state"})
    problems = []
    for key, value in params.items():
        if key in ("random_state", "seed"):
            problems.append(seed_param(key))
        elif key not in known:
            problems.append(unknown_param(family, key, known))
        else:
            try:
                _estimator_class(name)(**{key: value})._validate_params()
            except InvalidParameterError as exc:
                problems.append(f"parameter `{key}` of `{family}`: {exc}")
    return problems


# -- LightGBM's parameters ----------------------------------------------------------------------

#: LightGBM settings gyre fixes (reproducibility, the metrics it reports, quiet logs).
_LGBM_FIXED = ("deterministic", "force_row_wise", "force_col_wise", "metric", "verbosity")
#: LightGBM's seeds, all derived from the one seed of the spec.
_LGBM_SEEDS = (
    "seed",
    "bagging_seed",
    "feature_fraction_seed",
    "data_random_seed",
    "extra_seed",
    "drop_seed",
    "objective_seed",
)
EARLY_STOPPING_ROUNDS = 10


@functools.cache
def _lightgbm_names() -> tuple[dict[str, Any], dict[str, str], frozenset[str]]:
    """(the scikit-learn API's parameters with their defaults, each alias -> the name to
    write instead, the core parameters gyre passes through)."""
    import lightgbm
    from lightgbm.basic import _ConfigAliases

    api = dict(lightgbm.LGBMModel().get_params())
    aliases: dict[str, list[str]] = _ConfigAliases._get_all_param_aliases()
    write_instead: dict[str, str] = {}
    core = set()
    for canonical, names in aliases.items():
        named = next((n for n in names if n in api), None)
        for alias in names:
            if alias != (named or canonical):
                write_instead[alias] = named or canonical
        if named is None and canonical not in _LGBM_FIXED + _LGBM_SEEDS:
            core.add(canonical)
    return api, write_instead, frozenset(core)


def _lightgbm_problems(params: Mapping[str, Any]) -> list[str]:
    from lightgbm.basic import _ConfigAliases

    api, write_instead, core = _lightgbm_names()
    seeds = {alias for name in _LGBM_SEEDS for alias in _ConfigAliases.get(name)}
    fixed = {alias for name in _LGBM_FIXED for alias in _ConfigAliases.get(name)}
    known = sorted(set(api) - {"random_state"} | core | {"early_stopping_rounds"})
    problems = []
    for key, value in params.items():
        if key in seeds:
            problems.append(seed_param(key))
        elif key in fixed:
            problems.append(
                f"parameter `{key}` of `lightgbm` is set by gyre (deterministic row-wise "
                "training, log loss or squared error as the reported metric); remove it"
            )
        elif key == "early_stopping_rounds" or key == "n_jobs":
            if not _positive_int(value):
                problems.append(f"parameter `{key}` of `lightgbm` must be a positive integer, "
                                f"not {value!r}")  # fmt: skip
        elif key in api:
            problem = _lightgbm_type(key, value, api[key])
            if problem:
                problems.append(problem)
        elif key in core:
            continue
        elif key in write_instead:
            problems.append(
                f"parameter `{key}` of `lightgbm` is an alias; write `{write_instead[key]}`"
            )
        else:
            problems.append(unknown_param("lightgbm", key, known))
    return problems


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _lightgbm_type(key: str, value: Any, default: Any) -> str | None:
    """A parameter of the scikit-learn API whose value is not of its default's type."""
    if isinstance(default, bool) or default is None:
        return None
    if isinstance(default, int) and (not isinstance(value, int) or isinstance(value, bool)):
        return f"parameter `{key}` of `lightgbm` must be an integer, not {value!r}"
    if isinstance(default, float) and (
        not isinstance(value, int | float) or isinstance(value, bool)
    ):
        return f"parameter `{key}` of `lightgbm` must be a number, not {value!r}"
    if isinstance(default, str) and not isinstance(value, str):
        return f"parameter `{key}` of `lightgbm` must be a string, not {value!r}"
    return None


def param_problems(family: str, params: Mapping[str, Any]) -> list[str]:
    if family == "lightgbm":
        return _lightgbm_problems(params)
    return _sklearn_problems(family, params)


def _raise_problems(family: str, task: str, params: Mapping[str, Any]) -> None:
    problems = param_problems(family, params)
    if problems:
        raise SpecError(f"family `{family}` ({task}): " + "; ".join(problems))


# -- the trainers --------------------------------------------------------------------------------


class SklearnTrainer(TrainerBase, BaseEstimator):  # type: ignore[misc]
    """A scikit-learn estimator of `SKLEARN_ESTIMATORS`, named by `estimator`, with
    `params` (its own parameters, without random_state: that is `seed`)."""

    gyre_flavor = "sklearn"
    predicts_in_threads = True  # fitted estimators only read their state

    def __init__(
        self,
        estimator: str = "LogisticRegression",
        task: str = CLASSIFICATION,
        params: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.estimator = estimator
        self.task = task
        self.params = params
        self.seed = seed

    def _pipeline(self) -> Any:
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        name = self.estimator
        family = f"sklearn.{name}"
        task = check_task(self.task)
        if name not in SKLEARN_ESTIMATORS:
            raise SpecError(
                f"`{name}` is not one of the scikit-learn estimators gyre trains: "
                f"{', '.join(SKLEARN_ESTIMATORS)}"
            )
        if SKLEARN_ESTIMATORS[name] != task:
            raise SpecError(f"family `{family}` does {SKLEARN_ESTIMATORS[name]}, not {task}")
        params = dict(self.params or {})
        _raise_problems(family, task, params)
        if "random_state" in _defaults(name):
            params["random_state"] = self.seed
        if name.startswith("HistGradientBoosting"):
            params.setdefault("early_stopping", False)
        steps: list[tuple[str, Any]] = []
        if not name.startswith(_TAKE_NAN):
            steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
        if name.startswith(_SCALED):
            steps.append(("scale", StandardScaler()))
        steps.append(("model", _estimator_class(name)(**params)))
        return Pipeline(steps)

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation: Validation | None = None,
        on_epoch: OnEpoch | None = None,
    ) -> Self:
        pipeline = self._pipeline()
        rows = as_rows(X)
        target = as_targets(y, len(rows), self.task)
        checked = checked_validation(validation, rows.shape[1], self.task)
        classes = classes_of(target) if self.task == CLASSIFICATION else None
        pipeline.fit(rows, target)
        metrics = self._report(pipeline, rows, target, classes)
        if checked is not None:
            metrics |= self._report(pipeline, *checked, classes, prefix="val_")
        if on_epoch is not None:
            on_epoch(1, dict(metrics))
        self.model_ = pipeline
        self.history_ = [metrics]
        self.n_features_in_ = rows.shape[1]
        if classes is not None:
            self.classes_ = pipeline.classes_
        return self

    def _report(
        self,
        model: Any,
        rows: np.ndarray,
        target: np.ndarray,
        classes: np.ndarray | None,
        prefix: str = "",
    ) -> dict[str, float]:
        if classes is None:
            return scores(REGRESSION, target, prefix=prefix, values=model.predict(rows))
        return scores(
            CLASSIFICATION, target, prefix=prefix, proba=model.predict_proba(rows),
            classes=model.classes_,
        )  # fmt: skip

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.model_.predict(as_rows(X, self.n_features_in_)))

    def predict_proba(self, X: Any) -> np.ndarray:
        self._check_fitted()
        if self.task != CLASSIFICATION:
            raise LearnError(f"{self.estimator} is a regressor; it has no predict_proba")
        return np.asarray(self.model_.predict_proba(as_rows(X, self.n_features_in_)))


class LightGBMTrainer(TrainerBase, BaseEstimator):  # type: ignore[misc]
    """LightGBM's LGBMClassifier or LGBMRegressor with `params` (the scikit-learn API's
    names, LightGBM's core parameters, and `early_stopping_rounds`)."""

    gyre_flavor = "lightgbm"
    predicts_in_threads = True  # the booster predicts under a shared lock, without the GIL

    def __init__(
        self,
        task: str = CLASSIFICATION,
        params: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.task = task
        self.params = params
        self.seed = seed

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation: Validation | None = None,
        on_epoch: OnEpoch | None = None,
    ) -> Self:
        import lightgbm

        task = check_task(self.task)
        params = dict(self.params or {})
        _raise_problems("lightgbm", task, params)
        rows = as_rows(X)
        target = as_targets(y, len(rows), task)
        checked = checked_validation(validation, rows.shape[1], task)
        rounds = params.pop("early_stopping_rounds", EARLY_STOPPING_ROUNDS)
        params.setdefault("n_jobs", 1)
        if task == CLASSIFICATION:
            kind = "binary" if len(classes_of(target)) == 2 else "multi"
            metric = [f"{kind}_logloss", f"{kind}_error"]
            model = lightgbm.LGBMClassifier(**params)
        else:
            metric = ["l2"]
            model = lightgbm.LGBMRegressor(**params)
        model.set_params(random_state=self.seed, deterministic=True, force_row_wise=True,
                         verbosity=-1, metric=metric)  # fmt: skip
        history: list[dict[str, float]] = []

        def report(env: Any) -> None:
            metrics = _round_metrics(env.evaluation_result_list)
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(env.iteration + 1, dict(metrics))

        # `loss` each round, on the training rows (at most TRAIN_SCORE_ROWS of them, evenly
        # spaced: the metrics of every row each round cost a third of the fit). The set is
        # named "training", so early stopping never watches it. `eval_set`, which LightGBM
        # 4.7 deprecates: its replacement (eval_X, eval_y) skips the classifier's label
        # encoding, so text labels fail.
        callbacks: list[Any] = [report]
        every = evenly_spaced(len(rows))
        eval_set: list[Any] = [(rows, target) if every is None else (rows[every], target[every])]
        names = ["training"]
        if checked is not None:
            eval_set.append(checked)
            names.append("validation")
            callbacks.append(lightgbm.early_stopping(rounds, first_metric_only=True, verbose=False))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The argument 'eval_set' is deprecated")
            model.fit(rows, target, eval_set=eval_set, eval_names=names, callbacks=callbacks)
        self.model_ = model
        self.history_ = history
        self.n_features_in_ = rows.shape[1]
        if task == CLASSIFICATION:
            self.classes_ = model.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.model_.predict(as_rows(X, self.n_features_in_)))

    def predict_proba(self, X: Any) -> np.ndarray:
        self._check_fitted()
        if self.task != CLASSIFICATION:
            raise LearnError("this LightGBM trainer is a regressor; it has no predict_proba")
        return np.asarray(self.model_.predict_proba(as_rows(X, self.n_features_in_)))


def _round_metrics(results: list[tuple[Any, ...]]) -> dict[str, float]:
    """One round's metrics from LightGBM's (data set, metric, value, higher is better)."""
    metrics: dict[str, float] = {}
    for data, metric, value, *_ in results:
        prefix = "" if data == "training" else "val_"
        if metric.endswith("logloss"):
            metrics[f"{prefix}loss"] = float(value)
        elif metric.endswith("error"):
            metrics[f"{prefix}accuracy"] = 1.0 - float(value)
        elif metric == "l2":
            metrics[f"{prefix}loss"] = float(value)
            metrics[f"{prefix}rmse"] = float(np.sqrt(value))
    return metrics
