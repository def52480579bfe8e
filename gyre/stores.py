"""Where gyre's state lives: the one place that names its files.

Everything gyre keeps is under one home directory (`--home`, `$GYRE_HOME`, `./.gyre`):

| path | what | written by |
|---|---|---|
| `facts.db` | the fact log (SQLite, WAL) | collect |
| `registry.db` | versions, aliases, policies, the change log | registry |
| `artifacts/` | content-addressed model files | registry |
| `cache/files/` | Python models' files, rebuilt from `artifacts/` | serve |
| `feedback.db` | served answers, feedback, shadow comparisons, request-id key | monitor |
| `served.db` | the feature vectors the server served | monitor |
| `predictions.db` | the prediction log: a sample of every model's answers | monitor |
| `online.snapshot` | the online feature state, for a fast restart | serve |
| `workers/` | Python model worker sockets | serve |
| `run/` | one folder per running server (metrics, rate limits) | serve |

Entry points (the CLI, `gyre serve`, the demo, users' code) build one `Stores` and pass
what it opens down; no other module names a file of the home. The stores behind it are
embedded ones (SQLite files and a local folder); PostgreSQL for the fact log and the
metadata, behind the same calls, is the next step (issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gyre.collect import SQLiteFactLog
    from gyre.config import Config


@dataclass(frozen=True)
class Stores:
    """The state of one gyre home; `open_*` methods open a store, the paths say where."""

    home: Path

    @classmethod
    def from_config(cls, config: Config) -> Stores:
        return cls(config.home)

    @property
    def fact_log_path(self) -> Path:
        return self.home / "facts.db"

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.db"

    @property
    def artifacts_path(self) -> Path:
        return self.home / "artifacts"

    @property
    def files_cache_path(self) -> Path:
        return self.home / "cache" / "files"

    @property
    def feedback_path(self) -> Path:
        return self.home / "feedback.db"

    @property
    def served_log_path(self) -> Path:
        return self.home / "served.db"

    @property
    def prediction_log_path(self) -> Path:
        return self.home / "predictions.db"

    @property
    def online_snapshot_path(self) -> Path:
        return self.home / "online.snapshot"

    @property
    def workers_path(self) -> Path:
        return self.home / "workers"

    @property
    def run_path(self) -> Path:
        return self.home / "run"

    def open_fact_log(self) -> SQLiteFactLog:
        """The fact log, for reading (the server and `Collector` append to it)."""
        from gyre.collect import SQLiteFactLog

        return SQLiteFactLog(self.fact_log_path)
