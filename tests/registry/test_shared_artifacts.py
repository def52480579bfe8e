"""Hosts that share one artifact folder and publish at once: no reader ever sees half a
file, and every file there is whole (its name is the sha256 of its bytes)."""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.synchronize
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.pipeline import Pipeline

from gyre.config import StoreConfig
from gyre.registry import Registry
from gyre.stores import Stores

ROUNDS = 6
BLOB_BYTES = 4 << 20
PUBLISHERS = 3


def blob(round_number: int) -> bytes:
    """The same 4 MiB for every publisher in a round, other bytes in each round."""
    return np.random.default_rng(round_number).bytes(BLOB_BYTES)


def _publish(
    home: str, url: str, shared: str, model: str, sample: str,
    start: multiprocessing.synchronize.Barrier, results: Any,
) -> None:  # fmt: skip
    """One host: its own home, the shared database and artifact folder."""
    registry = Registry(Stores(Path(home), StoreConfig(url=url, artifacts=shared)))
    start.wait(timeout=120)
    mv = registry.publish_file("iris", Path(model), sample=Path(sample))
    for r in range(ROUNDS):
        data = blob(r)
        registry.artifacts.put(data)  # writes unless the file is there (whole)
        registry.artifacts.put_chunks(data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    registry.close()
    results.put((mv.version, mv.artifact_sha256, mv.native_sha256))


def _artifacts(root: Path) -> list[Path]:
    return [p for p in (root / "sha256").glob("*/*") if not p.name.startswith(".tmp-")]


def _read_all_the_time(shared: str, stop: multiprocessing.synchronize.Event, results: Any) -> None:
    """A reader on another host: looks at the folder again and again and reads each file
    as soon as it appears or changes (size or time), as a server loading a version would;
    it reports each one whose bytes are not its name."""
    root = Path(shared)
    seen: dict[Path, tuple[int, int]] = {}
    reads, torn = 0, []
    while not stop.is_set():
        for path in _artifacts(root):
            try:
                info = path.stat()
                if seen.get(path) == (info.st_size, info.st_mtime_ns):
                    continue
                data = path.read_bytes()
            except FileNotFoundError:  # never: a name, once there, stays
                torn.append(f"{path.name} vanished")
                continue
            reads += 1
            seen[path] = (info.st_size, info.st_mtime_ns)
            if hashlib.sha256(data).hexdigest() != path.name:
                torn.append(f"{path.name}: {len(data)} bytes")
    results.put((reads, torn))


def test_hosts_publishing_at_once_never_show_a_half_written_artifact(
    tmp_path: Path, postgres_url: str, iris_classifier: Pipeline, iris: tuple
) -> None:
    shared = tmp_path / "shared-artifacts"
    model, sample = tmp_path / "iris.joblib", tmp_path / "sample.npy"
    joblib.dump(iris_classifier, model)
    np.save(sample, iris[0][:50].astype(np.float32))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PUBLISHERS)
    stop = ctx.Event()
    published, read = ctx.Queue(), ctx.Queue()
    reader = ctx.Process(target=_read_all_the_time, args=(str(shared), stop, read))
    reader.start()
    common = (postgres_url, str(shared), str(model), str(sample), start, published)
    hosts = [
        ctx.Process(target=_publish, args=(str(tmp_path / f"host{i}"), *common))
        for i in range(PUBLISHERS)
    ]
    for host in hosts:
        host.start()
    try:
        for host in hosts:
            host.join(timeout=180)
            assert host.exitcode == 0
    finally:
        stop.set()
    reads, torn = read.get(timeout=60)
    reader.join(timeout=60)
    assert torn == []
    assert reads > 0
    # One version: the hosts published the same content, and the registry found it there.
    versions = {published.get(timeout=5) for _ in hosts}
    assert len(versions) == 1
    ((version, artifact, native),) = versions
    assert version == 1
    files = _artifacts(shared)
    expected = {artifact, native} | {hashlib.sha256(blob(r)).hexdigest() for r in range(ROUNDS)}
    assert {p.name for p in files} == expected
    for path in files:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    assert list((shared / "sha256").rglob(".tmp-*")) == []  # no temporary file left behind
    registry = Registry(
        Stores(tmp_path / "control", StoreConfig(url=postgres_url, artifacts=str(shared)))
    )
    mv = registry.resolve("iris")
    registry.artifact(mv)  # verified against the registry's own record
    np.testing.assert_array_equal(
        registry.load_native(mv).predict(iris[0]), iris_classifier.predict(iris[0])
    )
    registry.close()
