"""Entity requests: a model published with a feature view is called with entity keys; the
server builds the input from the online features, and logs the exact vector it used."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gyre.config import FeaturesConfig
from gyre.errors import BadRequest, FeatureViewMismatch, UnknownFeatureView
from gyre.features import OnlineFeatures, ServedVector
from gyre.monitor import ServedLog
from gyre.serve._metrics import ServerMetrics
from gyre.serve._snapshot import LoadedVersion

log = logging.getLogger("gyre.serve")

EXPECTED = (
    '"parameters": {"entity": {"KEY": VALUE, …} or [{…}, …], '
    '"request_features"?: {"NAME": VALUE, …} or [{…}, …]}'
)


class EntityFeatures:
    """The online features of this server process, and the log of what it served."""

    def __init__(
        self,
        online: OnlineFeatures,
        served: ServedLog | None,
        config: FeaturesConfig,
        snapshot: Path,
        metrics: ServerMetrics,
    ) -> None:
        self.online = online
        self.served = served
        self.config = config
        self.snapshot = snapshot if config.snapshot_interval_s > 0 else None
        self.metrics = metrics

    def start(self) -> None:
        """Load the online state (from the snapshot, if any and still valid), read the
        fact log from there (before the server is ready), then follow it."""
        if self.snapshot is not None and self.online.load_snapshot(self.snapshot):
            log.info("online features restored from %s", self.snapshot)
        self.online.refresh()
        self.online.follow(
            self.config.follow_interval_ms / 1000.0, self.snapshot, self.config.snapshot_interval_s
        )

    def close(self) -> None:
        self.online.close()
        if self.snapshot is not None:
            try:
                self.online.save_snapshot(self.snapshot)
            except OSError as exc:
                log.warning("could not save the online snapshot: %s", exc)
        if self.served is not None:
            self.served.close()

    def inputs(
        self, loaded: LoadedVersion, parameters: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], list[ServedVector]]:
        """The model input for the entities named in `parameters`, and the vectors."""
        signature = loaded.runtime.signature
        what = loaded.runtime.what
        binding = signature.features
        if binding is None:
            raise BadRequest(
                f"{what} was published without a feature view, so it cannot be called with "
                "an entity; send `inputs`, or publish it with `features=VIEW`"
            )
        view = self.online.views.get(binding.view)
        if view is None:
            raise UnknownFeatureView(
                f"{what} was trained on feature view `{binding.view}`, which this server does "
                "not declare; add it to [features.views]"
            )
        if view.definition_hash != binding.definition_hash:
            raise FeatureViewMismatch(
                f"{what} was trained on feature view `{view.name}` with definition "
                f"{binding.definition_hash[:12]}, but the server declares "
                f"{view.definition_hash[:12]}; retrain and publish on the current definition, "
                "or restore the old one"
            )
        entities = _listed(parameters["entity"], "entity")
        sent = _listed(parameters.get("request_features", {}), "request_features")
        if len(sent) == 1 and len(entities) > 1:
            sent = sent * len(entities)
        if len(sent) != len(entities):
            raise BadRequest(
                f"{len(entities)} entities but {len(sent)} request_features objects; "
                f"send one object for all or one per entity: {EXPECTED}"
            )
        started = time.perf_counter()
        vectors = self.online.vectors(view.name, entities, sent)
        table = view.matrix([vector.values for vector in vectors])
        self.metrics.features_built(
            view.name, len(vectors), time.perf_counter() - started, vectors[0].watermark
        )
        return {signature.inputs[0].name: table}, vectors

    def record(self, request_id: str, loaded: LoadedVersion, vectors: list[ServedVector]) -> None:
        if self.served is not None:
            for vector in vectors:
                self.served.record(request_id, loaded.model, loaded.version, vector)


def _listed(value: Any, name: str) -> list[Mapping[str, Any]]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        raise BadRequest(f"parameters.{name} must be an object or a non-empty list of objects")
    return items
