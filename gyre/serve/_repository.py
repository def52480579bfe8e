"""The server's snapshot of the registry, and hot reload.

The registry (control plane) records changes; the server (data plane) polls its change
sequence, loads and warms new versions off the event loop, then swaps in a new immutable
snapshot with one assignment. Requests resolve a version once, so a request in flight
finishes on the version it started on; versions that left the registry are drained, then
dropped (availability-preserving, as TensorFlow Serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from gyre.config import ServeConfig
from gyre.errors import GyreError, NotFound, Unavailable
from gyre.registry import CHAMPION, ModelVersion, Registry
from gyre.serve._batching import Batcher
from gyre.serve._metrics import ServerMetrics
from gyre.serve._runtime import ModelRuntime

log = logging.getLogger("gyre.serve")


@dataclass(frozen=True)
class LoadedVersion:
    record: ModelVersion
    runtime: ModelRuntime
    batcher: Batcher

    @property
    def model(self) -> str:
        return self.record.model

    @property
    def version(self) -> int:
        return self.record.version


@dataclass(frozen=True)
class Snapshot:
    """What the server serves at one moment; never mutated after it is built."""

    versions: dict[str, dict[int, LoadedVersion]] = field(default_factory=dict)
    aliases: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)

    def model_versions(self, model: str) -> dict[int, LoadedVersion]:
        found = self.versions.get(model)
        if not found:
            reasons = [why for (name, _), why in self.failed.items() if name == model]
            if reasons:
                raise Unavailable(f"model `{model}` failed to load: {reasons[-1]}")
            served = ", ".join(sorted(self.versions)) or "none"
            raise NotFound(f"unknown model `{model}`; served models: {served}")
        return found

    def resolve(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> LoadedVersion:
        """A version by number, by alias (`label`), else the champion, else the latest."""
        versions = self.model_versions(model)
        aliases = self.aliases.get(model, {})
        if label is not None:
            if label not in aliases:
                raise NotFound(
                    f"model `{model}` has no alias `{label}`; aliases: "
                    f"{', '.join(sorted(aliases)) or 'none'}"
                )
            version = aliases[label]
        elif version is None:
            version = aliases.get(CHAMPION, max(versions))
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
        return loaded


class ModelRepository:
    """Keeps `snapshot` in step with the registry."""

    def __init__(self, registry: Registry, config: ServeConfig, metrics: ServerMetrics) -> None:
        self._registry = registry
        self._config = config
        self._metrics = metrics
        self.snapshot = Snapshot()
        self.ready = False
        self._seen_seq = -1
        # One thread reads the registry and builds sessions; another runs slow batches.
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="gyre-loader")
        self._inference: Executor = ThreadPoolExecutor(
            config.inference_threads, thread_name_prefix="gyre-infer"
        )
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        metrics.watch_queues(self._queue_depths)

    def _queue_depths(self) -> Iterable[tuple[str, str, int]]:
        for model, versions in self.snapshot.versions.items():
            for version, loaded in versions.items():
                yield model, str(version), loaded.batcher.queued_requests

    async def start(self) -> None:
        await self.refresh()
        self.ready = True
        self._task = asyncio.create_task(self._poll(), name="gyre-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(
            *(v.batcher.drain() for vs in self.snapshot.versions.values() for v in vs.values()),
            *self._retiring,
        )
        self._loader.shutdown(wait=False)
        self._inference.shutdown(wait=True)

    async def _poll(self) -> None:
        interval = self._config.reload_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # keep serving the last good snapshot
                log.exception("reloading the registry failed; serving the previous snapshot")

    async def refresh(self) -> None:
        """Load what changed in the registry and swap the snapshot."""
        loop = asyncio.get_running_loop()
        seq = await loop.run_in_executor(self._loader, self._registry.metadata.change_seq)
        if seq == self._seen_seq:
            return
        records, aliases = await loop.run_in_executor(self._loader, self._read_registry)
        old = self.snapshot
        versions: dict[str, dict[int, LoadedVersion]] = {}
        failed: dict[tuple[str, int], str] = {}
        loaded_any = False
        for record in records:
            current = old.versions.get(record.model, {}).get(record.version)
            if current is None and (record.model, record.version) in old.failed:
                failed[(record.model, record.version)] = old.failed[(record.model, record.version)]
                continue
            if current is None:
                try:
                    runtime = await loop.run_in_executor(self._loader, self._load, record)
                except GyreError as exc:
                    log.error("could not load %s:%s: %s", record.model, record.version, exc)
                    self._metrics.load_event(record.model, record.version, "failed")
                    failed[(record.model, record.version)] = str(exc)
                    continue
                current = LoadedVersion(record, runtime, self._batcher(runtime))
                loaded_any = True
                self._metrics.load_event(record.model, record.version, "loaded")
                log.info("loaded %s:%s", record.model, record.version)
            versions.setdefault(record.model, {})[record.version] = current
        self.snapshot = Snapshot(versions=versions, aliases=aliases, failed=failed)
        self._seen_seq = seq
        if loaded_any:
            _freeze_heap()
        for model, old_versions in old.versions.items():
            for version, loaded in old_versions.items():
                if version not in versions.get(model, {}):
                    task = asyncio.create_task(self._retire(loaded))
                    self._retiring.add(task)
                    task.add_done_callback(self._retiring.discard)

    def _read_registry(self) -> tuple[list[ModelVersion], dict[str, dict[str, int]]]:
        return self._registry.metadata.versions(), self._registry.metadata.aliases()

    def _load(self, record: ModelVersion) -> ModelRuntime:
        data = self._registry.onnx_bytes(record)
        runtime = ModelRuntime(
            record.model,
            record.version,
            data,
            record.signature,
            intra_op_threads=self._config.onnx_intra_op_threads,
        )
        runtime.warm_up()
        return runtime

    def _batcher(self, runtime: ModelRuntime) -> Batcher:
        settings = self._config.for_model(runtime.model)
        return Batcher(
            runtime,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            inline_inference_max_us=self._config.inline_inference_max_us,
            executor=self._inference,
            on_batch=self._metrics.batch_observer(runtime.model, str(runtime.version)),
        )

    async def _retire(self, loaded: LoadedVersion) -> None:
        await loaded.batcher.drain()
        self._metrics.load_event(loaded.model, loaded.version, "unloaded")
        log.info("unloaded %s:%s", loaded.model, loaded.version)


def _freeze_heap() -> None:
    """Move every object alive now (modules, sessions, the snapshot) out of the cyclic
    garbage collector's reach. Full collections then scan only request garbage: on the
    serving benchmark this cut p99 at 64 connections from ~20 ms to ~3 ms. Reference
    counting still frees frozen objects, so retired versions are released as before."""
    gc.collect()
    gc.freeze()
