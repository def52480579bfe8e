"""The registry: publish versions (exported to ONNX and parity-checked), aliases, lookups."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

import gyre
from gyre._numbers import is_int64, parse_count
from gyre.config import Config, RegistryConfig
from gyre.errors import InvalidModel, ModelNotFound, RegistryError
from gyre.registry import _tabular
from gyre.registry._artifacts import LocalArtifactStore, sha256_of
from gyre.registry._decision import check_decision, model_decision, version_decision
from gyre.registry._files import ArtifactFile, VersionFiles
from gyre.registry._metadata import MetadataStore, ModelVersion, RegistrySnapshot
from gyre.registry._names import CHAMPION, check_name, parse_ref
from gyre.registry._policy import check_policy, target_version, targets
from gyre.registry._samples import load_sample
from gyre.stores import Stores
from gyre.types import DATATYPE_TO_NUMPY, FeatureBinding, Signature, zeros_for

if TYPE_CHECKING:
    from gyre.features import FeatureView

log = logging.getLogger("gyre.registry")


class Registry:
    """Model versions with content-addressed artifacts, aliases and a change log."""

    def __init__(self, home: Path | Stores, config: RegistryConfig | None = None) -> None:
        """The registry of a home (its SQLite metadata and artifact folder), or of the
        stores `Stores.from_config` opens (PostgreSQL, a shared artifact folder)."""
        self.stores = home if isinstance(home, Stores) else Stores(home)
        self.home = self.stores.home
        self.config = config or RegistryConfig()
        self.metadata: MetadataStore = self.stores.open_metadata()
        self.artifacts: LocalArtifactStore = self.stores.open_artifacts()

    @classmethod
    def from_config(cls, config: Config) -> Registry:
        return cls(Stores.from_config(config), config.registry)

    def close(self) -> None:
        self.metadata.close()

    # -- publishing -------------------------------------------------------------------------

    def publish_file(
        self,
        name: str,
        path: Path,
        *,
        sample: Path | None = None,
        alias: str | None = None,
        lineage: dict[str, Any] | None = None,
        python_class: str = "Model",
        artifacts: Path | None = None,
        force_new: bool = False,
    ) -> ModelVersion:
        """Publish `.onnx`, `.joblib`/`.pkl` holding a scikit-learn or LightGBM model, or a
        `.py` file whose class `python_class` has `load()` and `predict(batch)` (with the
        files of the folder `artifacts`, given to `load`); or a TensorFlow SavedModel folder
        or `.keras` file (converted with tf2onnx).

        Publishing content that a live version of the model already holds returns that
        version (`reused` set) instead of a new one, unless `force_new`."""
        from gyre.registry import _tensorflow

        if _tensorflow.is_tensorflow(path):
            rows = load_sample(sample)[0] if sample is not None else None
            return _tensorflow.publish(
                self, name, path, rows, alias=alias, lineage=lineage, force_new=force_new
            )
        if not path.is_file():
            raise InvalidModel(f"model file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".py":
            return self.publish_python(
                name,
                path.read_bytes(),
                python_class,
                artifacts=artifacts,
                alias=alias,
                lineage=lineage,
                force_new=force_new,
            )
        if artifacts is not None:
            raise InvalidModel(
                f"--artifacts gives a Python model (.py) its files; {path} is not one"
            )
        rows, names = load_sample(sample) if sample is not None else (None, None)
        if suffix == ".onnx":
            return self.publish_onnx(
                name, path.read_bytes(), sample=rows, alias=alias, lineage=lineage,
                force_new=force_new,
            )  # fmt: skip
        if suffix not in (".joblib", ".pkl", ".pickle"):
            raise InvalidModel(
                f"model file {path} must be .onnx, .joblib, .pkl, .py, .keras or a "
                "SavedModel folder"
            )
        if rows is None:
            raise InvalidModel(
                f"publishing native model {path} needs sample input rows for the parity check; "
                "pass --sample ROWS.npy or ROWS.csv with a few hundred rows like the training data"
            )
        import joblib

        data = path.read_bytes()
        try:
            model = joblib.load(io.BytesIO(data))
        except ModuleNotFoundError as exc:
            from gyre.registry._converters import missing_module

            raise missing_module(path, exc) from None
        except Exception as exc:
            raise InvalidModel(f"could not load {path} with joblib: {exc}") from None
        return self.publish(
            name, model, rows, alias=alias, lineage=lineage, native_bytes=data, names=names,
            force_new=force_new,
        )  # fmt: skip

    def publish(
        self,
        name: str,
        model: Any,
        sample: Any,
        *,
        alias: str | None = None,
        lineage: dict[str, Any] | None = None,
        native_bytes: bytes | None = None,
        names: tuple[str, ...] | None = None,
        features: FeatureView | None = None,
        force_new: bool = False,
        decision_threshold: float | None = None,
    ) -> ModelVersion:
        """Export a fitted model (scikit-learn, LightGBM, torch: `_torch`) to ONNX, check parity.

        `sample`: NumPy rows, or the pandas DataFrame the model was fitted on; a DataFrame
        with string columns makes every column an input of its own (`_tabular`).
        `features`: the view the model was trained on (its columns are the view's features
        in order); the server then answers requests that name an entity instead of rows.
        `decision_threshold`: a binary classifier's threshold on the probability of its
        second class (`classes_[1]`), learned on validation data: the server's label is
        that class at or above it (`set_decision_threshold`).
        """
        from gyre.registry import _export, _torch
        from gyre.registry._parity import check_parity
        from gyre.registry._signature import make_canonical, make_outputs_batched, signature_of

        check_name("model", name)
        model = _torch.unwrapped(model)  # a gyre scikit-learn/LightGBM trainer: its model_
        flavor = _export.flavor_of(model)
        decision = None
        if decision_threshold is not None:  # refused before the export, if it must be
            decision = model_decision(name, model, decision_threshold)
        table = None
        if _tabular.is_dataframe(sample):
            _export.check_fitted(model)
            table = _tabular.read_table(sample, model, f"model `{name}`")
            if table.mixed:
                return _tabular.publish_table(
                    self, name, model, table, flavor=flavor, alias=alias, lineage=lineage,
                    native_bytes=native_bytes, features=features, force_new=force_new,
                    decision=decision,
                )  # fmt: skip
            sample, names = table.matrix(), table.names
        rows = np.asarray(sample, dtype=np.float64)
        n_features = _export.feature_count(model)
        if rows.ndim != 2 or rows.shape[0] == 0 or (n_features and rows.shape[1] != n_features):
            raise InvalidModel(
                f"sample rows have shape {rows.shape}; model `{name}` expects a 2-D table "
                f"with {n_features} columns"
            )
        onnx_model = _export.to_onnx(model, rows.shape[1])
        make_outputs_batched(onnx_model)
        make_canonical(onnx_model)
        onnx_bytes = onnx_model.SerializeToString()
        # Both sides predict on float32-rounded rows, so the check measures the converter,
        # not the input cast every served request goes through.
        rows = rows[: self.config.parity_max_rows].astype(np.float32)
        onnx_outputs = self._run_onnx(name, onnx_bytes, {"X": rows})
        native_rows: Any = rows.astype(np.float64)
        if table is not None and hasattr(model, "feature_names_in_"):
            native_rows = table.frame_of(native_rows)  # fitted on a DataFrame: predict on one
        parity = check_parity(
            onnx_outputs,
            _export.native_outputs(model, native_rows),
            tolerance=self.config.parity_tolerance,
            classifier=_export.is_classifier(model),
            what=f"model `{name}`",
        )
        if native_bytes is None:
            native_bytes = _export.dumped(model)
        lineage = {**(lineage or {}), **_torch.lineage(model)}  # torch's and Keras' versions
        if features is not None:
            names = _bind(name, features, rows.shape[1])
            lineage = {**(lineage or {}), "feature_view": features.name,
                       "feature_definition_hash": features.definition_hash}  # fmt: skip
        signature = signature_of(onnx_model, _export.feature_names(model) or names)
        if features is not None:
            signature = msgspec.structs.replace(
                signature, features=FeatureBinding(features.name, features.definition_hash)
            )
        return self._record(
            name,
            flavor=flavor,
            artifact=onnx_bytes,
            native_bytes=native_bytes,
            signature=signature,
            parity=parity.as_record(),
            alias=alias,
            lineage={**(lineage or {}), "sample_sha256": sha256_of(rows.tobytes())},
            force_new=force_new,
            decision=decision,
        )

    def publish_onnx(
        self,
        name: str,
        onnx_bytes: bytes,
        *,
        sample: Any = None,
        alias: str | None = None,
        lineage: dict[str, Any] | None = None,
        force_new: bool = False,
    ) -> ModelVersion:
        """Publish an ONNX graph: it must pass the onnx checker and a test inference, on
        `sample` when given (NumPy rows for a single input, or a DataFrame whose columns
        name the inputs), else on a row of zeros."""
        import onnx

        from gyre.registry._signature import signature_of

        check_name("model", name)
        try:
            onnx_model = onnx.load_model_from_string(onnx_bytes)
            onnx.checker.check_model(onnx_model)
        except Exception as exc:
            raise InvalidModel(f"model `{name}`: not a valid ONNX graph: {exc}") from None
        signature = signature_of(onnx_model)
        feeds = zeros_for(signature)
        if _tabular.is_dataframe(sample):
            feeds = _tabular.feeds_for(sample, signature, f"model `{name}`")
        elif sample is not None and len(signature.inputs) == 1:
            spec = signature.inputs[0]
            feeds = {spec.name: np.asarray(sample, dtype=DATATYPE_TO_NUMPY[spec.datatype])}
        self._run_onnx(name, onnx_bytes, feeds)
        return self._record(
            name,
            flavor="onnx",
            artifact=onnx_bytes,
            native_bytes=None,
            signature=signature,
            parity={"checked": False, "reason": "published as ONNX; no native model to compare"},
            alias=alias,
            lineage=lineage or {},
            force_new=force_new,
        )

    def publish_python(
        self,
        name: str,
        code: bytes,
        class_name: str = "Model",
        *,
        artifacts: Path | None = None,
        alias: str | None = None,
        lineage: dict[str, Any] | None = None,
        force_new: bool = False,
    ) -> ModelVersion:
        """Publish a Python model; its test inference runs in a child process. Every file
        under the folder `artifacts` is stored too, and `load(self, artifacts)` gets a
        folder holding them (see `gyre.registry._files`)."""
        from gyre.registry._pymodel import publish_python

        return publish_python(
            self, name, code, class_name, artifacts=artifacts, alias=alias, lineage=lineage,
            force_new=force_new,
        )  # fmt: skip

    def _run_onnx(
        self, name: str, onnx_bytes: bytes, feeds: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            return list(session.run(None, feeds))
        except Exception as exc:
            raise InvalidModel(
                f"model `{name}`: test inference in onnxruntime failed: {exc}"
            ) from None

    def _record(
        self,
        name: str,
        *,
        flavor: str,
        artifact: bytes,
        native_bytes: bytes | None,
        signature: Signature,
        parity: dict[str, Any],
        alias: str | None,
        lineage: dict[str, Any],
        entrypoint: str | None = None,
        force_new: bool = False,
        files: tuple[ArtifactFile, ...] = (),
        decision: dict[str, Any] | None = None,
    ) -> ModelVersion:
        if alias is not None:
            check_name("alias", alias)
        if decision is not None:  # stored only as its reader, the server, will read it
            decision = check_decision(decision, signature, f"model `{name}`").as_record()
        artifact_sha = self.artifacts.put(artifact)
        native_sha = self.artifacts.put(native_bytes) if native_bytes is not None else None
        version, reused = self.metadata.add_version(
            name,
            flavor=flavor,
            artifact_sha256=artifact_sha,
            artifact_bytes=len(artifact),
            native_sha256=native_sha,
            native_bytes=len(native_bytes) if native_bytes is not None else None,
            signature=signature,
            parity=parity,
            lineage=lineage,
            gyre_version=gyre.__version__,
            entrypoint=entrypoint,
            force_new=force_new,
            files=files,
            decision=decision,
        )
        if reused:
            log.info("model `%s`: version %d already holds this content; not published again "
                     "(force_new makes a new version)", name, version)  # fmt: skip
        recorded = self.metadata.version(name, version)
        if decision is not None and recorded.decision != decision:
            # The same content, with a threshold learned again: the version takes it.
            self.metadata.set_decision(name, version, decision, reason="set at publish")
            recorded = self.metadata.version(name, version)
        if alias is not None and alias not in recorded.aliases:
            self.metadata.set_alias(name, alias, version, reason="set at publish")
            recorded = self.metadata.version(name, version)
        return dataclasses.replace(recorded, reused=True) if reused else recorded

    # -- aliases and versions ---------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int, *, reason: str = "") -> int | None:
        if not is_int64(version) or version < 1:
            raise InvalidModel(f"version {version!r} is not a version number (1, 2, 3, …)")
        return self.metadata.set_alias(
            check_name("model", name), check_name("alias", alias), version, reason=reason
        )

    def set_policy(
        self, name: str, kind: str, params: dict[str, Any] | None = None, *, reason: str = ""
    ) -> dict[str, Any]:
        """Set the traffic policy of model `name` (see `gyre.registry._policy`). Every
        target must name a version that exists now: a split to a missing alias would send
        its share to the champion without a word."""
        live = {mv.version for mv in self.versions(name)}
        clean = check_policy(kind, params or {})
        aliases = self.metadata.aliases(name).get(name, {})
        for target in targets(kind, clean):
            if target_version(target, aliases) not in live:
                raise InvalidModel(
                    f"model `{name}` has no version {target}; versions: "
                    f"{', '.join(map(str, sorted(live)))}"
                    if parse_count(target) is not None
                    else f"model `{name}` has no alias `{target}`; set it first "
                    f"(`gyre registry alias {name} {target} VERSION`) or name a version"
                )
        self.metadata.set_policy(name, kind, clean, reason=reason)
        return clean

    def policy(self, name: str) -> tuple[Any, Any, str | None]:
        """Model `name`'s stored traffic policy as (kind, params, why it cannot be used or
        None); ("champion", {}, None) when none is set."""
        kind, params = self.metadata.policies().get(name, ("champion", {}))
        try:
            return kind, check_policy(kind, params), None
        except InvalidModel as exc:
            return kind, params, str(exc)

    def set_decision_threshold(
        self,
        name: str,
        version: int,
        threshold: float | None,
        *,
        reason: str = "",
        classes: Sequence[int | str] | None = None,
    ) -> ModelVersion:
        """Set the decision threshold of binary classifier `name` version `version` (None:
        remove it, and the model's own label is served again): the server's label is then
        the positive class (the second; the probabilities' second column) where its
        probability is at or above `threshold`, the other class below (`_decision`).

        The classes are read off the native model (`classes_`), else off the ONNX graph;
        `classes` gives them (negative, positive) for a graph that does not name them.
        Returns the version as recorded."""
        mv = self.metadata.version(name, version)
        decision = None if threshold is None else version_decision(self, mv, threshold, classes)
        self.metadata.set_decision(name, version, decision, reason=reason)
        return self.metadata.version(name, version)

    def delete_alias(self, name: str, alias: str, *, reason: str = "") -> None:
        self._not_in_policy(name, alias)
        self.metadata.delete_alias(name, alias, reason=reason)

    def delete_version(self, name: str, version: int, *, reason: str = "") -> None:
        self._not_in_policy(name, str(version))
        self.metadata.delete_version(name, version, reason=reason)

    def _not_in_policy(self, name: str, target: str) -> None:
        """Refuse to remove what the model's traffic policy sends traffic to."""
        kind, params, broken = self.policy(name)
        if broken is None and target in targets(kind, params):
            what = f"version {target}" if parse_count(target) is not None else f"alias `{target}`"
            raise RegistryError(
                f"the {kind} traffic policy of model `{name}` sends traffic to {what}; change "
                f"the policy first (`gyre registry policy {name} champion` to undo it)"
            )

    # -- the read API the server uses -------------------------------------------------------

    def change_position(self) -> int:
        """The position of the latest change; it grows with every write (a reader polls
        it, and takes a `snapshot` when it moved)."""
        return self.metadata.change_seq()

    def snapshot(self) -> RegistrySnapshot:
        """Live versions, aliases and policies as of one change position."""
        return self.metadata.snapshot()

    def changes(
        self, name: str | None = None, *, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The changes after position `after` (of one model, or all), oldest first, at most
        `limit`: each publish, alias move, deletion and policy, with who/why. Page on with
        `after` = the last one's `seq`."""
        return self.metadata.changes(name, after=after, limit=limit)

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        found = self.metadata.versions(name)
        if name is not None and not found:
            raise ModelNotFound(
                f"no model `{name}` in the registry ({self.stores.describe}); "
                "run `gyre registry list` to see the models"
            )
        return found

    def resolve(self, ref: str) -> ModelVersion:
        """`NAME` (its champion, else its latest), `NAME:VERSION` or `NAME@ALIAS`."""
        name, version, alias = parse_ref(ref)
        if version is not None:
            return self.metadata.version(name, version)
        # Aliases first: a model's every version is read only when none names one.
        aliases = self.metadata.aliases(name).get(name, {})
        if alias is not None:
            if alias not in aliases:
                self.versions(name)  # no such model at all: say that instead
                raise ModelNotFound(
                    f"no alias `{alias}` for model `{name}`; run "
                    f"`gyre registry alias {name} {alias} VERSION`"
                )
            return self.metadata.version(name, aliases[alias])
        if CHAMPION in aliases:
            return self.metadata.version(name, aliases[CHAMPION])
        return self.versions(name)[-1]

    def artifact(self, mv: ModelVersion) -> bytes:
        return self.artifacts.get(
            mv.artifact_sha256, what=f"model `{mv.model}` version {mv.version}"
        )

    def version_files(self, mv: ModelVersion) -> VersionFiles | None:
        """How to give a Python version's model its folder of files (None: it has none):
        materialized under `<home>/cache/files/<manifest sha256>/`."""
        if not mv.files:
            return None
        return VersionFiles(
            self.artifacts.root,
            self.stores.files_cache_path,
            mv.files,
            f"model `{mv.model}` version {mv.version}",
        )

    def load_native(self, mv: ModelVersion) -> Any:
        """The native model, unpickled only after its sha256 matches the record."""
        if mv.native_sha256 is None:
            raise RegistryError(
                f"model `{mv.model}` version {mv.version} was published as ONNX and has no "
                "native model"
            )
        import joblib

        data = self.artifacts.get(
            mv.native_sha256, what=f"native model `{mv.model}` version {mv.version}"
        )
        return joblib.load(io.BytesIO(data))


def _bind(model: str, view: FeatureView, columns: int) -> tuple[str, ...]:
    """The column names of a model trained on `view`; InvalidModel when they cannot be."""
    names = tuple(view.features)
    if columns != len(names):
        raise InvalidModel(
            f"model `{model}` takes {columns} columns but feature view `{view.name}` has "
            f"{len(names)} features ({', '.join(names)}); train it on `view.matrix(rows)`"
        )
    text = [n for n in names if view.feature_kind(n) == "string"]
    if text:
        raise InvalidModel(
            f"feature view `{view.name}`: {', '.join(text)} hold strings, which a model "
            "cannot take; aggregate them with count or distinct_count"
        )
    return names
