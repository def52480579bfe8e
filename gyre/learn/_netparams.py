"""The parameters of the network families (`torch.mlp`, `torch.cnn`, `keras.mlp`), checked
without importing torch, and what each learning-rate schedule means."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gyre.learn._trainer import (
    Param,
    int_list,
    number,
    one_of,
    positive_int,
    positive_number,
    table_problems,
)

ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid", "elu")

#: The training parameters of every torch and Keras family.
TRAINING: Mapping[str, Param] = {
    "lr": positive_number(1e-3),
    "optimizer": one_of("adam", "adam", "sgd"),
    "momentum": number(0.9, 0.0, 1.0, high_open=True),
    "weight_decay": Param(0.0, "a number >= 0", lambda v: number(0, 0, math.inf).valid(v)),
    "schedule": one_of("none", "none", "cosine", "step"),
    "step_size": positive_int(10),
    "gamma": Param(0.1, "a number in (0, 1]", lambda v: number(0, 0, 1).valid(v) and v > 0),
    "batch_size": positive_int(64),
    "epochs": positive_int(50),
    "patience": positive_int(10),
    "threads": positive_int(1),
}
MLP: Mapping[str, Param] = {
    "hidden": int_list((64,)),
    "activation": one_of("relu", *ACTIVATIONS),
    "dropout": number(0.0, 0.0, 1.0, high_open=True),
    **TRAINING,
}
CNN: Mapping[str, Param] = {
    "image_shape": int_list((), length=3),
    "channels": int_list((16, 32), empty=False),
    "kernel_size": Param(3, "an odd positive integer", lambda v: _odd(v)),
    **MLP,
}


def _odd(value: Any) -> bool:
    return positive_int(1).valid(value) and value % 2 == 1


def param_problems(family: str, params: Mapping[str, Any]) -> list[str]:
    """Unknown or mistyped parameters, and those the other parameters leave unused."""
    table = CNN if family == "torch.cnn" else MLP
    problems = table_problems(family, table, params)
    if family == "torch.cnn" and "image_shape" not in params:
        problems.append(
            "parameter `image_shape` of `torch.cnn` is required: [channels, height, width] "
            "of the image each row holds (their product is the number of columns)"
        )
    if "momentum" in params and params.get("optimizer", "adam") != "sgd":
        problems.append(
            f'parameter `momentum` of `{family}` is used by optimizer "sgd" only; remove it '
            'or set optimizer = "sgd"'
        )
    for key in ("step_size", "gamma"):
        if key in params and params.get("schedule", "none") != "step":
            problems.append(
                f'parameter `{key}` of `{family}` is used by schedule "step" only; remove it '
                'or set schedule = "step"'
            )
    return problems


def lr_at(lr: float, schedule: str, epoch: int, epochs: int, step_size: int, gamma: float) -> float:
    """The learning rate of epoch `epoch` (counted from 0) under `schedule`."""
    if schedule == "cosine":
        return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2
    if schedule == "step":
        return float(lr * gamma ** (epoch // step_size))
    return lr
