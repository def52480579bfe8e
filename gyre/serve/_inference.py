"""One prediction, start to end: deadline, cache, batch, default answer, shadow, records."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from gyre.errors import DeadlineExceeded, GyreError, Overloaded, Unavailable
from gyre.monitor import FeedbackStore
from gyre.serve._cache import PredictionCache, cache_key
from gyre.serve._compare import Tolerance, compare
from gyre.serve._metrics import ServerMetrics
from gyre.serve._runtime import Tensors
from gyre.serve._snapshot import Decision, LoadedVersion
from gyre.serve.protocols._tensors import to_json_value
from gyre.types import FeatureBinding

log = logging.getLogger("gyre.serve")


class Prediction:
    """One answer: the version that gave it, its outputs, and whether it is a default."""

    __slots__ = ("default_reason", "loaded", "outputs", "request_id")

    def __init__(
        self,
        loaded: LoadedVersion,
        outputs: Tensors,
        request_id: str,
        default_reason: str | None = None,
    ) -> None:
        self.loaded = loaded
        self.outputs = outputs
        self.request_id = request_id
        self.default_reason = default_reason


def sooner(a_ms: float | None, b_ms: float | None) -> float | None:
    """The shorter of two deadlines a client asked for (None: not asked); every protocol
    combines its ways of asking with this before `Predictor.predict` caps it by the SLO."""
    if a_ms is None:
        return b_ms
    return a_ms if b_ms is None else min(a_ms, b_ms)


def _first_row(outputs: Tensors) -> Any:
    first = next(iter(outputs.values()))
    return first[0].tolist() if len(first) else None


class Predictor:
    def __init__(
        self, cache: PredictionCache, feedback: FeedbackStore, metrics: ServerMetrics
    ) -> None:
        self.cache = cache
        self.feedback = feedback
        self.metrics = metrics
        self.ids = feedback.ids
        self._mirrors: set[asyncio.Task[None]] = set()

    async def predict(
        self,
        decision: Decision,
        inputs: dict[str, np.ndarray],
        *,
        deadline_ms: float | None,
        features: FeatureBinding | None = None,
    ) -> Prediction:
        """Answer `inputs` with the decided version within `deadline_ms` (capped by the
        model's SLO); mirror them to the decision's shadow, and record the answer for the
        bandit when the decision says so. `features`: the inputs were built from this
        feature view, so a shadow bound to another view is not asked.
        """
        loaded = decision.loaded
        feeds, rows = loaded.runtime.validate(inputs)
        model, version = loaded.model, loaded.version
        settings = loaded.settings
        budget_ms = settings.latency_slo_ms
        if deadline_ms is not None:
            budget_ms = min(budget_ms, deadline_ms)
        key = None
        if settings.cache:
            key = cache_key(model, version, feeds)
            looked = time.perf_counter()
            hit = self.cache.get(key)
            self.metrics.cache_lookup(model, hit is not None, version, time.perf_counter() - looked)
            if hit is not None:
                return self._answer(loaded, hit, decision.bandit)
        loop = asyncio.get_running_loop()
        try:
            outputs = await loaded.batcher.submit(feeds, rows, loop.time() + budget_ms / 1000.0)
        except Overloaded:
            raise
        except (DeadlineExceeded, Unavailable) as exc:
            # The deadline passed, or the model's worker died with this request in flight.
            self.metrics.prediction(model, default=loaded.default_row is not None)
            if loaded.default_row is None:
                if isinstance(exc, Unavailable):
                    raise
                raise DeadlineExceeded(
                    f"{exc} ({budget_ms:g} ms); configure `default_output` for model "
                    f"`{model}` to answer a default instead"
                ) from None
            reason = (
                f"deadline of {budget_ms:g} ms exceeded"
                if isinstance(exc, DeadlineExceeded)
                else "model unavailable"
            )
            # Not the version's answer: no feedback can be about it.
            request_id = self.ids.issue(model, version, takes_feedback=False)
            return Prediction(loaded, loaded.default_outputs(rows), request_id, reason)
        self.metrics.prediction(model, default=False)
        if key is not None:
            self.cache.put(key, outputs)
        prediction = self._answer(loaded, outputs, decision.bandit)
        outputs = prediction.outputs  # what the shadow's answer is compared with
        shadow = decision.shadow
        if shadow is not None and features not in (None, shadow.runtime.signature.features):
            # Inputs built from a feature view mean nothing to a version trained on
            # another one.
            self.metrics.shadow(model, "error")
            log.info("shadow %s:%s not asked: it was trained on other features",
                     model, shadow.version)  # fmt: skip
        elif shadow is not None:
            task = asyncio.create_task(
                self._mirror(shadow, feeds, prediction.request_id, loaded, outputs)
            )
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)
        return prediction

    def _answer(self, loaded: LoadedVersion, outputs: Tensors, bandit: bool) -> Prediction:
        """The version's answer to its runtime's `outputs` (the cache holds those: a
        threshold changed since applies to them too) under a new request id; recorded
        for feedback (in memory, written off the request path) when a bandit chose it."""
        outputs = loaded.answer(outputs)
        request_id = self.ids.issue(loaded.model, loaded.version, takes_feedback=bandit)
        if bandit:
            self.feedback.record_served(
                request_id, loaded.model, loaded.version, _first_row(outputs)
            )
        return Prediction(loaded, outputs, request_id)

    async def _mirror(
        self,
        shadow: LoadedVersion,
        feeds: Tensors,
        request_id: str,
        primary: LoadedVersion,
        primary_outputs: Tensors,
    ) -> None:
        """Ask the shadow version too, off the request path; log both answers."""
        try:
            shadow_feeds, rows = shadow.runtime.validate(feeds)
            deadline = asyncio.get_running_loop().time() + shadow.settings.latency_slo_ms / 1000
            outputs = shadow.answer(await shadow.batcher.submit(shadow_feeds, rows, deadline))
        except GyreError as exc:
            self.metrics.shadow(primary.model, "error")
            log.info("shadow %s:%s failed: %s", shadow.model, shadow.version, exc)
            return
        settings = primary.settings
        result = compare(
            primary_outputs,
            outputs,
            Tolerance(settings.shadow_abs_tolerance, settings.shadow_rel_tolerance),
        )
        self.metrics.shadow(primary.model, "agree" if result.agree else "disagree")
        self.metrics.shadow_differences(primary.model, result.max_abs_diff, result.max_rel_diff)
        self.feedback.record_shadow(
            request_id,
            primary.model,
            (primary.version, {k: to_json_value(v) for k, v in primary_outputs.items()}),
            (shadow.version, {k: to_json_value(v) for k, v in outputs.items()}),
            result,
        )

    async def drain(self) -> None:
        if self._mirrors:
            await asyncio.gather(*self._mirrors, return_exceptions=True)
