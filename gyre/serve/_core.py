"""What the routes of every protocol share: one request's context (`Call`), and the
server's parts they call through `Core`, so that each rule runs in one place.

A `Call` reads the repository's snapshot once, when the request is admitted: every
lookup of that request (authorization, the version, the shadow) sees the same models,
even if a reload swaps the snapshot while its body is read. `Core.decide` makes the one
traffic-policy decision of an inference request; `Core.infer` answers it, and hands the
answer to the prediction log (`gyre.monitor`), which writes it off the request path.
"""

from __future__ import annotations

import time

import numpy as np

from gyre.auth import Consumer, Gatekeeper
from gyre.config import ServeConfig
from gyre.features import ServedVector
from gyre.monitor import PredictionLog
from gyre.serve._answers import Labels, label_model
from gyre.serve._features import EntityFeatures
from gyre.serve._http import BodyBudget, Receive, Scope, read_body
from gyre.serve._inference import Prediction, Predictor
from gyre.serve._metrics import ServerMetrics
from gyre.serve._repository import ModelRepository
from gyre.serve._snapshot import Decision, Snapshot
from gyre.types import FeatureBinding


class Call:
    """One admitted request: who calls (None: no consumers are declared), its metric
    labels, the snapshot it is answered from, and when it arrived (perf_counter)."""

    __slots__ = ("consumer", "labels", "snapshot", "started")

    def __init__(
        self, consumer: Consumer | None, labels: Labels, snapshot: Snapshot, started: float
    ) -> None:
        self.consumer = consumer
        self.labels = labels
        self.snapshot = snapshot
        self.started = started

    def may_see(self, model: str) -> bool:
        return self.consumer is None or self.consumer.may_call(model)


class Core:
    """The server process's models, predictor, gatekeeper, online features and limits."""

    def __init__(
        self,
        config: ServeConfig,
        repository: ModelRepository,
        metrics: ServerMetrics,
        predictor: Predictor,
        gatekeeper: Gatekeeper,
        features: EntityFeatures | None = None,
        predictions: PredictionLog | None = None,
    ) -> None:
        self.config = config
        self.repository = repository
        self.metrics = metrics
        self.predictor = predictor
        self.gatekeeper = gatekeeper
        self.features = features
        self.predictions = predictions
        self.bodies = BodyBudget(config.inflight_body_budget_bytes)

    def call(self, consumer: Consumer | None, labels: Labels, started: float) -> Call:
        return Call(consumer, labels, self.repository.snapshot, started)

    def authorize(self, call: Call, model: str) -> None:
        """May the caller call `model` (403 if not); the model names the request's metrics
        only if it is served (a made-up name must not become a metric series)."""
        label_model(call.labels, model, call.snapshot.versions)
        self.gatekeeper.authorize(call.consumer, model=model)

    def decide(
        self,
        call: Call,
        model: str,
        version: int | None = None,
        label: str | None = None,
        *,
        inference: bool = False,
    ) -> Decision:
        """The version that answers (`Snapshot.decide`), named in the request's labels;
        `inference`: the request asks for a prediction, so its answer, success or failure,
        counts in that version's inference statistics."""
        decision = call.snapshot.decide(model, version, label)
        call.labels.version = str(decision.loaded.version)
        if inference:
            call.labels.inference = decision.loaded.version
        return decision

    async def body(self, scope: Scope, receive: Receive) -> bytes:
        return await read_body(scope, receive, self.config.max_body_bytes)

    async def infer(
        self,
        call: Call,
        decision: Decision,
        inputs: dict[str, np.ndarray],
        deadline_ms: float | None,
        *,
        vectors: list[ServedVector] | None = None,
    ) -> Prediction:
        """Answer `inputs` as `decision` says, within `deadline_ms` (the client's; the
        model's SLO caps it), and log the answer (sampled per model). `vectors`: the
        feature vectors the inputs were built from (an entity request), logged with the
        answer's request id, and in the prediction log instead of the inputs."""
        loaded = decision.loaded
        binding: FeatureBinding | None = None
        if vectors is not None:
            binding = loaded.runtime.signature.features
        prediction = await self.predictor.predict(
            decision, inputs, deadline_ms=deadline_ms, features=binding
        )
        if vectors is not None and self.features is not None:
            self.features.record(prediction.request_id, loaded, vectors)
        log = self.predictions
        if log is not None and log.sampled(loaded.settings.prediction_log_sample):
            labels = call.labels
            log.record(
                prediction.request_id, loaded.model, loaded.version, decision.route,
                labels.protocol, labels.consumer, inputs, prediction.outputs,
                time.perf_counter() - call.started, prediction.default_reason, vectors,
            )  # fmt: skip
        return prediction
