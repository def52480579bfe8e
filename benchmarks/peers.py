"""The peers' benchmark-only environments: a virtual environment under the temporary
folder per peer and version, made once and reused, never one of gyre's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def peer_python(venv: Path, module: str, version: str, pins: tuple[str, ...] = ()) -> Path:
    """The Python of `venv` with `module`==`version` (and `pins`) installed; made when
    absent or holding another version."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import {module}; assert {module}.__version__ == '{version}'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing {module}=={version} into {venv} (a few minutes, once)…",
          file=sys.stderr, flush=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{module}=={version}", *pins], check=True
    )
    return python
