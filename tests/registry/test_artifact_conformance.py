"""The artifact-store conformance suite: content addressing, integrity on every read, and
atomic writes, also with several processes (hosts sharing one folder) writing at once.
Every `ArtifactStore` implementation joins `STORES`."""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gyre.errors import ArtifactCorrupted
from gyre.registry import ArtifactStore, LocalArtifactStore

STORES: dict[str, Callable[[Path], ArtifactStore]] = {"local folder": LocalArtifactStore}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    return STORES[request.param](tmp_path / "artifacts")


def test_bytes_come_back_as_put_under_their_hash(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"\x00model bytes\xff" * 1000
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.put(data) == digest  # the same content is the same artifact
    assert store.get(digest, what="m") == data
    chunked, size = store.put_chunks(iter([data[:5], data[5:]]))
    assert (chunked, size) == (digest, len(data))
    store.copy_to(digest, tmp_path / "copy", what="m")
    assert (tmp_path / "copy").read_bytes() == data
    assert store.get(store.put(b""), what="empty") == b""


def test_a_missing_or_changed_artifact_is_never_returned(
    store: ArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactCorrupted, match="artifact of model `m` is missing"):
        store.get("0" * 64, what="model `m`")
    digest = store.put(b"original")
    assert isinstance(store, LocalArtifactStore)
    store.path_of(digest).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupted, match="is corrupted"):
        store.get(digest, what="model `m`")
    with pytest.raises(ArtifactCorrupted, match="is corrupted"):
        store.copy_to(digest, tmp_path / "copy", what="model `m`")
    assert not (tmp_path / "copy").exists()  # no half-checked file left behind


def test_a_failed_chunked_write_stores_nothing(store: ArtifactStore, tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"first half"
        raise OSError("the upload broke")

    with pytest.raises(OSError, match="the upload broke"):
        store.put_chunks(broken())
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []


def _write_and_read(root: str, seed: int, rounds: int) -> None:
    store = LocalArtifactStore(Path(root))
    for i in range(rounds):
        data = (f"{i}".encode() * 50_000)[: 200_000 + i]  # the same contents in every process
        digest = store.put(data) if seed % 2 else store.put_chunks(iter([data]))[0]
        assert store.get(digest, what=f"round {i}") == data


def test_processes_writing_the_same_artifacts_at_once_never_see_half_a_file(
    tmp_path: Path,
) -> None:
    """As hosts sharing one artifact folder do: each process writes the same contents and
    reads each back at once (a half-written file would fail its hash)."""
    ctx = multiprocessing.get_context("spawn")
    root = str(tmp_path / "artifacts")
    workers = [ctx.Process(target=_write_and_read, args=(root, n, 30)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert len(files) == 30 and not [p for p in files if p.name.startswith(".tmp-")]
