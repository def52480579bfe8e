"""The model registry: versions, aliases, signatures, content-addressed ONNX artifacts."""

from gyre.registry._artifacts import ArtifactStore, LocalArtifactStore
from gyre.registry._decision import DecisionThreshold, decision_of
from gyre.registry._evaluations import VersionEvaluation
from gyre.registry._files import ArtifactFile
from gyre.registry._metadata import MetadataStore, ModelVersion, RegistrySnapshot
from gyre.registry._names import CHAMPION, parse_ref
from gyre.registry._pgstore import PostgresMetadataStore
from gyre.registry._policy import check_policy, target_version
from gyre.registry._registry import Registry
from gyre.registry._samples import load_sample
from gyre.registry._store import SQLiteMetadataStore

__all__ = [
    "CHAMPION",
    "ArtifactFile",
    "ArtifactStore",
    "DecisionThreshold",
    "LocalArtifactStore",
    "MetadataStore",
    "ModelVersion",
    "PostgresMetadataStore",
    "Registry",
    "RegistrySnapshot",
    "SQLiteMetadataStore",
    "VersionEvaluation",
    "check_policy",
    "decision_of",
    "load_sample",
    "parse_ref",
    "target_version",
]
