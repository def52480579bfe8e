"""The registry: publish versions (exported to ONNX and parity-checked: a fitted model's
path is `_native`, a mixed table's `_tabular`, TensorFlow's `_tensorflow`, Python's
`_pymodel`), and look them up. Aliases, traffic policies and evaluations, with the rule
that only a blessed version is champion or challenger, are `_aliases`."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import gyre
from gyre.config import Config, RegistryConfig
from gyre.errors import InvalidModel, ModelNotFound, RegistryError
from gyre.registry import _tabular
from gyre.registry._aliases import Aliases, check_force
from gyre.registry._artifacts import LocalArtifactStore
from gyre.registry._decision import check_decision, version_decision
from gyre.registry._evaluations import check_evaluation
from gyre.registry._files import ArtifactFile, VersionFiles
from gyre.registry._metadata import MetadataStore, ModelVersion, RegistrySnapshot
from gyre.registry._names import CHAMPION, check_name, parse_ref
from gyre.registry._samples import load_sample
from gyre.stores import Stores
from gyre.types import DATATYPE_TO_NUMPY, Signature, zeros_for

if TYPE_CHECKING:
    from gyre.features import FeatureView

log = logging.getLogger("gyre.registry")


class Registry(Aliases):
    """Model versions with content-addressed artifacts, aliases, evaluations and a change
    log."""

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
        force_alias: str | None = None,
    ) -> ModelVersion:
        """Publish `.onnx`, `.joblib`/`.pkl` holding a scikit-learn or LightGBM model, or a
        `.py` file whose class `python_class` has `load()` and `predict(batch)` (with the
        files of the folder `artifacts`, given to `load`); or a TensorFlow SavedModel folder
        or `.keras` file (converted with tf2onnx).

        Publishing content that a live version of the model already holds returns that
        version (`reused` set) instead of a new one, unless `force_new`.

        `alias` is pointed at the version; `champion` and `challenger` only at a blessed
        one (NotBlessed, and the version stays published without it) unless
        `force_alias` gives the reason to force it, which the change log records."""
        from gyre.registry import _tensorflow

        if _tensorflow.is_tensorflow(path):
            rows = load_sample(sample)[0] if sample is not None else None
            return _tensorflow.publish(
                self, name, path, rows, alias=alias, lineage=lineage, force_new=force_new,
                force_alias=force_alias,
            )  # fmt: skip
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
                force_alias=force_alias,
            )
        if artifacts is not None:
            raise InvalidModel(
                f"--artifacts gives a Python model (.py) its files; {path} is not one"
            )
        rows, names = load_sample(sample) if sample is not None else (None, None)
        if suffix == ".onnx":
            return self.publish_onnx(
                name, path.read_bytes(), sample=rows, alias=alias, lineage=lineage,
                force_new=force_new, force_alias=force_alias,
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
            force_new=force_new, force_alias=force_alias,
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
        force_alias: str | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Export a fitted model (scikit-learn, LightGBM, torch: `_torch`) to ONNX, check parity.

        `sample`: NumPy rows, or the pandas DataFrame the model was fitted on; a DataFrame
        with string columns makes every column an input of its own (`_tabular`).
        `features`: the view the model was trained on (its columns are the view's features
        in order); the server then answers requests that name an entity instead of rows.
        `decision_threshold`: a binary classifier's threshold on the probability of its
        second class (`classes_[1]`), learned on validation data: the server's label is
        that class at or above it (`set_decision_threshold`).
        `alias`, `force_alias`: as for `publish_file`. `evaluation`: `gyre evaluate`'s
        summary of exactly this model (its run's), recorded on the version before the
        alias is given (`record_evaluation`).
        """
        from gyre.registry._native import publish_native

        return publish_native(
            self, name, model, sample, alias=alias, lineage=lineage, native_bytes=native_bytes,
            names=names, features=features, force_new=force_new,
            decision_threshold=decision_threshold, force_alias=force_alias,
            evaluation=evaluation,
        )  # fmt: skip

    def publish_onnx(
        self,
        name: str,
        onnx_bytes: bytes,
        *,
        sample: Any = None,
        alias: str | None = None,
        lineage: dict[str, Any] | None = None,
        force_new: bool = False,
        force_alias: str | None = None,
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
            force_alias=force_alias,
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
        force_alias: str | None = None,
    ) -> ModelVersion:
        """Publish a Python model; its test inference runs in a child process. Every file
        under the folder `artifacts` is stored too, and `load(self, artifacts)` gets a
        folder holding them (see `gyre.registry._files`)."""
        from gyre.registry._pymodel import publish_python

        return publish_python(
            self, name, code, class_name, artifacts=artifacts, alias=alias, lineage=lineage,
            force_new=force_new, force_alias=force_alias,
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
        force_alias: str | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> ModelVersion:
        forced = force_alias is not None
        reason = force_alias if force_alias is not None else "set at publish"
        if alias is not None:  # refused before anything is stored, if it must be
            check_name("alias", alias)
            check_force(f"`{name}@{alias}`", forced, reason)
        if evaluation is not None:
            evaluation = check_evaluation(evaluation, f"the evaluation of model `{name}`")
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
        # A version found with the same content keeps the evaluations it has: a later veto
        # is not undone by publishing the run again with its older blessing.
        if evaluation is not None and (not reused or self.evaluation(name, version) is None):
            self.record_evaluation(name, version, evaluation)
        if alias is not None and alias not in recorded.aliases:
            self.set_alias(name, alias, version, reason=reason, force=forced)
            recorded = self.metadata.version(name, version)
        return dataclasses.replace(recorded, reused=True) if reused else recorded

    # -- decision thresholds (aliases, policies, evaluations: `_aliases`) -----------------

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
