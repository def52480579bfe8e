"""A Python model's files (`--artifacts DIR`): weights, vocabularies, whatever `load` reads.

Publishing stores every regular file under DIR in the content-addressed artifact store and
records a manifest on the version: one `ArtifactFile` (relative POSIX path, sha256, size)
per file, sorted by path. The manifest's own hash (`manifest_sha256`, of its canonical
JSON) names the whole set: the same files give the same hash, whatever DIR was called.

Only what is inside DIR can get into a manifest. Refused, with the path that broke the rule:
a symlink that resolves outside DIR, to nothing or to a folder (a symlink to a file inside
DIR is stored as that file's bytes under the link's name); anything neither a regular file
nor a folder (FIFO, socket, device); a name that is not UTF-8; an empty DIR; and more than
`registry.artifacts_max_files` files or `registry.artifacts_max_bytes` bytes. Each file is
opened without following links and checked again once open, so a file swapped for a link
or a FIFO between the walk and the read is refused too, and read in pieces while hashed.

Loading makes the folder the model reads (`VersionFiles.materialize`): under the cache,
named by the manifest's hash, every file copied from the store (verified as it is copied)
and read-only. A folder already there is re-hashed file by file at every load and rebuilt
from the store when it differs; it is built in a temporary folder and renamed into place,
so processes loading the same version at once never see half of it. Manifest paths read
back from the metadata store are checked again before anything is written: no absolute
path, no `..`, `.` or empty part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import msgspec

from gyre.errors import ArtifactCorrupted, InvalidModel
from gyre.registry._artifacts import LocalArtifactStore, sha256_of

log = logging.getLogger("gyre.registry")

_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArtifactFile(msgspec.Struct, frozen=True):
    """One file of a version's artifacts folder."""

    path: str  # relative POSIX path inside the folder, e.g. "weights/coef.npy"
    sha256: str
    bytes: int


Manifest = tuple[ArtifactFile, ...]


def encode_manifest(files: Manifest) -> bytes:
    """The canonical JSON of a manifest (entries sorted by path, fields in order)."""
    return msgspec.json.encode(files)


def decode_manifest(text: str | bytes) -> Manifest:
    return msgspec.json.decode(text, type=Manifest)


def manifest_sha256(files: Manifest) -> str | None:
    """One hash for the whole set of files; None for a version without files."""
    return sha256_of(encode_manifest(files)) if files else None


def collect_files(
    folder: Path, store: LocalArtifactStore, *, max_bytes: int, max_files: int
) -> Manifest:
    """Store every file under `folder` in `store`; the manifest, or `InvalidModel`."""
    try:
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidModel(f"artifacts folder {folder} does not exist") from None
    if not root.is_dir():
        raise InvalidModel(
            f"artifacts {folder} is not a folder; pass the folder that holds the model's files"
        )
    found = sorted(_walk(root, root, (), folder))
    if not found:
        raise InvalidModel(f"artifacts folder {folder} holds no files; leave out --artifacts")
    if len(found) > max_files:
        raise InvalidModel(
            f"artifacts folder {folder} holds {len(found)} files, more than "
            f"registry.artifacts_max_files = {max_files}; pack them into fewer files or "
            "raise the limit in gyre.toml"
        )
    too_big = (
        f"artifacts folder {folder} holds more than registry.artifacts_max_bytes = "
        f"{max_bytes} bytes; leave out what the model does not read, or raise the limit "
        "in gyre.toml"
    )
    if sum(os.stat(source).st_size for _, source in found) > max_bytes:
        raise InvalidModel(too_big)
    files = []
    left = max_bytes
    for rel, source in found:
        chunks = _chunks(source, rel, folder, left, too_big)
        try:
            digest, size = store.put_chunks(chunks)
        finally:
            chunks.close()
        files.append(ArtifactFile(rel, digest, size))
        left -= size
    return tuple(files)


def _walk(
    root: Path, here: Path, parts: tuple[str, ...], folder: Path
) -> Iterator[tuple[str, Path]]:
    """(relative path, the file to read) for every file under `here`, refusing what
    the module docstring lists."""
    with os.scandir(here) as entries:
        listed = list(entries)
    for entry in listed:
        rel = "/".join((*parts, entry.name))
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidModel(
                f"artifacts folder {folder}: the name {rel!r} is not UTF-8; rename it"
            ) from None
        source = Path(entry.path)
        if entry.is_symlink():
            target = Path(os.path.realpath(source))
            if not target.is_relative_to(root):
                raise InvalidModel(
                    f"artifacts folder {folder}: `{rel}` is a symlink to {target}, outside "
                    "the folder; copy the file into the folder instead"
                )
            if not target.exists():
                raise InvalidModel(
                    f"artifacts folder {folder}: `{rel}` is a symlink to {target}, which "
                    "does not exist; remove it"
                )
            if target.is_dir():
                raise InvalidModel(
                    f"artifacts folder {folder}: `{rel}` is a symlink to a folder; replace "
                    "it with the folder itself"
                )
            source = target
        elif entry.is_dir(follow_symlinks=False):
            yield from _walk(root, source, (*parts, entry.name), folder)
            continue
        mode = os.stat(source).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidModel(
                f"artifacts folder {folder}: `{rel}` is {_kind(mode)}, not a regular file; "
                "remove it"
            )
        yield rel, source


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISLNK, "a symlink")):  # fmt: skip
        if test(mode):
            return name
    return "a special file"


def _chunks(
    source: Path, rel: str, folder: Path, left: int, too_big: str
) -> Generator[bytes, None, None]:
    """The bytes of `source`, opened without following a link (O_NONBLOCK: a FIFO put in
    its place does not block the open) and checked to be a regular file once open."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidModel(f"artifacts folder {folder}: cannot read `{rel}`: {exc}") from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidModel(
                f"artifacts folder {folder}: `{rel}` is {_kind(mode)}, not a regular file; "
                "remove it"
            )
        while chunk := file.read(_CHUNK):
            left -= len(chunk)
            if left < 0:
                raise InvalidModel(too_big)
            yield chunk


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return "\x00" not in path and all(part not in ("", ".", "..") for part in parts)


def check_manifest(files: Manifest, what: str) -> None:
    """Refuse a manifest (as read back from the metadata store) that could write outside
    its folder or is not what publishing records."""
    paths = [f.path for f in files]
    for f in files:
        parents = f.path.split("/")[:-1]
        if (
            not _safe_path(f.path)
            or not _SHA256.fullmatch(f.sha256)
            or f.bytes < 0
            or any("/".join(parents[: i + 1]) in paths for i in range(len(parents)))
        ):
            raise ArtifactCorrupted(
                f"the file manifest of {what} has a malformed entry {f.path!r}; publish the "
                "model again"
            )
    if paths != sorted(set(paths)):
        raise ArtifactCorrupted(
            f"the file manifest of {what} is not sorted or names a file twice; publish the "
            "model again"
        )


def write_files(store: LocalArtifactStore, files: Manifest, dest: Path, what: str) -> None:
    """Copy `files` from `store` into the empty folder `dest`, each verified, read-only."""
    check_manifest(files, what)
    for f in files:
        target = dest.joinpath(*f.path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        store.copy_to(f.sha256, target, what=f"{what} (file `{f.path}`)")
        target.chmod(0o444)


def _differs(folder: Path, files: Manifest) -> str | None:
    """How `folder` differs from `files` (None: it holds every one of them, intact)."""
    for f in files:
        path = folder.joinpath(*f.path.split("/"))
        if path.is_symlink() or not path.is_file():
            return f"lacks `{f.path}`"
        if path.stat().st_size != f.bytes:
            return f"has `{f.path}` of {path.stat().st_size} bytes, not {f.bytes}"
        hasher = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != f.sha256:
            return f"has `{f.path}` with sha256 {hasher.hexdigest()}, not {f.sha256}"
    return None


@dataclasses.dataclass(frozen=True)
class VersionFiles:
    """What a process needs to give a version's model its folder of files (picklable:
    worker processes materialize it themselves)."""

    store_root: Path
    cache: Path
    files: Manifest
    what: str  # e.g. "model `m` version 3"

    def materialize(self) -> Path:
        """The folder holding `files`, verified file by file; `ArtifactCorrupted` when the
        store cannot give back a file as published."""
        check_manifest(self.files, self.what)
        final = self.cache / str(manifest_sha256(self.files))
        if final.is_dir():
            problem = _differs(final, self.files)
            if problem is None:
                return final
            log.warning("%s: its files at %s: the folder %s; rebuilding it from the artifact "
                        "store", self.what, final, problem)  # fmt: skip
            aside = Path(tempfile.mkdtemp(prefix=".bad-", dir=self.cache))
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                os.rename(final, aside / "files")
            shutil.rmtree(aside, ignore_errors=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cache))
        try:
            write_files(LocalArtifactStore(self.store_root), self.files, building, self.what)
            try:
                os.rename(building, final)
            except OSError:  # another process renamed its copy into place first
                if not final.is_dir():
                    raise
                shutil.rmtree(building)
                problem = _differs(final, self.files)
                if problem is not None:
                    raise ArtifactCorrupted(
                        f"{self.what}: its files at {final}: the folder {problem}; stop the "
                        f"servers, remove {final} and start them again"
                    ) from None
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return final
