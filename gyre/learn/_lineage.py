"""What a run records about where it came from: the code (git commit, and when the working
tree is dirty, a flag and a hash of the difference, so a run of uncommitted code never
passes for the commit) and the environment (Python, platform, package versions)."""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# The packages whose version can change what a run learns or how its model is exported.
PACKAGES = (
    "gyre",
    "numpy",
    "scikit-learn",
    "lightgbm",
    "torch",
    "keras",
    "onnx",
    "onnxruntime",
    "skl2onnx",
    "onnxmltools",
    "duckdb",
    "pyarrow",
)
_GIT_TIMEOUT_S = 10.0


def _git(folder: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(folder: Path) -> dict[str, Any]:
    """The git state of the repository holding `folder`: the commit, whether the working
    tree differs from it, and the sha256 of that difference (tracked changes and the
    content of untracked files). `{"commit": None}` outside a repository."""
    head = _git(folder, "rev-parse", "HEAD")
    root = _git(folder, "rev-parse", "--show-toplevel")
    if head is None or root is None:
        return {"commit": None, "dirty": None, "reason": "not in a git repository"}
    top = Path(root.decode().strip())
    status = _git(top, "status", "--porcelain", "-z", "--untracked-files=all") or b""
    dirty = bool(status.strip(b"\0"))
    version: dict[str, Any] = {"commit": head.decode().strip(), "dirty": dirty}
    if dirty:
        digest = hashlib.sha256(_git(top, "diff", "HEAD", "--binary") or b"")
        for entry in status.split(b"\0"):
            if entry.startswith(b"?? "):
                name = entry[3:]
                digest.update(b"\0untracked\0" + name + b"\0")
                try:
                    digest.update((top / name.decode(errors="surrogateescape")).read_bytes())
                except OSError:
                    digest.update(b"<unreadable>")
        version["diff_sha256"] = digest.hexdigest()
    return version


def environment() -> dict[str, Any]:
    """The Python, platform and package versions this process runs (read once)."""
    return copy.deepcopy(_environment())


@functools.cache
def _environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": versions,
    }
