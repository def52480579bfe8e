"""Several processes opening the same new SQLite file at once all get a WAL connection."""

import multiprocessing
from pathlib import Path
from typing import Any

from gyre._sqlite import connect_wal

PROCESSES = 8
ROUNDS = 60  # each round races on a new file; without the retry ~1 open in 100 failed


def _open(path: Path, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        conn = connect_wal(path, timeout_s=10.0, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.close()
        results.put(mode)
    except Exception as exc:
        results.put(repr(exc))


def test_processes_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    outcomes = []
    for round_ in range(ROUNDS):
        path = tmp_path / f"shared-{round_}.db"
        barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
        processes = [
            ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        outcomes += [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)
    assert [o for o in outcomes if o != "wal"] == []
