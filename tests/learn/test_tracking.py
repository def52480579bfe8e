"""The tracking API inside training loops: what is logged reaches the store, in order,
whatever ends the loop (the end of the block, an exception, Ctrl-C, SIGTERM, the end of
the program), and a store that is down does not stop the loop."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import gyre.learn
from gyre.errors import RunError
from gyre.learn import ActiveRun, SQLiteRunStore, start_run
from gyre.stores import Stores


def test_a_training_loop_of_10000_points_is_all_in_the_store_in_order(stores: Stores) -> None:
    with start_run("eta", "loop", stores=stores, params={"lr": 0.1, "layers": [64, 32]}) as run:
        for step in range(10_000):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
            if step % 100 == 0:
                run.log_metric("val_loss", 2.0 / (step + 1))  # steps 0, 1, 2, … of its own
        run.log_metrics({"auc": 0.91, "accuracy": 0.8})
        run.set_tag("team", "eta")
    store = stores.open_runs()
    try:
        found = store.get(run.id)
        assert (found.status, found.error, found.name) == ("finished", None, "loop")
        assert found.params == {"lr": 0.1, "layers": [64, 32]} and found.tags == {"team": "eta"}
        history = store.metric_history(run.id, "loss")
        assert [(p.step, p.value) for p in history] == [(s, 1.0 / (s + 1)) for s in range(10_000)]
        assert [p.at for p in history] == sorted(p.at for p in history)
        assert [p.step for p in store.metric_history(run.id, "val_loss")] == list(range(100))
        assert found.metrics == {"accuracy": 0.8, "auc": 0.91, "loss": 1e-4, "val_loss": 2 / 9901}
        assert found.metric_counts == {"accuracy": 1, "auc": 1, "loss": 10_000, "val_loss": 100}
    finally:
        store.close()


def test_flush_makes_what_was_logged_readable_by_another_store(stores: Stores) -> None:
    run = start_run("eta", stores=stores, flush_interval_s=60)  # only flush writes
    reader = stores.open_runs()
    try:
        for step in range(500):
            run.log_metric("loss", float(step))
        run.set_record("lineage", {"commit": "abc", "dirty": False})
        run.flush()
        found = reader.get(run.id)
        assert found.status == "running" and found.metric_counts == {"loss": 500}
        assert found.record == {"lineage": {"commit": "abc", "dirty": False}}
    finally:
        run.end()
        reader.close()


def _status(stores: Stores, run_id: str) -> tuple[str, str | None]:
    store = stores.open_runs()
    try:
        found = store.get(run_id)
    finally:
        store.close()
    return found.status, found.error


def test_leaving_the_block_records_how_it_ended(home: Path) -> None:
    stores = Stores(home)
    with pytest.raises(ValueError, match="boom"), start_run("eta", stores=stores) as failed:
        failed.log_metric("loss", 1.0)
        raise ValueError("boom")
    assert _status(stores, failed.id) == ("failed", "ValueError: boom")
    with pytest.raises(KeyboardInterrupt), start_run("eta", stores=stores) as stopped:
        raise KeyboardInterrupt
    assert _status(stores, stopped.id) == ("interrupted", "KeyboardInterrupt")
    with start_run("eta", stores=stores) as ended:
        ended.end("failed", error="diverged")  # ended inside: the block leaves it so
    assert _status(stores, ended.id) == ("failed", "diverged")
    with pytest.raises(RunError, match="has ended already"):
        ended.end()


def test_steps_default_to_the_next_of_their_key(home: Path) -> None:
    stores = Stores(home)
    with start_run("eta", stores=stores) as run:
        run.log_metric("loss", 1.0)
        run.log_metric("loss", 2.0)
        run.log_metric("loss", 3.0, step=10)
        run.log_metric("loss", 4.0)
        run.log_metric("loss", 5.0, step=3)  # an earlier step: the next stays 12
        run.log_metric("loss", 6.0)
        run.log_metric("auc", 0.5)
    store = stores.open_runs()
    steps = [(p.step, p.value) for p in store.metric_history(run.id, "loss")]
    assert steps == [(0, 1.0), (1, 2.0), (3, 5.0), (10, 3.0), (11, 4.0), (12, 6.0)]
    assert store.get(run.id).metrics == {"auc": 0.5, "loss": 6.0}
    store.close()


def test_bad_calls_are_refused_in_the_callers_thread(home: Path) -> None:
    import numpy as np

    with start_run("eta", stores=Stores(home), params={"depth": 3}) as run:
        run.log_metric("loss", np.float32(0.5), step=np.int64(2))  # numpy numbers are numbers
        run.log_param("depth", 3)  # the same value again
        for call, message in [
            (lambda: run.log_metric("bad key!", 1.0), "metric key 'bad key!'"),
            (lambda: run.log_metric("loss", float("nan")), "not a finite number"),
            (lambda: run.log_metric("loss", "0.5"), "is not a number"),
            (lambda: run.log_metric("loss", 1.0, step=1.5), "64-bit integer"),
            (lambda: run.log_metric("loss", 1.0, step=True), "64-bit integer"),
            (lambda: run.log_param("depth", 4), "param `depth` .* is 3; it cannot become 4"),
            (lambda: run.log_param("fn", print), "not a JSON value"),
            (lambda: run.set_tag("team", 3), "must be text"),
            (lambda: run.log_artifact("model", "text"), "must be bytes"),
        ]:
            with pytest.raises(RunError, match=message):
                call()
    for call in (lambda: run.log_metric("loss", 1.0), lambda: run.set_tag("a", "b")):
        with pytest.raises(RunError, match=r"has ended \(finished\); start a new run"):
            call()
    with pytest.raises(RunError, match="not a JSON value"):
        start_run("eta", stores=Stores(home), params={"x": float("inf")})
    store = Stores(home).open_runs()
    assert len(store.search()) == 1  # the refused start made no run
    store.close()


def test_an_artifact_is_stored_by_content_and_recorded(home: Path) -> None:
    stores = Stores(home)
    with start_run("eta", stores=stores) as run:
        digest = run.log_artifact("model.onnx", b"\x08\x07onnx", media_type="application/onnx")
        run.log_artifact("plots/roc.png", b"png")
    assert digest == hashlib.sha256(b"\x08\x07onnx").hexdigest()
    assert stores.open_artifacts().get(digest, what="the test model") == b"\x08\x07onnx"
    store = stores.open_runs()
    assert store.get(run.id).record["artifacts"] == {
        "model.onnx": {"sha256": digest, "bytes": 6, "media_type": "application/onnx"},
        "plots/roc.png": {"sha256": hashlib.sha256(b"png").hexdigest(), "bytes": 3,
                          "media_type": "application/octet-stream"},
    }  # fmt: skip
    store.close()


def test_a_locked_store_is_retried_and_an_outage_surfaces_at_flush_and_end(home: Path) -> None:
    """SQLite held by another writer past the store's busy timeout is an outage: the loop
    keeps logging, the writer retries, flush says so, and once the lock goes every point
    lands."""
    stores = Stores(home)
    store = SQLiteRunStore(stores.runs_path, timeout_s=0.05)
    run = ActiveRun(store, stores.open_artifacts(), store.create_run("eta").run_id,
                    flush_interval_s=0.01)  # fmt: skip
    blocker = sqlite3.connect(stores.runs_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    for step in range(1000):
        run.log_metric("loss", float(step), step=step)
    with pytest.raises(RunError, match=r"not durable after 0.3 s: runs store .* is locked"):
        run.flush(timeout_s=0.3)
    blocker.execute("ROLLBACK")
    run.flush()
    assert [p.step for p in store.metric_history(run.id, "loss")] == list(range(1000))
    blocker.execute("BEGIN IMMEDIATE")
    run.log_metric("loss", 1.0, step=1000)
    with pytest.raises(
        RunError, match=r"1 metric point and its end \(finished\) not written: .* is locked"
    ):
        run.end(timeout_s=0.3)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert store.get(run.id).status == "running"  # its end could not be recorded
    run.end("interrupted")  # a second try records it
    assert store.get(run.id).status == "interrupted"
    store.close()


def test_a_write_the_store_refuses_surfaces_at_flush_and_loses_no_metric(stores: Stores) -> None:
    other = stores.open_runs()
    with start_run("eta", stores=stores) as run:
        other.log_batch(run.id, params={"depth": 1})  # another writer of the same run
        run.log_param("depth", 2)
        run.log_metric("loss", 0.5)
        with pytest.raises(RunError, match=r"params not written: param `depth`.* is 1"):
            run.flush()
        run.flush()  # said once
    found = other.get(run.id)
    assert (found.params, found.metrics, found.status) == ({"depth": 1}, {"loss": 0.5}, "finished")
    other.close()


def test_start_run_without_stores_uses_the_configured_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GYRE_CONFIG", raising=False)
    monkeypatch.setenv("GYRE_HOME", str(tmp_path / "configured"))
    with gyre.learn.start_run("eta") as run:
        run.log_metric("loss", 1.0)
    assert "configured" in run.store.where
    store = SQLiteRunStore(tmp_path / "configured" / "runs.db")
    assert store.get(run.id).metrics == {"loss": 1.0}
    store.close()


def test_sigterm_in_process_ends_the_run_then_calls_the_previous_handler(home: Path) -> None:
    calls: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        stores = Stores(home)
        run = start_run("eta", stores=stores)
        assert signal.getsignal(signal.SIGTERM) is not before
        run.log_metric("loss", 1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == [signal.SIGTERM]
        assert _status(stores, run.id) == ("interrupted", "interrupted by SIGTERM")
        with pytest.raises(RunError, match="has ended"):
            run.log_metric("loss", 2.0)
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_previous_signal_handlers_come_back_when_the_last_run_ends(home: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stores = Stores(home)
    with start_run("eta", stores=stores), start_run("eta", stores=stores):
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# -- a real training process, stopped mid-loop -------------------------------------------------

LOOP = """
import signal, sys, time
from pathlib import Path
import gyre.learn
from gyre.stores import Stores

signal.signal(signal.SIGINT, signal.SIG_DFL)  # as the system starts a process; gyre makes
# SIGINT raise KeyboardInterrupt while the run is active
with gyre.learn.start_run("eta", stores=Stores(Path(sys.argv[1]))) as run:
    print(run.id, flush=True)
    step = 0
    while True:
        run.log_metric("loss", 1.0 / (step + 1), step=step)
        print(step, flush=True)
        step += 1
        time.sleep(0.0005)
"""


def _child(home: Path, script: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(("sig", "error"), [(signal.SIGTERM, "interrupted by SIGTERM"),
                                             (signal.SIGINT, "KeyboardInterrupt")])  # fmt: skip
def test_a_signal_mid_loop_loses_no_point_and_marks_the_run_interrupted(
    home: Path, sig: int, error: str
) -> None:
    child = _child(home, LOOP)
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    printed = -1
    while printed < 300:
        printed = int(child.stdout.readline())
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    printed = int(out.split()[-1]) if out.split() else printed
    assert child.returncode == -sig, err  # it ends as that signal ends a process
    store = Stores(home).open_runs()
    found = store.get(run_id)
    steps = [p.step for p in store.metric_history(run_id, "loss")]
    store.close()
    assert (found.status, found.error) == ("interrupted", error)
    # Every step printed was logged before the signal; one more may have been logged
    # between its log_metric and its print.
    assert steps == list(range(len(steps))) and len(steps) - 1 in (printed, printed + 1)


@pytest.mark.parametrize(("ending", "status", "error"), [
    ("pass", "finished", None),
    ("raise RuntimeError('lost')", "failed", "RuntimeError: lost"),
])  # fmt: skip
def test_a_run_never_ended_is_flushed_and_ended_at_exit(
    home: Path, ending: str, status: str, error: Any
) -> None:
    script = f"""
    import sys
    from pathlib import Path
    import gyre.learn
    from gyre.stores import Stores

    run = gyre.learn.start_run("eta", stores=Stores(Path(sys.argv[1])), flush_interval_s=60)
    print(run.id, flush=True)
    for step in range(2000):
        run.log_metric("loss", float(step))
    {ending}
    """
    child = _child(home, script)
    out, err = child.communicate(timeout=60)
    store = Stores(home).open_runs()
    found = store.get(out.split()[0])
    assert (found.status, found.error, found.metric_counts) == (status, error, {"loss": 2000}), err
    store.close()
