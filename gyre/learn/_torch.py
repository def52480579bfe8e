"""PyTorch trainers: an MLP for tabular rows (`torch.mlp`) and a small CNN for rows that are
images (`torch.cnn`), and the training loop they share.

The loop: medians (for NaN) and each column's mean and standard deviation are learned on
the training rows and become the network's first module (so the exported graph holds
them); a regression target is standardized for training and put back in its units by the
network. Each epoch visits the rows in an order drawn from a local `torch.Generator`, in
mini-batches of `batch_size`, each one forward, backward (autograd) and an optimizer step
(Adam or SGD with momentum, `weight_decay` as L2). The learning rate of epoch e (from 0) is
`lr` (schedule "none"), `lr * (1 + cos(pi * e / epochs)) / 2` ("cosine"), or
`lr * gamma ** (e // step_size)` ("step"). With validation rows, training stops after
`patience` epochs without a lower `val_loss`, and the weights of the best epoch are kept.
Each epoch reports `loss` (the mean mini-batch loss of the epoch, in the target's units),
`lr`, and with validation `val_loss` and `val_accuracy` or `val_rmse` (the model in
evaluation mode: no dropout).

Reproducibility on CPU: the seed seeds torch's global generator inside `fork_rng` (so the
caller's generator state is left as it was) for the initial weights and dropout, and the
local generator that shuffles; `torch.use_deterministic_algorithms(True)` and a fixed
intra-op thread count (`threads`, default 1) hold during fit and predict. With the same
seed, parameters, rows, thread count and torch build, two fits give bitwise identical
weights and predictions here; across machines or torch builds (other CPU kernels) they may
differ in the last bits, which `gyre runs verify` allows within its tolerance.

torch is imported only inside these functions: `import gyre.learn` does not need it.
"""

from __future__ import annotations

import contextlib
import math
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator

from gyre.errors import LearnError, SpecError
from gyre.learn._netparams import CNN, MLP, lr_at
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
    scores,
    table_problems,
)

EXTRA = "pip install 'gyre[torch]'"
#: Rows per forward pass when predicting (bounds the memory of a large predict).
PREDICT_CHUNK = 65_536


def require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise LearnError(
            f"training a PyTorch model needs torch; install it with: {EXTRA}"
        ) from None
    return torch


@contextlib.contextmanager
def reproducible(seed: int | None, threads: int) -> Iterator[None]:
    """torch seeded with `seed` (the caller's generator state restored after), running
    deterministic algorithms on `threads` intra-op threads."""
    torch = require_torch()
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(threads_before)
            torch.use_deterministic_algorithms(deterministic_before)


def column_statistics(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median, mean, scale) of each column as float32: the median of its present values
    (0 for a column with none), then the mean and standard deviation (1 where it is 0) of
    the column with its missing values set to that median."""
    present = ~np.isnan(rows)
    median = np.array(
        [np.median(col[ok]) if ok.any() else 0.0 for col, ok in zip(rows.T, present.T, strict=True)]
    )
    filled = np.where(present, rows, median)
    std = filled.std(axis=0)
    return (
        median.astype(np.float32),
        filled.mean(axis=0).astype(np.float32),
        np.where(std > 0, std, 1.0).astype(np.float32),
    )


@dataclass
class Fitted:
    """What the loop leaves: the history and the epoch whose weights were kept."""

    history: list[dict[str, float]]
    best_epoch: int


class _TorchTrainer(TrainerBase, BaseEstimator):  # type: ignore[misc]
    """What the MLP and the CNN share: the checks, the loop and the predictions."""

    gyre_flavor = "torch"
    family = "torch.mlp"
    task: str
    hidden: Any
    activation: str
    dropout: float
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    schedule: str
    step_size: int
    gamma: float
    batch_size: int
    epochs: int
    patience: int
    threads: int
    seed: int

    def _checked(self) -> str:
        task = check_task(self.task)
        params = self.get_params()
        # A missing image_shape is the CNN's own error (in `_body`), not a mistyped value.
        unset = {"task", "seed"} | ({"image_shape"} if params.get("image_shape") is None else set())
        given = {k: v for k, v in params.items() if k not in unset}
        table = CNN if self.family == "torch.cnn" else MLP
        problems = table_problems(self.family, table, given)
        if problems:
            raise SpecError(f"family `{self.family}` ({task}): " + "; ".join(problems))
        return task

    @abstractmethod
    def _body(self, n_features: int, n_outputs: int) -> Any:
        """The network between the standardized rows and the outputs."""

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation: Validation | None = None,
        on_epoch: OnEpoch | None = None,
    ) -> Self:
        torch = require_torch()
        from gyre.learn import _torchnets

        task = self._checked()
        rows = as_rows(X)
        target = as_targets(y, len(rows), task)
        checked = checked_validation(validation, rows.shape[1], task)
        median, mean, scale = (torch.from_numpy(s) for s in column_statistics(rows))
        classes = classes_of(target) if task == CLASSIFICATION else None
        with reproducible(self.seed, self.threads):
            if classes is not None:
                body = self._body(rows.shape[1], len(classes))
                network = _torchnets.Network(_torchnets.Prepare(median, mean, scale), body)
                targets = torch.from_numpy(class_indices(classes, target).astype(np.int64))
                unit = 1.0
            else:
                t_mean, t_std = float(target.mean()), float(target.std()) or 1.0
                body = self._body(rows.shape[1], 1)
                network = _torchnets.Network(
                    _torchnets.Prepare(median, mean, scale), body, t_mean, t_std
                )
                standard = ((target - t_mean) / t_std).astype(np.float32).reshape(-1, 1)
                targets, unit = torch.from_numpy(standard), t_std**2
            fitted = self._loop(network, rows, targets, unit, checked, classes, on_epoch)
        self.model_ = network
        self.history_ = fitted.history
        self.best_epoch_ = fitted.best_epoch
        self.n_features_in_ = rows.shape[1]
        if classes is not None:
            self.classes_ = classes
        return self

    def _loop(
        self,
        network: Any,
        rows: np.ndarray,
        targets: Any,
        unit: float,
        validation: Validation | None,
        classes: np.ndarray | None,
        on_epoch: OnEpoch | None,
    ) -> Fitted:
        """Train `network` on (rows, targets): see the module docstring."""
        torch = require_torch()
        functional = torch.nn.functional
        loss_of = functional.cross_entropy if classes is not None else functional.mse_loss
        if self.optimizer == "sgd":
            optimizer = torch.optim.SGD(network.parameters(), lr=self.lr, momentum=self.momentum,
                                        weight_decay=self.weight_decay)  # fmt: skip
        else:
            optimizer = torch.optim.Adam(
                network.parameters(), lr=self.lr, weight_decay=self.weight_decay
            )
        generator = torch.Generator().manual_seed(self.seed)
        x = torch.from_numpy(rows.astype(np.float32))
        history: list[dict[str, float]] = []
        best_loss, best_epoch, best_state = math.inf, 0, None
        for epoch in range(1, self.epochs + 1):
            lr = lr_at(self.lr, self.schedule, epoch - 1, self.epochs, self.step_size, self.gamma)
            for group in optimizer.param_groups:
                group["lr"] = lr
            network.train()
            total = 0.0
            order = torch.randperm(len(x), generator=generator)
            for batch in torch.split(order, self.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_of(network.raw(x[batch]), targets[batch])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            metrics = {"loss": total / len(x) * unit, "lr": lr}
            if not math.isfinite(metrics["loss"]):
                raise LearnError(
                    f"{self.family}: training diverged in epoch {epoch} (the loss is not finite); "
                    f"lower `lr` (now {self.lr:g})"
                )
            stop = False
            if validation is not None:
                metrics |= self._validation_scores(network, validation, classes)
                if metrics["val_loss"] < best_loss:
                    best_loss, best_epoch = metrics["val_loss"], epoch
                    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                stop = epoch - best_epoch >= self.patience
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, dict(metrics))
            if stop:
                break
        if best_state is None:
            return Fitted(history, len(history))
        network.load_state_dict(best_state)
        return Fitted(history, best_epoch)

    def _validation_scores(
        self, network: Any, validation: Validation, classes: np.ndarray | None
    ) -> dict[str, float]:
        rows, target = validation
        from gyre.learn import _torchnets

        out = _torchnets.forward_rows(network, rows, PREDICT_CHUNK)
        if classes is None:
            return scores(self.task, target, prefix="val_", values=out)
        proba = _torchnets.softmax(out)
        return scores(self.task, target, prefix="val_", proba=proba, classes=classes)

    def _outputs(self, X: Any) -> np.ndarray:
        from gyre.learn import _torchnets

        self._check_fitted()
        rows = as_rows(X, self.n_features_in_)
        with reproducible(None, self.threads):
            return _torchnets.forward_rows(self.model_, rows, PREDICT_CHUNK)

    def predict(self, X: Any) -> np.ndarray:
        if self.task == CLASSIFICATION:
            proba = self.predict_proba(X)
            return np.asarray(self.classes_[np.argmax(proba, axis=1)])
        return self._outputs(X)[:, 0].astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task != CLASSIFICATION:
            raise LearnError(f"this {self.family} trainer is a regressor; it has no predict_proba")
        from gyre.learn import _torchnets

        return _torchnets.softmax(self._outputs(X)).astype(np.float64)

    def onnx_module(self) -> Any:
        """The module the registry exports: FP32 rows [N, F] in; class probabilities [N, k]
        (classification) or values [N, 1] out."""
        from gyre.learn import _torchnets

        self._check_fitted()
        if self.task == CLASSIFICATION:
            return _torchnets.Probabilities(self.model_)
        return self.model_


class TorchMLP(_TorchTrainer):
    """A multilayer perceptron on tabular rows (`torch.mlp`): `hidden` widths, each layer
    followed by `activation` and, when `dropout` > 0, dropout."""

    family = "torch.mlp"

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

    def _body(self, n_features: int, n_outputs: int) -> Any:
        from gyre.learn import _torchnets

        return _torchnets.mlp(n_features, self.hidden, self.activation, self.dropout, n_outputs)


class TorchCNN(_TorchTrainer):
    """A small convolutional network (`torch.cnn`): each row reshaped to `image_shape`
    [C, H, W], one same-padded convolution of `kernel_size` per entry of `channels`
    (each followed by `activation`), then the dense layers of `hidden` as in the MLP."""

    family = "torch.cnn"

    def __init__(
        self,
        task: str = CLASSIFICATION,
        image_shape: Any = None,
        channels: Any = (16, 32),
        kernel_size: int = 3,
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
        self.image_shape = image_shape
        self.channels = channels
        self.kernel_size = kernel_size
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

    def _body(self, n_features: int, n_outputs: int) -> Any:
        from gyre.learn import _torchnets

        if self.image_shape is None:
            raise SpecError("torch.cnn needs `image_shape`: [channels, height, width] of a row")
        c, h, w = (int(d) for d in self.image_shape)
        if c * h * w != n_features:
            raise LearnError(
                f"torch.cnn: image_shape [{c}, {h}, {w}] holds {c * h * w} values, but the rows "
                f"have {n_features} columns; give the shape of the image each row holds"
            )
        return _torchnets.cnn((c, h, w), self.channels, self.kernel_size, self.hidden,
                              self.activation, self.dropout, n_outputs)  # fmt: skip
