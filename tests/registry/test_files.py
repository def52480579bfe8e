"""A Python model's files (`--artifacts DIR`): stored, refused, materialized, verified."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gyre.config import RegistryConfig
from gyre.errors import ArtifactCorrupted, InvalidModel, ModelNotFound
from gyre.registry import Registry
from gyre.registry._files import manifest_sha256
from gyre.registry._schema import SCHEMA_VERSION

LINEAR = Path(__file__).parents[1] / "serve" / "pymodels" / "linear.py"
COEF = np.array([1.0, -2.0, 0.5], dtype=np.float32)


def weights(folder: Path, coef: np.ndarray = COEF, bias: str = "0.25") -> Path:
    (folder / "weights").mkdir(parents=True)
    np.save(folder / "weights" / "coef.npy", coef)
    (folder / "bias.txt").write_text(bias)
    return folder


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_files_are_stored_by_content_with_a_manifest_on_the_version(
    registry: Registry, tmp_path: Path
) -> None:
    folder = weights(tmp_path / "dir")
    mv = registry.publish_file("linear", LINEAR, artifacts=folder)
    assert [(f.path, f.bytes) for f in mv.files] == [
        ("bias.txt", 4),
        ("weights/coef.npy", (folder / "weights" / "coef.npy").stat().st_size),
    ]
    for f in mv.files:
        assert f.sha256 == sha256_file(folder / f.path)
        assert registry.artifacts.path_of(f.sha256).read_bytes() == (folder / f.path).read_bytes()
    assert mv.files_sha256 is not None and len(mv.files_sha256) == 64
    assert registry.resolve("linear:1").files == mv.files  # as read back
    # The manifest's hash names the content: the same files elsewhere give the same one…
    again = registry.publish_file(
        "linear", LINEAR, artifacts=shutil.copytree(folder, tmp_path / "b")
    )
    assert again.files_sha256 == mv.files_sha256
    assert (again.version, again.reused) == (mv.version, True)  # the same content: version 1
    # …and one changed byte another one, and so another version.
    (folder / "bias.txt").write_text("0.26")
    changed = registry.publish_file("linear", LINEAR, artifacts=folder)
    assert changed.files_sha256 != mv.files_sha256
    assert (changed.version, changed.reused) == (2, False)
    assert registry.metadata.changes("linear")[0]["files_sha256"] == mv.files_sha256
    # A version without files has none.
    plain = Path(__file__).parents[1] / "serve" / "pymodels" / "scorer.py"
    scorer = registry.publish_file("scorer", plain)
    assert scorer.files == () and scorer.files_sha256 is None


def test_the_probe_at_publish_runs_with_the_files(registry: Registry, tmp_path: Path) -> None:
    # coef of the wrong length: the test inference reads it, and fails.
    folder = weights(tmp_path / "dir", coef=np.zeros(2, dtype=np.float32))
    with pytest.raises(InvalidModel, match="failed its test inference: ValueError: matmul"):
        registry.publish_file("linear", LINEAR, artifacts=folder)
    with pytest.raises(ModelNotFound):
        registry.versions("linear")


def test_the_folder_the_model_gets_is_verified_and_rebuilt_from_the_store(
    registry: Registry, tmp_path: Path
) -> None:
    folder = weights(tmp_path / "dir")
    mv = registry.publish_file("linear", LINEAR, artifacts=folder)
    expected = {f.path: (folder / f.path).read_bytes() for f in mv.files}
    shutil.rmtree(folder)  # the source folder plays no part from now on
    files = registry.version_files(mv)
    assert files is not None
    made = files.materialize()
    assert made == registry.home / "cache" / "files" / str(mv.files_sha256)
    assert {f.path: (made / f.path).read_bytes() for f in mv.files} == expected
    assert not (made / "bias.txt").stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert files.materialize() == made  # reused when intact
    # A damaged copy is noticed and rebuilt from the store.
    (made / "bias.txt").chmod(0o644)
    (made / "bias.txt").write_text("9999")
    (made / "weights" / "coef.npy").unlink()
    assert files.materialize() == made
    assert {f.path: (made / f.path).read_bytes() for f in mv.files} == expected
    # A damaged stored file, with no good copy left, is refused naming the file.
    shutil.rmtree(made)
    coef = next(f for f in mv.files if f.path == "weights/coef.npy")
    registry.artifacts.path_of(coef.sha256).write_bytes(b"not the weights")
    with pytest.raises(
        ArtifactCorrupted,
        match=r"model `linear` version 1 \(file `weights/coef.npy`\) is corrupted: expected "
        f"sha256 {coef.sha256}",
    ):
        files.materialize()
    assert not made.exists()
    assert [p.name for p in made.parent.iterdir()] == []  # no half-made folder is left
    registry.artifacts.path_of(coef.sha256).unlink()
    with pytest.raises(ArtifactCorrupted, match=r"\(file `weights/coef.npy`\) is missing"):
        files.materialize()


def _symlink_out(d: Path) -> None:
    (d.parent / "secret").write_text("x")
    (d / "link").symlink_to(d.parent / "secret")


def _symlink_up(d: Path) -> None:
    (d / "sub").mkdir()
    (d.parent / "secret").write_text("x")
    (d / "sub" / "link").symlink_to(Path("..") / ".." / "secret")


def _non_utf8(d: Path) -> None:
    with open(os.path.join(os.fsencode(d), b"caf\xe9"), "wb") as file:
        file.write(b"x")


def _huge(d: Path) -> None:
    (d / "big").write_bytes(b"x" * 101)


def _many(d: Path) -> None:
    for i in range(4):
        (d / f"f{i}").write_bytes(b"x")


REFUSED: list[tuple[str, Callable[[Path], None], str]] = [
    ("outside", _symlink_out, r"`link` is a symlink to .*secret, outside the folder"),
    ("dotdot", _symlink_up, r"`sub/link` is a symlink to .*secret, outside the folder"),
    ("absolute", lambda d: (d / "etc").symlink_to("/etc"), "`etc` is a symlink to /etc, outside"),
    ("dangling", lambda d: (d / "gone").symlink_to(d / "nothing"), "which does not exist"),
    ("dir link", lambda d: (d / "loop").symlink_to(d), "`loop` is a symlink to a folder"),
    ("fifo", lambda d: os.mkfifo(d / "pipe"), "`pipe` is a FIFO, not a regular file"),
    ("non-utf8", _non_utf8, "the name 'caf.*' is not UTF-8"),
    ("empty", lambda d: [(d / "ok.txt").unlink(), (d / "a-folder").mkdir()], "holds no files"),
    ("too big", _huge, "more than registry.artifacts_max_bytes = 100 bytes"),
    ("too many", _many, "holds 5 files, more than registry.artifacts_max_files = 3"),
]


@pytest.mark.parametrize(("make", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_a_folder_that_reaches_outside_or_is_too_big_is_refused(
    home: Path, make: Callable[[Path], None], message: str
) -> None:
    registry = Registry(home, RegistryConfig(artifacts_max_bytes=100, artifacts_max_files=3))
    folder = home.parent / "dir"
    folder.mkdir()
    (folder / "ok.txt").write_bytes(b"fine")
    make(folder)
    try:
        with pytest.raises(InvalidModel, match=message):
            registry.publish_file("linear", LINEAR, artifacts=folder)
        with pytest.raises(ModelNotFound):
            registry.versions("linear")
    finally:
        registry.close()


def test_missing_folders_files_and_other_flavors_are_refused(
    registry: Registry, tmp_path: Path
) -> None:
    with pytest.raises(InvalidModel, match=r"artifacts folder .*nope does not exist"):
        registry.publish_file("linear", LINEAR, artifacts=tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidModel, match="is not a folder"):
        registry.publish_file("linear", LINEAR, artifacts=tmp_path / "file")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(InvalidModel, match=r"--artifacts gives a Python model \(.py\) its files"):
        registry.publish_file("m", tmp_path / "m.onnx", artifacts=tmp_path)


def test_a_symlink_to_a_file_inside_is_stored_as_its_bytes(
    registry: Registry, tmp_path: Path
) -> None:
    folder = weights(tmp_path / "dir")
    (folder / "bias.txt").rename(folder / "real-bias.txt")
    (folder / "bias.txt").symlink_to("real-bias.txt")
    mv = registry.publish_file("linear", LINEAR, artifacts=folder)
    assert [f.path for f in mv.files] == ["bias.txt", "real-bias.txt", "weights/coef.npy"]
    assert mv.files[0].sha256 == mv.files[1].sha256


NO_PARAMETER = """
import numpy as np
class Model:
    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
                 "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]}
    def load(self%s):
        pass
    def predict(self, batch):
        return {"y": batch["x"]}
"""


def test_load_gets_the_folder_only_when_it_takes_one(registry: Registry, tmp_path: Path) -> None:
    folder = weights(tmp_path / "dir")
    code = NO_PARAMETER % ""
    with pytest.raises(InvalidModel, match=r"was given files \(--artifacts\) but its `load\(\)`"):
        registry.publish_python("m", code.encode(), artifacts=folder)
    with pytest.raises(InvalidModel, match=r"`load\(artifacts\)` needs a folder of files"):
        registry.publish_python("m", (NO_PARAMETER % ", artifacts").encode())
    # A parameter with a default takes files when there are some, and works without.
    optional = (NO_PARAMETER % ", artifacts=None").encode()
    assert registry.publish_python("m", optional).version == 1
    assert registry.publish_python("m", optional, artifacts=folder).files != ()
    assert registry.publish_python("m", code.encode()).version == 3  # no files, no parameter


@pytest.mark.parametrize("path", ["../escaped", "/tmp/escaped", "a/./b", "a//b", ""])
def test_a_stored_manifest_that_would_write_outside_its_folder_is_refused(
    registry: Registry, tmp_path: Path, path: str
) -> None:
    folder = weights(tmp_path / "dir")
    mv = registry.publish_file("linear", LINEAR, artifacts=folder)
    entry = mv.files[0]
    bad = f'[{{"path":"{path}","sha256":"{entry.sha256}","bytes":{entry.bytes}}}]'
    with sqlite3.connect(registry.metadata.path) as conn:
        conn.execute("UPDATE versions SET files = ?", (bad,))
    conn.close()
    files = registry.version_files(registry.resolve("linear:1"))
    assert files is not None
    with pytest.raises(ArtifactCorrupted, match="file manifest of model `linear` version 1"):
        files.materialize()
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()


V1_VERSIONS = """
CREATE TABLE versions (
    model TEXT NOT NULL, version INTEGER NOT NULL, created_at REAL NOT NULL,
    flavor TEXT NOT NULL, artifact_sha256 TEXT NOT NULL, artifact_bytes INTEGER NOT NULL,
    native_sha256 TEXT, native_bytes INTEGER, signature TEXT NOT NULL, parity TEXT NOT NULL,
    lineage TEXT NOT NULL, gyre_version TEXT NOT NULL, entrypoint TEXT, deleted_at REAL,
    PRIMARY KEY (model, version))
"""


def test_a_registry_of_schema_1_is_migrated_and_keeps_its_versions(
    home: Path, tmp_path: Path
) -> None:
    # A registry as gyre wrote it before versions had files, with one version in it.
    registry = Registry(home)
    old = registry.publish_file("scorer", Path(__file__).parents[1] / "serve/pymodels/scorer.py")
    registry.close()
    with sqlite3.connect(home / "registry.db") as conn:
        conn.execute("ALTER TABLE versions RENAME TO new_versions")
        conn.execute(V1_VERSIONS)
        conn.execute(
            "INSERT INTO versions SELECT model, version, created_at, flavor, artifact_sha256,"
            " artifact_bytes, native_sha256, native_bytes, signature, parity, lineage,"
            " gyre_version, entrypoint, deleted_at FROM new_versions"
        )
        conn.execute("DROP TABLE new_versions")
        conn.execute("DROP TABLE evaluations")  # schema 5's
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    registry = Registry(home)
    try:
        (kept,) = registry.versions("scorer")
        assert kept.artifact_sha256 == old.artifact_sha256 and kept.files == ()
        mv = registry.publish_file("linear", LINEAR, artifacts=weights(tmp_path / "dir"))
        assert registry.resolve("linear").files == mv.files != ()
        with sqlite3.connect(home / "registry.db") as conn:
            (found,) = conn.execute("PRAGMA user_version").fetchone()
        conn.close()
        assert found == SCHEMA_VERSION == 5
    finally:
        registry.close()
    assert manifest_sha256(()) is None
