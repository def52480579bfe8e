"""Keras 3 on the torch backend (`keras.mlp`): the MLP of `torch.mlp`, written in Keras.

The model (`model_`, a `keras.Model`) is: the input `X`, missing values to the training
medians (`MissingToMedian`, a layer of gyre's), `Normalization` with the training
columns' mean and variance, the `hidden` Dense layers (with `activation`, and Dropout when
`dropout` > 0), then a softmax (classification) or one value put back in the target's
units by `Rescaling` (regression; the layers before it are trained on the standardized
target). Training is Keras' own `fit`, on a torch DataLoader whose shuffling comes from a
local `torch.Generator` seeded with the seed, with the learning rate of each epoch set by a
`LearningRateScheduler` (the same schedules as `torch.mlp`), `EarlyStopping` on `val_loss`
restoring the best weights when validation rows are given, and a callback that reports
each epoch to `on_epoch`. The initial weights and the dropout masks come from seeds drawn
from the seed, so that, as for `torch.mlp`, the same seed, rows and thread count give
bitwise identical weights on one machine and torch build. `weight_decay` is Keras' own
(decoupled, as in AdamW) weight decay.

Keras picks its backend once, when `keras` is first imported, for the whole process, and
the TensorFlow publishing path (`gyre.registry._tensorflow`) or a user's code may already
have imported it on the TensorFlow backend. gyre therefore loads a copy of its own on the
torch backend: on first use it takes every `keras` module out of `sys.modules`, imports
Keras with KERAS_BACKEND=torch (the variable is put back right after), keeps those modules
aside, and puts the previous ones back. Every call into the copy (build, fit, predict,
export, save, load) runs inside `torch_keras()`, which swaps the copy into `sys.modules`
for the call (Keras imports some modules lazily, by name) and back after. The copy and the
TensorFlow-backed Keras thus live side by side in one process. While a call into the copy
runs, another thread importing `keras` would get the copy: calls are serialized by a lock.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator

from gyre.errors import LearnError, SpecError
from gyre.learn import _netparams, _torch
from gyre.learn._trainer import (
    CLASSIFICATION,
    OnEpoch,
    TrainerBase,
    Validation,
    as_rows,
    as_targets,
    check_task,
    checked_validation,
    class_indices,
    classes_of,
    table_problems,
)

FAMILY = "keras.mlp"
_lock = threading.RLock()
_copy: dict[str, ModuleType] = {}  # the torch-backed Keras modules, while swapped out


def _take_keras() -> dict[str, ModuleType]:
    names = [n for n in sys.modules if n == "keras" or n.startswith("keras.")]
    return {name: sys.modules.pop(name) for name in names}


@contextlib.contextmanager
def torch_keras() -> Iterator[Any]:
    """The `keras` module of gyre's torch-backed copy, swapped into `sys.modules` for the
    duration (see the module docstring)."""
    with _lock, warnings.catch_warnings():
        # Keras 3.15 turns its variables into arrays with np.array(v), whose __array__
        # numpy 2.4 flags (get_weights, save, early stopping's best weights): theirs.
        warnings.filterwarnings(
            "ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning,
            module=r"keras\.",
        )  # fmt: skip
        theirs = _take_keras()
        try:
            if _copy:
                sys.modules.update(_copy)
            else:
                _import_copy()
            yield sys.modules["keras"]
        finally:
            _copy.update(_take_keras())
            sys.modules.update(theirs)


def _import_copy() -> None:
    _torch.require_torch()
    before = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "torch"  # read by Keras at import, put back right after
    try:
        keras = importlib.import_module("keras")
    except ImportError:
        _take_keras()  # what the failed import left behind is no copy to keep
        raise LearnError(
            f"training a Keras model needs keras; install it with: {_torch.EXTRA}"
        ) from None
    finally:
        if before is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = before
    if keras.backend.backend() != "torch":  # pragma: no cover - the variable decides
        raise LearnError(f"Keras loaded on the {keras.backend.backend()} backend, not torch")


@functools.cache
def _missing_to_median(keras: Any) -> Any:
    """The layer that replaces NaN with the training medians (of the copy `keras`)."""

    @keras.saving.register_keras_serializable(package="gyre")
    class MissingToMedian(keras.layers.Layer):  # type: ignore[misc]
        def __init__(self, values: list[float], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.values = [float(v) for v in values]

        def call(self, x: Any) -> Any:
            medians = keras.ops.convert_to_tensor(self.values, dtype=x.dtype)
            return keras.ops.where(keras.ops.isnan(x), medians, x)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "values": self.values}

    return MissingToMedian


class KerasMLP(TrainerBase, BaseEstimator):  # type: ignore[misc]
    """An MLP in Keras 3 on the torch backend (`keras.mlp`), with the parameters of
    `torch.mlp` (see the module docstring)."""

    gyre_flavor = "keras"
    family = FAMILY

    def __init__(
        self,
        task: str = CLASSIFICATION,
        hidden: Any = (64,),
        activation: str = "relu",
        dropout: float = 0.0,
        lr: float = 1e-3,
        optimizer: str = "adam",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        schedule: str = "none",
        step_size: int = 10,
        gamma: float = 0.1,
        batch_size: int = 64,
        epochs: int = 50,
        patience: int = 10,
        threads: int = 1,
        seed: int = 0,
    ) -> None:
        self.task = task
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.step_size = step_size
        self.gamma = gamma
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.threads = threads
        self.seed = seed

    def _build(self, keras: Any, rows: np.ndarray, n_outputs: int, target: Any) -> Any:
        """(the model, the model to train: the same but for the regression Rescaling)."""
        median, mean, scale = _torch.column_statistics(rows)
        draw = np.random.default_rng(self.seed)

        def seed() -> int:  # one for each layer's initial weights or dropout masks
            return int(draw.integers(2**31))

        layers = keras.layers
        inputs = keras.Input((rows.shape[1],), name="X")
        x = _missing_to_median(keras)(median.tolist())(inputs)
        x = layers.Normalization(mean=mean, variance=scale**2)(x)
        for width in self.hidden:
            init = keras.initializers.GlorotUniform(seed=seed())
            x = layers.Dense(int(width), activation=self.activation, kernel_initializer=init)(x)
            if self.dropout > 0:
                x = layers.Dropout(self.dropout, seed=seed())(x)
        init = keras.initializers.GlorotUniform(seed=seed())
        if target is None:
            out = layers.Dense(n_outputs, activation="softmax", kernel_initializer=init)(x)
            model = keras.Model(inputs, out)
            return model, model
        raw = layers.Dense(1, kernel_initializer=init)(x)
        t_mean, t_std = target
        values = layers.Rescaling(scale=t_std, offset=t_mean)(raw)
        return keras.Model(inputs, values), keras.Model(inputs, raw)

    def _lr_of(self, epoch: int) -> float:
        return _netparams.lr_at(
            self.lr, self.schedule, epoch, self.epochs, self.step_size, self.gamma
        )

    def _optimizer(self, keras: Any) -> Any:
        if self.optimizer == "sgd":
            return keras.optimizers.SGD(learning_rate=self.lr, momentum=self.momentum,
                                        weight_decay=self.weight_decay or None)  # fmt: skip
        return keras.optimizers.Adam(learning_rate=self.lr, weight_decay=self.weight_decay or None)

    def _checked(self) -> str:
        task = check_task(self.task)
        given = {k: v for k, v in self.get_params().items() if k not in ("task", "seed")}
        problems = table_problems(FAMILY, _netparams.MLP, given)
        if problems:
            raise SpecError(f"family `{FAMILY}` ({task}): " + "; ".join(problems))
        return task

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation: Validation | None = None,
        on_epoch: OnEpoch | None = None,
    ) -> Self:
        torch = _torch.require_torch()
        task = self._checked()
        rows = as_rows(X)
        target = as_targets(y, len(rows), task)
        checked = checked_validation(validation, rows.shape[1], task)
        classes = classes_of(target) if task == CLASSIFICATION else None
        history: list[dict[str, float]] = []
        with torch_keras() as keras, _torch.reproducible(self.seed, self.threads):
            if classes is None:
                scale = (float(target.mean()), float(target.std()) or 1.0)
                model, core = self._build(keras, rows, 1, scale)
                core.compile(optimizer=self._optimizer(keras), loss="mean_squared_error")
            else:
                scale = None
                model, core = self._build(keras, rows, len(classes), None)
                core.compile(
                    optimizer=self._optimizer(keras),
                    loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"],
                )
            data = _loader(torch, rows, _encoded(target, classes, scale), self.batch_size,
                           torch.Generator().manual_seed(self.seed))  # fmt: skip
            unit = 1.0 if scale is None else scale[1] ** 2
            callbacks = [_reporter(keras, history, on_epoch, unit, task, self._lr_of)]
            stopping, val = None, None
            if checked is not None:
                stopping = keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.patience, restore_best_weights=True
                )
                callbacks.append(stopping)
                val = _loader(torch, checked[0], _encoded(checked[1], classes, scale),
                              _torch.PREDICT_CHUNK, None)  # fmt: skip
            core.fit(data, epochs=self.epochs, verbose=0, callbacks=callbacks, shuffle=False,
                     validation_data=val)  # fmt: skip
        self.model_ = model
        self.history_ = history
        self.best_epoch_ = len(history) if stopping is None else int(stopping.best_epoch) + 1
        self.n_features_in_ = rows.shape[1]
        if classes is not None:
            self.classes_ = classes
        return self

    def _outputs(self, X: Any) -> np.ndarray:
        self._check_fitted()
        rows = as_rows(X, self.n_features_in_)
        from gyre.learn import _torchnets

        with torch_keras(), _torch.reproducible(None, self.threads):
            return _torchnets.forward_rows(self.model_, rows, _torch.PREDICT_CHUNK)

    def predict(self, X: Any) -> np.ndarray:
        if self.task == CLASSIFICATION:
            proba = self.predict_proba(X)  # first: it says when the trainer is not fitted
            return np.asarray(self.classes_[np.argmax(proba, axis=1)])
        return self._outputs(X)[:, 0].astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task != CLASSIFICATION:
            raise LearnError("this keras.mlp trainer is a regressor; it has no predict_proba")
        return self._outputs(X).astype(np.float64)

    def onnx_module(self) -> Any:
        """The module the registry exports: FP32 rows [N, F] in; class probabilities [N, k]
        (classification) or values [N, 1] out (the Keras model, a torch module on this
        backend, called with gyre's Keras loaded)."""
        from gyre.learn import _torchnets

        self._check_fitted()
        return _torchnets.InContext(self.model_, torch_keras)

    # A Keras model is pickled as the bytes of its `.keras` file (Keras' own format).
    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        if "model_" in state:
            state = {**state, "model_": _saved(state["model_"])}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("model_"), bytes):
            state = {**state, "model_": _loaded(state["model_"])}
        super().__setstate__(state)


def _encoded(
    target: np.ndarray, classes: np.ndarray | None, scale: tuple[float, float] | None
) -> np.ndarray:
    """What Keras trains on: class indices, or the target standardized as [N, 1] float32."""
    if classes is not None:
        return class_indices(classes, target).astype(np.int64)
    assert scale is not None
    return ((target - scale[0]) / scale[1]).astype(np.float32).reshape(-1, 1)


def _loader(torch: Any, rows: np.ndarray, targets: np.ndarray, batch: int, generator: Any) -> Any:
    data = torch.utils.data.TensorDataset(
        torch.from_numpy(rows.astype(np.float32)), torch.from_numpy(targets)
    )
    return torch.utils.data.DataLoader(
        data, batch_size=batch, shuffle=generator is not None, generator=generator
    )


def _reporter(
    keras: Any,
    history: list[dict[str, float]],
    on_epoch: OnEpoch | None,
    unit: float,
    task: str,
    lr_of: Callable[[int], float],
) -> Any:
    """A callback that sets each epoch's learning rate (Keras' LearningRateScheduler reads
    it back in a way numpy 2.4 deprecates), turns Keras' epoch logs into gyre's metrics
    (regression losses back in the target's units) and hands them on."""

    class Report(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.model.optimizer.learning_rate.assign(lr_of(epoch))

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            lr = float(self.model.optimizer.learning_rate.value)
            metrics = {"loss": float(logs["loss"]) * unit, "lr": lr}
            if "val_loss" in logs:
                metrics["val_loss"] = float(logs["val_loss"]) * unit
                if task == CLASSIFICATION:
                    metrics["val_accuracy"] = float(logs["val_accuracy"])
                else:
                    metrics["val_rmse"] = float(np.sqrt(metrics["val_loss"]))
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch + 1, dict(metrics))

    return Report()


def _saved(model: Any) -> bytes:
    with torch_keras(), tempfile.TemporaryDirectory(prefix="gyre-keras-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def _loaded(data: bytes) -> Any:
    with torch_keras() as keras, tempfile.TemporaryDirectory(prefix="gyre-keras-") as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(data)
        _missing_to_median(keras)
        return keras.saving.load_model(path)
