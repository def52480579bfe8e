"""The metadata store's interface: what every implementation (SQLite under the home,
PostgreSQL) does, what the registry builds on, and what the conformance suite
(`tests/registry/test_metadata_conformance.py`) checks.

Every write is one transaction and one record in the change log, whose position only grows
in the order writes commit: a reader polling `change_seq` sees every change. Version
numbers of a model are allocated under a lock, so no two publishes ever share one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from gyre.errors import InvalidModel
from gyre.registry._evaluations import AliasGuard, VersionEvaluation
from gyre.registry._files import ArtifactFile, decode_manifest, manifest_sha256
from gyre.types import Signature


@dataclass(frozen=True)
class ModelVersion:
    """One published version of a model, as recorded."""

    model: str
    version: int
    created_at: float
    flavor: str
    artifact_sha256: str
    artifact_bytes: int
    native_sha256: str | None
    native_bytes: int | None
    signature: Signature
    parity: dict[str, Any]
    lineage: dict[str, Any]
    gyre_version: str
    deleted_at: float | None
    aliases: tuple[str, ...] = ()
    # The class to instantiate, for flavor `python`.
    entrypoint: str | None = None
    # Set on what a publish returns: the content was already this live version, so no
    # new version was made (idempotent publish). Not stored.
    reused: bool = False
    # A Python model's files (`--artifacts DIR`), sorted by path.
    files: tuple[ArtifactFile, ...] = ()
    # The decision threshold of a binary classifier as stored (`_decision`: a JSON object,
    # or the text found when it is not JSON); None: the model's own label is served.
    decision: Any = None

    @property
    def decision_threshold(self) -> float | None:
        """The threshold the server applies to this version's label; None when none is
        stored, or when the stored one cannot be used (`_decision.decision_of` says why)."""
        from gyre.registry._decision import check_decision

        if self.decision is None:
            return None
        try:
            return check_decision(self.decision, self.signature, self.what).threshold
        except InvalidModel:
            return None

    @property
    def what(self) -> str:
        return f"model `{self.model}` version {self.version}"

    @property
    def files_sha256(self) -> str | None:
        """One hash of the whole manifest of `files` (part of the version's content)."""
        return manifest_sha256(self.files)


@dataclass(frozen=True)
class RegistrySnapshot:
    """What the registry holds as of change `position` (`Registry.snapshot`): live
    versions, {model: {alias: version}}, and {model: (kind, params)} as stored."""

    position: int
    versions: tuple[ModelVersion, ...]
    aliases: dict[str, dict[str, int]]
    policies: dict[str, tuple[Any, Any]]


def row_to_version(row: Mapping[str, Any], aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        model=row["model"],
        version=row["version"],
        created_at=row["created_at"],
        flavor=row["flavor"],
        artifact_sha256=row["artifact_sha256"],
        artifact_bytes=row["artifact_bytes"],
        native_sha256=row["native_sha256"],
        native_bytes=row["native_bytes"],
        signature=msgspec.json.decode(row["signature"], type=Signature),
        parity=json.loads(row["parity"]),
        lineage=json.loads(row["lineage"]),
        gyre_version=row["gyre_version"],
        deleted_at=row["deleted_at"],
        aliases=aliases,
        entrypoint=row["entrypoint"],
        files=decode_manifest(row["files"]) if row["files"] is not None else (),
        decision=json_or_text(row["decision"]) if row["decision"] is not None else None,
    )


def json_or_text(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return text


class MetadataStore(Protocol):
    """Models' versions, aliases, traffic policies and evaluations, and the log of changes
    to them."""

    # Where it is, for people: a file's path or a URL without its password.
    where: str

    def add_version(
        self,
        model: str,
        *,
        flavor: str,
        artifact_sha256: str,
        artifact_bytes: int,
        native_sha256: str | None,
        native_bytes: int | None,
        signature: Signature,
        parity: dict[str, Any],
        lineage: dict[str, Any],
        gyre_version: str,
        entrypoint: str | None = None,
        files: tuple[ArtifactFile, ...] = (),
        force_new: bool = False,
        decision: dict[str, Any] | None = None,
    ) -> tuple[int, bool]:
        """The new version's number and False; or, unless `force_new`, the number of a live
        version with the same content (flavor, artifact, signature, entrypoint, files) and
        True, looked up under the write lock. `decision`: a new version's decision
        threshold record (`_decision`; not part of its content, and not given to a version
        found with the same content)."""
        ...

    def set_decision(
        self, model: str, version: int, decision: dict[str, Any] | None, *, reason: str
    ) -> None:
        """Store a live version's decision threshold record (None: remove it)."""
        ...

    def set_alias(
        self, model: str, alias: str, version: int, *, reason: str, guard: AliasGuard | None = None
    ) -> int | None:
        """Point `alias` at a live `version`; the version it pointed at before, if any.
        `guard` is called first, in the same transaction, with the version's latest
        evaluation: it raises to refuse the move, or returns True to record the move as
        forced (`forced: true` in the change log)."""
        ...

    def record_evaluation(
        self, model: str, version: int, evaluation: dict[str, Any]
    ) -> VersionEvaluation:
        """Store an evaluation of a live version (`_evaluations.check_evaluation` first:
        InvalidModel when it is not one), and an `evaluate` change; the evaluation as
        read back."""
        ...

    def latest_evaluation(self, model: str, version: int) -> VersionEvaluation | None:
        """The version's latest recorded evaluation; None when it has none."""
        ...

    def delete_alias(self, model: str, alias: str, *, reason: str) -> None: ...

    def delete_version(self, model: str, version: int, *, reason: str) -> None:
        """Soft delete of a version no alias names."""
        ...

    def versions(
        self, model: str | None = None, *, include_deleted: bool = False
    ) -> list[ModelVersion]: ...

    def version(self, model: str, version: int) -> ModelVersion:
        """A live version; `ModelNotFound` for a missing or deleted one."""
        ...

    def aliases(self, model: str | None = None) -> dict[str, dict[str, int]]: ...

    def set_policy(
        self, model: str, kind: str, params: dict[str, Any], *, reason: str, forced: bool = False
    ) -> None:
        """Store the model's policy; `forced`: it sends clients' traffic to an unblessed
        version, which the change log records."""
        ...

    def policies(self) -> dict[str, tuple[Any, Any]]: ...

    def snapshot(self) -> RegistrySnapshot:
        """Live versions, aliases and policies as of one change position, read at once."""
        ...

    def change_seq(self) -> int:
        """The position of the latest change (0 for none)."""
        ...

    def changes(
        self, model: str | None = None, *, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Changes after position `after`, oldest first, at most `limit` (keyset pages)."""
        ...

    def close(self) -> None: ...
