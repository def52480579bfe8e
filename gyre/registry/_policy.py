"""Traffic policies: how requests that name only a model are spread over its versions.

A policy's targets are aliases (`champion`, `challenger`, …) or version numbers, resolved
by the server against the live aliases, so moving an alias moves the traffic with it.

| kind | params | behaviour |
|---|---|---|
| `champion` | `{}` | everything to the champion (the default) |
| `split` | `{"weights": {"champion": 90, "challenger": 10}}` | fixed random split (canary) |
| `shadow` | `{"primary": "champion", "shadow": "challenger"}` | answer: primary; mirror: shadow |
| `bandit` | `{"arms": ["champion", "challenger"]}` | Thompson sampling on posted rewards |
"""

from __future__ import annotations

import math
from typing import Any

from gyre.errors import InvalidModel

KINDS = ("champion", "split", "shadow", "bandit")


def _target(value: Any, where: str) -> str:
    text = str(value)
    if not text or any(c in text for c in " /:@~"):
        raise InvalidModel(f"{where}: {value!r} is not an alias or a version number")
    return text


def check_policy(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The policy's params, normalised; a clear error when they do not fit the kind."""
    if kind == "champion":
        return {}
    if kind == "split":
        weights = params.get("weights")
        if not isinstance(weights, dict) or len(weights) < 1:
            raise InvalidModel('split needs {"weights": {"champion": 90, "challenger": 10}}')
        clean = {}
        for target, weight in weights.items():
            if (
                not isinstance(weight, (int, float))
                or isinstance(weight, bool)
                or not 0 <= weight < math.inf  # NaN fails too
            ):
                raise InvalidModel(f"split weight of {target!r} must be a finite number >= 0")
            clean[_target(target, "split")] = float(weight)
        if sum(clean.values()) <= 0:
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
