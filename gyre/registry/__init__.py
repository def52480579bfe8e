"""The model registry: versions, aliases, signatures, content-addressed ONNX artifacts."""

from gyre.registry._artifacts import LocalArtifactStore
from gyre.registry._registry import CHAMPION, Registry, load_sample, parse_ref
from gyre.registry._store import ModelVersion, SQLiteMetadataStore

__all__ = [
    "CHAMPION",
    "LocalArtifactStore",
    "ModelVersion",
    "Registry",
    "SQLiteMetadataStore",
    "load_sample",
    "parse_ref",
]
