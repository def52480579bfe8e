"""The PyTorch modules of gyre's torch trainers.

This module imports torch at its top, so that its classes can be pickled by name; only
`gyre.learn._torch` and `gyre.learn._keras` import it, when a torch or Keras trainer is
fitted, exported or unpickled, so `import gyre.learn` does not pull torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
}


def _dense(
    width: int, hidden: Sequence[int], activation: str, dropout: float, n_outputs: int
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, int(size)), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(size)
    return [*layers, nn.Linear(width, n_outputs)]


def mlp(
    width: int, hidden: Sequence[int], activation: str, dropout: float, n_outputs: int
) -> nn.Sequential:
    """Linear layers of `hidden` widths from `width` inputs, each followed by `activation`
    (and dropout when `dropout` > 0), then a linear layer to `n_outputs`."""
    return nn.Sequential(*_dense(width, hidden, activation, dropout, n_outputs))


def cnn(
    shape: tuple[int, int, int],
    channels: Sequence[int],
    kernel_size: int,
    hidden: Sequence[int],
    activation: str,
    dropout: float,
    n_outputs: int,
) -> nn.Sequential:
    """The rows reshaped to `shape` [C, H, W], one same-padded convolution per entry of
    `channels` (each followed by `activation`), flattened, then the layers of `mlp`."""
    c, h, w = shape
    layers: list[nn.Module] = [nn.Unflatten(1, shape)]
    for out in channels:
        layers += [nn.Conv2d(c, int(out), kernel_size, padding=kernel_size // 2),
                   ACTIVATIONS[activation]()]  # fmt: skip
        c = int(out)
    layers.append(nn.Flatten())
    return nn.Sequential(*layers, *_dense(c * h * w, hidden, activation, dropout, n_outputs))


def forward_rows(network: nn.Module, rows: np.ndarray, chunk: int) -> np.ndarray:
    """The network's outputs on `rows` as float32, in evaluation mode, `chunk` rows a pass."""
    network.eval()
    x = rows.astype(np.float32)
    with torch.no_grad():
        outs = [
            network(torch.from_numpy(x[i : i + chunk])).numpy() for i in range(0, len(x), chunk)
        ]
    return np.concatenate(outs)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax in torch, in float32: the same computation as the exported graph's."""
    result: np.ndarray = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    return result


class Prepare(nn.Module):
    """Missing values (NaN) to the training medians, then each column standardized with
    the training mean and standard deviation."""

    def __init__(self, median: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.median = nn.Buffer(median)
        self.mean = nn.Buffer(mean)
        self.scale = nn.Buffer(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), self.median, x)
        return (x - self.mean) / self.scale


class Network(nn.Module):
    """Rows in; logits (classification) or values in the target's units (regression) out.

    `raw` is the body's output before a regression target is put back in its units: what
    the loss is computed on during training (the targets standardized)."""

    def __init__(
        self,
        prepare: Prepare,
        body: nn.Module,
        target_mean: float | None = None,
        target_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.prepare = prepare
        self.body = body
        self.regression = target_mean is not None
        self.target_mean = nn.Buffer(torch.tensor([target_mean or 0.0]))
        self.target_scale = nn.Buffer(torch.tensor([target_scale or 1.0]))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(self.prepare(x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.raw(x)
        return out * self.target_scale + self.target_mean if self.regression else out


class Probabilities(nn.Module):
    """The class probabilities of a module that answers logits: what gyre serves."""

    def __init__(self, logits: nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


class InContext(nn.Module):
    """`module` called inside `context()`: a Keras model runs with its own Keras modules
    loaded (see `gyre.learn._keras`)."""

    def __init__(
        self, module: nn.Module, context: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        super().__init__()
        self.module = module
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.context():
            out: torch.Tensor = self.module(x)
            return out
