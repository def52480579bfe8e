"""Content-addressed artifact storage: a file's name is the sha256 of its bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from gyre.errors import ArtifactCorrupted


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return digest

    def get(self, sha256: str, *, what: str) -> bytes:
        """The artifact's bytes; `what` names it in errors (e.g. "model `iris` version 3")."""
        path = self.path_of(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupted(
                f"artifact of {what} is missing: expected sha256 {sha256} at {path}; "
                "restore the file or publish the model again"
            ) from None
        actual = sha256_of(data)
        if actual != sha256:
            raise ArtifactCorrupted(
                f"artifact of {what} is corrupted: expected sha256 {sha256}, found {actual} "
                f"at {path}; restore the file or publish the model again"
            )
        return data
