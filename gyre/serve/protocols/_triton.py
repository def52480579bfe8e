"""Triton's extensions to the v2 protocol that its tools call, answered from gyre's own
state in the JSON shapes Triton answers (`tritonclient.http` `get_model_config`,
`get_inference_statistics`, `get_model_repository_index`):

| method | path | answer |
|---|---|---|
| GET | `/v2/models/{m}[/versions/{v}]/config` | the version's model configuration |
| GET | `/v2/models[/{m}[/versions/{v}]]/stats` | `{"model_stats": [...]}` per version |
| POST | `/v2/repository/index` | `[{"name", "version", "state", "reason"?}]` |

The configuration is what the server serves by: `max_batch_size` is the version's batch
cap when every tensor has a batch dimension (and then `dims` leave it out, as Triton's do),
else 0. The statistics are the counters the server measured (`_metrics.VersionTally`),
summed over its processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import Metric

from gyre._json import decode_object
from gyre.errors import BadRequest
from gyre.serve._metrics import INFERENCE_STATS
from gyre.serve._snapshot import LoadedVersion, Snapshot
from gyre.types import TensorSpec

# v2 datatype -> Triton's model-configuration data type (BYTES is TYPE_STRING there).
_CONFIG_TYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "BYTES": "TYPE_STRING",
}  # fmt: skip

INDEX_BODY = '{"ready"?: true|false} (or no body)'


def _tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    entry: dict[str, Any] = {
        "name": spec.name,
        "data_type": _CONFIG_TYPES[spec.datatype],
        # Triton needs at least one dimension: one element, reshaped to none.
        "dims": dims or [1],
    }
    if not dims:
        entry["reshape"] = {"shape": []}
    return entry


def model_config(loaded: LoadedVersion) -> dict[str, Any]:
    """Triton's model configuration of one served version."""
    runtime, settings = loaded.runtime, loaded.settings
    python = loaded.record.flavor == "python"
    batched = runtime.batchable
    config: dict[str, Any] = {
        "name": loaded.model,
        "platform": "" if python else "onnxruntime_onnx",
        "backend": "python" if python else "onnxruntime",
        # gyre serves every version the registry holds.
        "version_policy": {"all": {}},
        "max_batch_size": settings.max_batch_size if batched else 0,
        "input": [_tensor(spec, batched) for spec in runtime.signature.inputs],
        "output": [_tensor(spec, batched) for spec in runtime.signature.outputs],
    }
    if batched:
        config["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": round(settings.max_batch_delay_ms * 1000),
        }
    return config


def _measured(families: Iterable[Metric]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (model, version): every statistic's value, by `<stat>` (count), `<stat>_s`,
    `rows`, `executions` and `last`."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    for family in families:
        for sample in family.samples:
            name = sample.name
            if name == "gyre_inference_stat_total":
                key = sample.labels["stat"]
            elif name == "gyre_inference_stat_seconds_total":
                key = sample.labels["stat"] + "_s"
            elif name == "gyre_inferences_total":
                key = "rows"
            elif name == "gyre_executions_total":
                key = "executions"
            elif name == "gyre_last_inference_timestamp_seconds":
                key = "last"
            else:
                continue
            slot = found.setdefault((sample.labels["model"], sample.labels["version"]), {})
            slot[key] = slot.get(key, 0.0) + sample.value
    return found


def model_stats(families: Iterable[Metric], versions: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """Triton's statistics of these (model, version)s from the collected metrics."""
    measured = _measured(families)
    stats = []
    for model, version in versions:
        values = measured.get((model, str(version)), {})
        stats.append(
            {
                "name": model,
                "version": str(version),
                "last_inference": round(values.get("last", 0.0) * 1000),
                "inference_count": round(values.get("rows", 0.0)),
                "execution_count": round(values.get("executions", 0.0)),
                "inference_stats": {
                    stat: {
                        "count": round(values.get(stat, 0.0)),
                        "ns": round(values.get(f"{stat}_s", 0.0) * 1e9),
                    }
                    for stat in INFERENCE_STATS
                },
                # Per batch size times are not kept (gyre_batch_size_rows on /metrics has
                # the sizes).
                "batch_stats": [],
            }
        )
    return {"model_stats": stats}


def ready_only(body: bytes) -> bool:
    """The index request's `ready` flag (Triton: list only the ready versions)."""
    if not body.strip():
        return False
    request = decode_object(body, INDEX_BODY)
    ready = request.get("ready", False)
    unknown = sorted(set(request) - {"ready"})
    if not isinstance(ready, bool) or unknown:
        raise BadRequest(f"the repository index takes {INDEX_BODY}")
    return ready


def repository_index(
    snapshot: Snapshot, may_see: Callable[[str], bool], ready: bool
) -> list[dict[str, str]]:
    """Every version served (READY) and, unless `ready`, every version that failed to load
    (UNAVAILABLE, with the reason), of the models `may_see` lets the caller see."""
    entries: list[tuple[str, int, dict[str, str]]] = []
    for model, versions in snapshot.versions.items():
        if may_see(model):
            for version in versions:
                entries.append(
                    (model, version, {"name": model, "version": str(version), "state": "READY"})
                )
    if not ready:
        for (model, version), reason in snapshot.failed.items():
            if may_see(model):
                entry = {
                    "name": model, "version": str(version), "state": "UNAVAILABLE",
                    "reason": reason,
                }  # fmt: skip
                entries.append((model, version, entry))
    return [entry for _, _, entry in sorted(entries, key=lambda e: (e[0], e[1]))]
