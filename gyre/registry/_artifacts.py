"""Content-addressed artifact storage: a file's name is the sha256 of its bytes.

`ArtifactStore` is the interface (checked by `tests/registry/test_artifact_conformance.py`);
`LocalArtifactStore` keeps the files in a folder, which several hosts may share (NFS or any
shared mount): a write goes to a temporary name and is renamed into place, and a name is
the hash of its content, so two hosts writing the same artifact at once write the same
bytes and a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from gyre.errors import ArtifactCorrupted


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore(Protocol):
    """Immutable blobs named by their sha256."""

    def put(self, data: bytes) -> str:
        """Store `data` durably; its sha256."""
        ...

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store bytes that come in pieces, hashed as written; (sha256, size). An exception
        from `chunks` stores nothing."""
        ...

    def get(self, sha256: str, *, what: str) -> bytes:
        """The bytes, verified against `sha256`; `ArtifactCorrupted` when they are missing
        or differ (`what` names the artifact in the message)."""
        ...

    def copy_to(self, sha256: str, dest: Path, *, what: str) -> None:
        """Write the artifact to the new file `dest`, verified as it is copied; on a
        mismatch `dest` is removed and `ArtifactCorrupted` raised."""
        ...


class LocalArtifactStore:
    """Artifacts under `<home>/artifacts/sha256/<first two hex>/<sha256>`.

    Writes are durable (fsync of the file and its folder) and atomic (write to a temporary
    file, then rename), so a reader never sees half an artifact. Reads verify the hash.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        digest = sha256_of(data)
        path = self.path_of(digest)
        if path.is_file() and path.stat().st_size == len(data):
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
        return digest

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store bytes that come in pieces (a large file is never whole in memory), hashed
        as they are written; (sha256, size). An exception from `chunks` stores nothing."""
        folder = self.root / "sha256"
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    hasher.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            path = self.path_of(hasher.hexdigest())
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
        return hasher.hexdigest(), size

    def get(self, sha256: str, *, what: str) -> bytes:
        """The artifact's bytes; `what` names it in errors (e.g. "model `iris` version 3")."""
        path = self.path_of(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _missing(what, sha256, path) from None
        actual = sha256_of(data)
        if actual != sha256:
            raise _corrupted(what, sha256, actual, path)
        return data

    def copy_to(self, sha256: str, dest: Path, *, what: str) -> None:
        """Copy the artifact into the new file `dest`, hashing as it goes (never whole in
        memory); when the hash is not `sha256`, `dest` is removed and `ArtifactCorrupted`
        raised."""
        path = self.path_of(sha256)
        try:
            source = path.open("rb")
        except FileNotFoundError:
            raise _missing(what, sha256, path) from None
        hasher = hashlib.sha256()
        try:
            with source, dest.open("xb") as out:
                while chunk := source.read(1 << 20):
                    hasher.update(chunk)
                    out.write(chunk)
            if hasher.hexdigest() != sha256:
                raise _corrupted(what, sha256, hasher.hexdigest(), path)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise


def _missing(what: str, sha256: str, path: Path) -> ArtifactCorrupted:
    return ArtifactCorrupted(
        f"artifact of {what} is missing: expected sha256 {sha256} at {path}; "
        "restore the file or publish the model again"
    )


def _corrupted(what: str, sha256: str, actual: str, path: Path) -> ArtifactCorrupted:
    return ArtifactCorrupted(
        f"artifact of {what} is corrupted: expected sha256 {sha256}, found {actual} "
        f"at {path}; restore the file or publish the model again"
    )


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
