"""`gyre train SPEC`: a spec checked whole, its training data built at one watermark of the
fact log, a trainer fitted with the spec's seed, the split's metrics, and all of it
recorded as a run (parameters, per-epoch and final metrics, per-stage timings, the
environment, lineage and artifacts) through the tracking API.

A run is the unit of reproduction: `verify` rebuilds the training data from the recorded
spec at the recorded watermark, refits with the recorded seed and compares.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gyre.collect import FactLog
from gyre.config import Config
from gyre.errors import MonitorError, RunError
from gyre.features import FactCache, index_view_facts, read_view_facts
from gyre.learn._check import Resolved, resolve
from gyre.learn._data import LabelledRows, TrainingData, build, labelled_rows
from gyre.learn._lineage import code_version, environment
from gyre.learn._metrics import score
from gyre.learn._plot import curves_svg
from gyre.learn._spec import TableRows, TrainingSpec
from gyre.learn._trainer import evenly_spaced
from gyre.stores import Stores

logger = logging.getLogger("gyre.learn")
SAMPLE_ROWS = 1_000  # training rows kept with the model: the publish-time parity check's


class Reporter(Protocol):
    """Where a training run shows its progress (the CLI draws it; the API is silent)."""

    def started(self, run_id: str) -> None: ...

    def stage(self, name: str) -> None: ...

    def epoch(self, epoch: int, metrics: Mapping[str, float]) -> None: ...


class _Silent:
    def started(self, run_id: str) -> None:
        pass

    def stage(self, name: str) -> None:
        pass

    def epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        pass


@dataclass
class _Clock:
    reporter: Reporter
    timings_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.reporter.stage(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = round(time.perf_counter() - started, 6)


@dataclass(frozen=True)
class Checked:
    """A spec checked against the config and its data, without training (`--dry-run`)."""

    spec: TrainingSpec
    resolved: Resolved
    watermark: int
    rows: LabelledRows


@dataclass(frozen=True)
class Fitted:
    data: TrainingData
    trainer: Any
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    timings_s: dict[str, float]
    model_bytes: bytes | None = None  # the trainer pickled (joblib), when `fit` kept it
    profile_bytes: bytes | None = None  # the training rows' input profile, when `fit` kept it
    profiled: bool = False  # `fit` took the profile (None when there is none to take)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    fitted: Fitted


def check(
    spec: TrainingSpec, config: Config, log: FactLog, watermark: int | None = None
) -> Checked:
    """Everything `train` checks before fitting: the spec against the config, the table's
    columns, the rows and their labels (leakage of labels included)."""
    resolved = resolve(spec, config)
    mark = log.watermark() if watermark is None else watermark
    rows = labelled_rows(spec, log, resolved, mark, fact_cache(config))
    return Checked(spec, resolved, mark, rows)


def fact_cache(config: Config) -> FactCache:
    """Where training keeps the facts it decoded from the log (`gyre.features.FactCache`)."""
    return FactCache.under(config.home)


def fit(
    spec: TrainingSpec,
    config: Config,
    log: FactLog,
    *,
    watermark: int | None = None,
    reporter: Reporter | None = None,
    on_epoch: Any = None,
    export: Path | None = None,
    keep_model: bool = False,
) -> Fitted:
    """Build the training data and fit the spec's trainer (and baseline); no recording.
    `export`: a `gyre events export` folder the views' older facts are read from;
    `keep_model`: pickle the fitted trainer beside scoring it where it may be (a run's
    artifact, `Fitted.model_bytes`), and take the training rows' input profile
    (`Fitted.profile_bytes`) while the trainer fits."""
    from gyre.learn._trainer import make_trainer

    clock = _Clock(reporter or _Silent())
    cache = fact_cache(config)
    # The views' facts are read with the rows and indexed beside building them: the index
    # is pure work on arrays (a sort), the rows and labels mostly a DuckDB join.
    with ThreadPoolExecutor(1, thread_name_prefix="gyre-facts") as pool:
        with clock.stage("rows"):
            resolved = resolve(spec, config)
            mark = log.watermark() if watermark is None else watermark
            indexing = [
                pool.submit(index_view_facts, read_view_facts(log, v, mark, export=export,
                                                              cache=cache))
                for v in resolved.views
            ]  # fmt: skip
            rows = labelled_rows(spec, log, resolved, mark, cache)
        with clock.stage("features"):
            facts = [job.result() for job in indexing]
            data = build(spec, rows, log, resolved.views, mark, export, cache, facts)
    trainer = make_trainer(spec.model.family, spec.task, spec.model.params, spec.seed)
    x_train, y_train = data.part("train")
    validation = data.part("validation") if len(data.validation) else None

    def epoch(number: int, metrics: dict[str, float]) -> None:
        if on_epoch is not None:  # recorded first: what is shown is in the run
            on_epoch(number, metrics)
        clock.reporter.epoch(number, metrics)

    with ThreadPoolExecutor(1, thread_name_prefix="gyre-profile") as pool:
        # The input profile is sorts and counts on the training rows alone (no GIL held):
        # taken while the trainer fits and is scored, on a core the fit may leave idle.
        profiling = pool.submit(_profile, data) if keep_model else None
        with clock.stage("fit"):
            trainer.fit(x_train, y_train, validation=validation, on_epoch=epoch)
        # A model that is only read from threads is pickled for the run while it is scored.
        early = keep_model and getattr(trainer, "predicts_in_threads", False)
        pickling = pool.submit(_model_bytes, trainer) if early else None
        with clock.stage("evaluate"):
            metrics = _scores(spec.task, trainer, data)
            baseline: dict[str, float] = {}
            if spec.baseline is not None:
                simple = make_trainer(
                    spec.baseline.family, spec.task, spec.baseline.params, spec.seed
                )
                simple.fit(x_train, y_train, validation=validation)
                baseline = score(spec.task, simple, *data.part("holdout"))
        profile = None if profiling is None else profiling.result()
        model = None if pickling is None else pickling.result()
    return Fitted(
        data, trainer, metrics, baseline, clock.timings_s, model, profile, profiling is not None
    )


def _model_bytes(trainer: Any) -> bytes:
    """The fitted trainer as the run's `model` artifact (joblib)."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(trainer, buffer)
    return buffer.getvalue()


def _scores(task: str, model: Any, data: TrainingData) -> dict[str, float]:
    """Holdout metrics under their plain names; validation and train ones prefixed. The
    train metrics are taken on at most TRAIN_SCORE_ROWS training rows, evenly spaced.
    Where the trainer may predict from several threads, each part's rows are predicted a
    slice per core (a row's prediction does not depend on its neighbours)."""
    x, y = data.part("train")
    every = evenly_spaced(len(y))
    if every is not None:
        x, y = x[every], y[every]
    parts = {"": data.part("holdout"), "validation_": data.part("validation"), "train_": (x, y)}
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if not getattr(model, "predicts_in_threads", False) or threads == 1:
        return _scored(task, model, parts)
    with ThreadPoolExecutor(threads, thread_name_prefix="gyre-score") as pool:
        return _scored(task, _SideBySide(model, pool, threads), parts)


def _scored(
    task: str, model: Any, parts: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, float]:
    return {
        f"{prefix}{k}": v
        for prefix, rows in parts.items()
        for k, v in score(task, model, *rows).items()
    }


class _SideBySide:
    """A model's predictions made a slice of rows per thread of `pool`, in row order."""

    SLICE_ROWS = 2_000  # fewer rows than this are predicted in one call

    def __init__(self, model: Any, pool: ThreadPoolExecutor, threads: int) -> None:
        self.model, self.pool, self.threads = model, pool, threads
        self.classes_ = getattr(model, "classes_", None)

    def _sliced(self, method: str, x: np.ndarray) -> np.ndarray:
        pieces = min(self.threads, max(1, len(x) // self.SLICE_ROWS))
        predict = getattr(self.model, method)
        if pieces == 1:
            return np.asarray(predict(x))
        return np.concatenate(list(self.pool.map(predict, np.array_split(x, pieces))))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._sliced("predict", x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._sliced("predict_proba", x)


def train(
    spec: TrainingSpec,
    config: Config,
    stores: Stores,
    *,
    reporter: Reporter | None = None,
    export: Path | None = None,
) -> TrainResult:
    """Fit the spec and record it as a run; on Ctrl-C the run is marked interrupted and
    no model artifact is written. `export`: as for `fit`."""
    from gyre.learn._tracking import start_run

    resolved = resolve(spec, config)  # every problem of the spec, before a run exists
    started = time.perf_counter()
    log = stores.open_fact_log()
    try:
        watermark = log.watermark()
        with start_run(
            spec.name,
            spec.path.stem,
            stores=stores,
            tags={"spec": spec.path.name, "family": spec.model.family},
        ) as run:
            (reporter or _Silent()).started(run.id)
            run.log_params(_params(spec))
            run.set_record(
                "spec", {"path": str(spec.path), "sha256": spec.sha256, "text": spec.text}
            )
            run.set_record("environment", environment())
            code = code_version(spec.path.parent)  # once: the code the whole run used
            run.set_record("lineage", _lineage(spec, resolved, log, watermark, code, None, export))

            def on_epoch(number: int, metrics: dict[str, float]) -> None:
                run.log_metrics(metrics, step=number)

            fitted = fit(
                spec,
                config,
                log,
                watermark=watermark,
                reporter=reporter,
                on_epoch=on_epoch,
                export=export,
                keep_model=True,
            )
            recording = time.perf_counter()
            run.log_metrics(
                {
                    **fitted.metrics,
                    **{f"baseline_{k}": v for k, v in fitted.baseline_metrics.items()},
                }
            )
            lineage = _lineage(spec, resolved, log, watermark, code, fitted.data, export)
            run.set_record("lineage", lineage)
            _log_artifacts(run, spec, fitted)
            timings = dict(fitted.timings_s)
            timings["record"] = round(time.perf_counter() - recording, 6)
            timings["total"] = round(time.perf_counter() - started, 6)
            run.set_record("timings_s", timings)
            return TrainResult(run.id, fitted)
    finally:
        log.close()


def _params(spec: TrainingSpec) -> dict[str, Any]:
    params: dict[str, Any] = {
        "family": spec.model.family,
        "task": spec.task,
        "seed": spec.seed,
        "views": list(spec.views),
        "holdout": spec.holdout,
        "validation": spec.validation,
    }
    if spec.baseline is not None:
        params["baseline"] = spec.baseline.family
    for key, value in spec.model.params.items():
        params.setdefault(key, value)
    return params


def _lineage(
    spec: TrainingSpec,
    resolved: Resolved,
    log: FactLog,
    watermark: int,
    code: dict[str, Any],
    data: TrainingData | None,
    export: Path | None,
) -> dict[str, Any]:
    lineage: dict[str, Any] = {
        "spec_sha256": spec.sha256,
        "fact_log": log.where,
        "fact_log_watermark": watermark,
        "export": None if export is None else str(export),
        "feature_definitions": {v.name: v.definition_hash for v in resolved.views},
        "code": code,
        "seed": spec.seed,
    }
    if isinstance(spec.rows, TableRows):
        lineage["table"] = {"path": str(spec.rows.path), "sha256": _file_sha256(spec.rows)}
    if data is not None:
        lineage["training_set"] = {
            "sha256": data.sha256,
            "features": list(data.feature_names),
            "rows": {
                "train": len(data.train),
                "validation": len(data.validation),
                "holdout": len(data.holdout),
                **data.counts,
            },
            "times": {part: data.time_range(part) for part in ("train", "validation", "holdout")},
        }
    return lineage


def _file_sha256(rows: TableRows) -> str:
    digest = hashlib.sha256()
    with rows.path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _log_artifacts(run: Any, spec: TrainingSpec, fitted: Fitted) -> None:
    model = fitted.model_bytes or _model_bytes(fitted.trainer)
    run.log_artifact("model", model, media_type="application/x-joblib")
    sample = io.BytesIO()
    np.save(sample, fitted.data.part("train")[0][:SAMPLE_ROWS], allow_pickle=False)
    run.log_artifact("sample", sample.getvalue(), media_type="application/x-npy")
    profile = fitted.profile_bytes if fitted.profiled else _profile(fitted.data)
    if profile is not None:  # what `gyre monitor check` compares served inputs with
        run.log_artifact("profile", profile, media_type="application/json")
    history = getattr(fitted.trainer, "history_", [])
    svg = curves_svg(history, f"{spec.name}: {spec.model.family}")
    if svg is not None:
        run.log_artifact("curves.svg", svg.encode(), media_type="image/svg+xml")


def _profile(data: TrainingData) -> bytes | None:
    """The input profile of the training rows, for a table of numeric features (not an
    image-shaped input)."""
    from gyre.monitor import input_profile

    x = data.part("train")[0]
    if x.ndim != 2 or x.shape[1] != len(data.feature_names) or len(x) == 0:
        return None
    try:
        return input_profile(data.feature_names, x).as_bytes()
    except MonitorError as exc:  # the monitor's loss, never the run's
        logger.warning("no input profile for this run: %s", exc)
        return None


@dataclass(frozen=True)
class RunModel:
    """What a finished run hands to the registry: its model, sample rows and lineage."""

    experiment: str
    model: Any
    sample: np.ndarray
    views: tuple[str, ...]
    feature_names: tuple[str, ...]
    lineage: dict[str, Any]
    model_bytes: bytes  # the joblib bytes the run stored, as stored
    model_sha256: str


def run_model(stores: Stores, run_id: str) -> RunModel:
    """The model of a finished run of `gyre train`, for `gyre registry publish --run`."""
    import joblib

    store = stores.open_runs()
    try:
        run = store.get(run_id)
    finally:
        store.close()
    if run.status != "finished":
        raise RunError(
            f"run {run.run_id} is {run.status}"
            + (f" ({run.error})" if run.error else "")
            + "; only a finished run can be published: train again"
        )
    artifacts = run.record.get("artifacts", {})
    if "model" not in artifacts or "sample" not in artifacts:
        raise RunError(
            f"run {run.run_id} recorded no model (it was not made by `gyre train`); "
            "publish the model from your code with Registry.publish"
        )
    store_of_files = stores.open_artifacts()
    model_sha256 = str(artifacts["model"]["sha256"])
    model_bytes = store_of_files.get(model_sha256, what="the run's model")
    model = joblib.load(io.BytesIO(model_bytes))
    sample = np.load(
        io.BytesIO(store_of_files.get(artifacts["sample"]["sha256"], what="the run's sample"))
    )
    lineage = run.record.get("lineage", {})
    summary = {
        "run_id": run.run_id,
        "spec_sha256": lineage.get("spec_sha256"),
        "fact_log_watermark": lineage.get("fact_log_watermark"),
        "training_set_sha256": lineage.get("training_set", {}).get("sha256"),
        # The times the model learned from (train and validation: [first, last]), so a
        # version says how old its data is (`gyre monitor status`).
        "training_times": {
            part: span
            for part, span in lineage.get("training_set", {}).get("times", {}).items()
            if part in ("train", "validation")
        },
        "code": lineage.get("code"),
        "seed": lineage.get("seed"),
        "metrics": run.metrics,
    }
    judged = run.record.get("evaluation")
    if isinstance(judged, dict):  # the latest `gyre evaluate` of the run, in brief
        keys = ("verdict", "reasons", "champion", "rows", "data", "threshold", "metrics", "gates")
        summary["evaluation"] = {k: judged.get(k) for k in keys}
    names = tuple(lineage.get("training_set", {}).get("features", ()))
    return RunModel(
        run.experiment, model, sample, tuple(run.params.get("views", ())), names, summary,
        model_bytes, model_sha256,
    )  # fmt: skip
