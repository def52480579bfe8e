"""State a running server keeps under <home>/run, and what a start removes of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sklearn.pipeline import Pipeline

from gyre.registry import Registry
from gyre.serve._rundir import MetricsDir, hold, run_dir
from tests.conftest import server_workers, start_server

HOLDER = """
import sys, time
from pathlib import Path
from gyre.serve._rundir import hold
hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def held_by_another_process(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_start_removes_the_folders_of_dead_servers_and_keeps_the_live_ones(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    ours = MetricsDir.create(home)
    assert ours.path.parent == run_dir(home) == home / "run"
    assert ours.path.name.startswith(f"metrics-{os.getpid()}-")
    live = MetricsDir.create(home)  # another server's, still running: not touched
    (run_dir(home) / "metrics-1-half-made").mkdir()  # its maker died before locking it
    crashed = run_dir(home) / "metrics-2-killed"
    crashed.mkdir()
    (crashed / "counter_7.db").write_bytes(b"x")
    holder = held_by_another_process(crashed)
    try:
        MetricsDir.create(home).remove()
        assert crashed.is_dir()  # its last process is alive: kept
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    newest = MetricsDir.create(home)  # the kernel dropped the dead process's lock
    assert sorted(p.name for p in run_dir(home).glob("metrics-*")) == sorted(
        [ours.path.name, live.path.name, newest.path.name]
    )
    for folder in (ours, live, newest):
        folder.remove()
    assert list(run_dir(home).glob("metrics-*")) == []


def test_a_folder_held_by_a_worker_alone_is_kept(tmp_path: Path) -> None:
    """A worker can outlive its supervisor for its graceful shutdown: still in use."""
    home = tmp_path / "home"
    folder = MetricsDir.create(home)
    fd = hold(folder.path)  # as a worker holds it
    os.close(folder._lock_fd)  # the supervisor is gone
    MetricsDir.create(home).remove()
    assert folder.path.is_dir()
    os.close(fd)
    MetricsDir.create(home).remove()
    assert not folder.path.exists()


@pytest.mark.integration
def test_kill_9_leaves_nothing_in_the_temp_folder_and_the_next_start_cleans_up(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = tmp_path / "home"
    Registry(home).publish("iris", iris_classifier, iris[0])
    temp = tmp_path / "temp"
    temp.mkdir()
    server = start_server(home, "--workers", "2", env={"TMPDIR": str(temp)})
    deadline = time.monotonic() + 30
    while len(server_workers(server.process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (left,) = run_dir(home).glob("metrics-*")
    server.kill_all()
    assert left.is_dir()  # nothing could remove it
    again = start_server(home, "--workers", "2", env={"TMPDIR": str(temp)})
    try:
        (current,) = run_dir(home).glob("metrics-*")
        assert current != left and not left.exists()
        assert f"removed {left}" in again.output()
    finally:
        assert again.stop() == 0
    assert list(run_dir(home).glob("metrics-*")) == []
    # Nothing a crash could leave lives there. (onnxruntime writes one file of its own
    # there when it is imported, `.ses`, 51 bytes, the same one each time.)
    assert [p.name for p in temp.iterdir() if p.name != ".ses"] == []
