"""Traffic policies: how requests that name only a model are spread over its versions.

A policy's targets are aliases (`champion`, `challenger`, …) or version numbers, resolved
by the server against the live aliases, so moving an alias moves the traffic with it.

`check_policy` is the one reader of a policy: the registry runs it before it stores one,
and the server runs it again on what it reads back, so a stored value the server cannot
use (written by hand, or by an older gyre) is reported as broken instead of failing the
reload.

| kind | params | behaviour |
|---|---|---|
| `champion` | `{}` | everything to the champion (the default) |
| `split` | `{"weights": {"champion": 90, "challenger": 10}}` | fixed random split (canary) |
| `shadow` | `{"primary": "champion", "shadow": "challenger"}` | answer: primary; mirror: shadow |
| `bandit` | `{"arms": ["champion", "challenger"]}` | Thompson sampling on posted rewards |
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

from gyre._numbers import parse_count
from gyre.errors import InvalidModel, shown
from gyre.registry._names import check_name

KINDS = ("champion", "split", "shadow", "bandit")


def _target(value: Any, where: str) -> str:
    """A target as stored: a version number (ASCII digits, 1 or more) or an alias name."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    number = parse_count(text) if isinstance(text, str) else None
    if number:
        return str(number)
    if isinstance(text, str):
        with contextlib.suppress(InvalidModel):
            return check_name("alias", text)
    raise InvalidModel(
        f"{where}: {value!r} is not an alias name or a version number (ASCII digits, from 1)"
    )


def target_version(target: str, aliases: Mapping[str, int]) -> int | None:
    """The version a checked target names now: its number, or where its alias points."""
    number = parse_count(target)
    return number if number is not None else aliases.get(target)


def check_policy(kind: Any, params: Any) -> dict[str, Any]:
    """The policy's params, normalised; a clear error when they do not fit the kind."""
    if not isinstance(params, dict):
        raise InvalidModel(f"a policy's params must be an object, got {type(params).__name__}")
    if kind == "champion":
        return {}
    if kind == "split":
        weights = params.get("weights")
        if not isinstance(weights, dict) or len(weights) < 1:
            raise InvalidModel('split needs {"weights": {"champion": 90, "challenger": 10}}')
        clean = {}
        for target, weight in weights.items():
            checked = _target(target, "split")
            clean[checked] = _weight(checked, weight)
        total = sum(clean.values())  # inf when the weights are too large to add
        if not total < math.inf:
            raise InvalidModel(
                "split weights must add up to a finite number; use shares such as 90 and 10"
            )
        if total <= 0:
            raise InvalidModel("split weights must not all be 0")
        return {"weights": clean}
    if kind == "shadow":
        primary, shadow = params.get("primary", "champion"), params.get("shadow")
        if shadow is None:
            raise InvalidModel('shadow needs {"shadow": "challenger"} (and optionally "primary")')
        return {"primary": _target(primary, "shadow"), "shadow": _target(shadow, "shadow")}
    if kind == "bandit":
        arms = params.get("arms")
        if not isinstance(arms, list) or len(arms) < 2:
            raise InvalidModel('bandit needs {"arms": ["champion", "challenger"]} (two or more)')
        return {"arms": [_target(arm, "bandit") for arm in arms]}
    raise InvalidModel(f"unknown traffic policy {kind!r}; use one of {', '.join(KINDS)}")


def targets(kind: str, params: dict[str, Any]) -> list[str]:
    """The targets a checked policy names."""
    if kind == "split":
        return list(params["weights"])
    if kind == "shadow":
        return [params["primary"], params["shadow"]]
    if kind == "bandit":
        return list(params["arms"])
    return []


def serving_targets(kind: str, params: dict[str, Any]) -> list[str]:
    """The targets of a checked policy whose answers reach clients: a split's targets of
    weight above 0, a shadow's primary (its shadow's answers are only compared), a
    bandit's arms. Only a blessed version may be one (`Aliases.set_policy`)."""
    if kind == "split":
        return [target for target, weight in params["weights"].items() if weight > 0]
    if kind == "shadow":
        return [params["primary"]]
    return targets(kind, params)


def _weight(target: str, weight: Any) -> float:
    value = math.nan
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):
        try:
            value = float(weight)
        except OverflowError:  # an integer of hundreds of digits
            value = math.inf
    if not 0 <= value < math.inf:  # NaN fails too
        raise InvalidModel(
            f"split weight of {target!r} must be a finite number >= 0, got {shown(weight)}"
        )
    return value


def parse_weights(text: str) -> dict[str, float]:
    """`champion=90,challenger=10` -> {"champion": 90.0, "challenger": 10.0}."""
    weights = {}
    for part in text.split(","):
        target, _, weight = part.partition("=")
        try:
            weights[target.strip()] = float(weight)
        except ValueError:
            raise InvalidModel(
                f"bad split {part!r}: write TARGET=WEIGHT, e.g. champion=90,challenger=10"
            ) from None
    return weights
