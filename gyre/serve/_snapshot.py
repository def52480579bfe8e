"""What the server serves at one moment, and how a request finds its version."""

from __future__ import annotations

import random
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gyre.config import ModelServeConfig
from gyre.errors import NotFound, Unavailable
from gyre.registry import CHAMPION, DecisionThreshold, ModelVersion, check_policy, target_version
from gyre.serve._batcher import Batcher
from gyre.serve._runtime import Runtime, Tensors
from gyre.serve._selection import FixedChoice, ThompsonSampling, WeightedSplit
from gyre.types import DATATYPE_TO_NUMPY


@dataclass(frozen=True)
class LoadedVersion:
    record: ModelVersion
    runtime: Runtime
    batcher: Batcher
    settings: ModelServeConfig
    # One row of the model's default answer, per output; None: no default (504 instead).
    default_row: dict[str, np.ndarray] | None = None
    # The thread this version's batches run on when it has one of its own (Python models).
    executor: Executor | None = None
    # A binary classifier's decision threshold: the label it answers (`answer`).
    decision: DecisionThreshold | None = None

    @property
    def model(self) -> str:
        return self.record.model

    @property
    def version(self) -> int:
        return self.record.version

    def answer(self, outputs: Tensors) -> Tensors:
        """What the version answers for its runtime's `outputs`: a classifier's label
        recomputed with its decision threshold, if it has one; else `outputs`."""
        return outputs if self.decision is None else self.decision.apply(outputs)

    def default_outputs(self, rows: int) -> dict[str, np.ndarray]:
        assert self.default_row is not None
        return {name: np.repeat(row, rows, axis=0) for name, row in self.default_row.items()}


def default_row(record: ModelVersion, value: Any) -> dict[str, np.ndarray]:
    """The configured `default_output` as one row per output, checked against the signature."""
    if not isinstance(value, dict):
        raise ValueError("default_output must be a table of output name = value per row")
    outputs = {spec.name: spec for spec in record.signature.outputs}
    missing = sorted(set(outputs) - set(value))
    unknown = sorted(set(value) - set(outputs))
    if missing or unknown:
        raise ValueError(
            f"default_output of model `{record.model}` must give every output exactly: "
            f"missing {missing or 'none'}, unknown {unknown or 'none'}; outputs are "
            f"{', '.join(outputs)}"
        )
    row = {}
    for name, spec in outputs.items():
        array = np.array([value[name]], dtype=DATATYPE_TO_NUMPY[spec.datatype])
        want = tuple(1 if d < 0 else d for d in spec.shape)
        if array.shape != want[: array.ndim] or array.ndim != len(spec.shape):
            raise ValueError(
                f"default_output `{name}` of model `{record.model}` has per-row shape "
                f"{list(array.shape[1:])}; the output's row shape is {list(spec.shape[1:])}"
            )
        row[name] = array
    return row


Selector = FixedChoice | WeightedSplit | ThompsonSampling


@dataclass(frozen=True)
class Route:
    """A model's traffic policy, resolved to loaded versions."""

    kind: str
    selector: Selector
    shadow: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """Never mutated after it is built (a bandit's evidence aside)."""

    versions: dict[str, dict[int, LoadedVersion]] = field(default_factory=dict)
    aliases: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    # Stored entries that cannot be used, by (model, entry), with the reason.
    broken: dict[tuple[str, str], str] = field(default_factory=dict)

    def model_versions(self, model: str) -> dict[int, LoadedVersion]:
        found = self.versions.get(model)
        if not found:
            reasons = [why for (name, _), why in self.failed.items() if name == model]
            if reasons:
                raise Unavailable(f"model `{model}` failed to load: {reasons[-1]}")
            served = ", ".join(sorted(self.versions)) or "none"
            raise NotFound(f"unknown model `{model}`; served models: {served}")
        return found

    def decide(self, model: str, version: int | None = None, label: str | None = None) -> Decision:
        """The one traffic-policy decision of a request: a version by number, by alias
        (`label`), else by the model's policy; with the shadow to mirror it to and whether
        its answer is recorded for the bandit (both only when the policy chose)."""
        versions = self.model_versions(model)
        aliases = self.aliases.get(model, {})
        route = None
        if label is not None:
            if label not in aliases:
                raise NotFound(
                    f"model `{model}` has no alias `{label}`; aliases: "
                    f"{', '.join(sorted(aliases)) or 'none'}"
                )
            version, how = aliases[label], "alias"
        elif version is not None:
            how = "pinned"
        else:
            route = self.routes.get(model)
            if route is not None:
                version, how = route.selector.choose(), route.kind
            elif CHAMPION in aliases:
                version, how = aliases[CHAMPION], "champion"
            else:
                version, how = max(versions), "latest"
        loaded = versions.get(version)
        if loaded is None:
            if (model, version) in self.failed:
                raise Unavailable(
                    f"model `{model}` version {version} failed to load: "
                    f"{self.failed[(model, version)]}"
                )
            raise NotFound(
                f"model `{model}` has no version {version}; versions: "
                f"{', '.join(str(v) for v in sorted(versions))}"
            )
        if route is None:
            return Decision(loaded, how)
        shadow = None if route.shadow is None else versions.get(route.shadow)
        return Decision(loaded, how, shadow, bandit=route.kind == "bandit")

    def resolve(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> LoadedVersion:
        """The version `decide` chooses (for the routes that describe a model)."""
        return self.decide(model, version, label).loaded


class Decision:
    """Which version answers one request, and what else its traffic policy asks: the
    version to mirror the request to, off the request path (a shadow policy), and whether
    the answer is recorded for feedback (a bandit policy chose the version).

    `route` says how the version was chosen: `pinned` (the request named a version),
    `alias` (it named an alias), `champion` or `latest` (no policy: the champion alias,
    else the latest version), or the policy's kind: `split`, `shadow`, `bandit`.
    (A plain slotted class: one is made per request, and a frozen dataclass costs more.)"""

    __slots__ = ("bandit", "loaded", "route", "shadow")

    def __init__(
        self,
        loaded: LoadedVersion,
        route: str,
        shadow: LoadedVersion | None = None,
        *,
        bandit: bool = False,
    ) -> None:
        self.loaded = loaded
        self.route = route
        self.shadow = shadow
        self.bandit = bandit


def build_route(
    kind: str,
    params: dict[str, Any],
    versions: dict[int, LoadedVersion],
    aliases: dict[str, int],
    rng: random.Random,
    bandit_stats: dict[int, tuple[int, float]],
) -> Route | None:
    """A policy's targets (aliases or version numbers) resolved against what is loaded;
    targets that resolve to nothing loaded are left out (None: serve the default way).

    The stored policy is checked by the registry's own reader first: a policy it refuses
    (InvalidModel) is the caller's to report, and the model is served the default way."""
    params = check_policy(kind, params)

    def resolve(target: str) -> int | None:
        version = target_version(target, aliases)
        return version if version in versions else None

    if kind == "split":
        weights = [(resolve(t), w) for t, w in params["weights"].items()]
        usable = [(v, w) for v, w in weights if v is not None and w > 0]
        return Route(kind, WeightedSplit(usable, rng)) if usable else None
    if kind == "shadow":
        primary, shadow = resolve(params["primary"]), resolve(params["shadow"])
        if primary is None:
            return None
        return Route(kind, FixedChoice(primary), shadow if shadow != primary else None)
    if kind == "bandit":
        arms = sorted({v for v in (resolve(t) for t in params["arms"]) if v is not None})
        return Route(kind, ThompsonSampling(arms, bandit_stats, rng)) if arms else None
    return None
