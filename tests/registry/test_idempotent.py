"""Idempotent publishing: content a live version already holds returns that version."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import joblib
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from gyre.registry import CHAMPION, Registry
from tests.cli.test_cli import gyre
from tests.forced import UNBLESSED
from tests.serve.models import identity


def test_republishing_the_same_model_returns_its_version(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    first = registry.publish("iris", iris_classifier, iris[0])
    again = registry.publish("iris", iris_classifier, iris[0])
    assert (first.version, first.reused) == (1, False)
    assert (again.version, again.reused) == (1, True)
    assert [v.version for v in registry.versions("iris")] == [1]
    forced = registry.publish("iris", iris_classifier, iris[0], force_new=True)
    assert (forced.version, forced.reused) == (2, False)


def test_other_content_or_another_model_makes_a_new_version(
    registry: Registry, iris_classifier: Pipeline, iris_regressor: BaseEstimator, iris: tuple
) -> None:
    registry.publish("iris", iris_classifier, iris[0])
    assert registry.publish("iris", iris_regressor, iris[0]).version == 2
    assert registry.publish("other", iris_classifier, iris[0]).version == 1
    onnx = identity("FP32")
    assert registry.publish_onnx("raw", onnx).version == 1
    assert registry.publish_onnx("raw", onnx).reused
    assert registry.publish_onnx("raw", identity("INT64")).version == 2


def test_a_deleted_version_is_not_reused(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry.publish("iris", iris_classifier, iris[0])
    registry.delete_version("iris", 1)
    again = registry.publish("iris", iris_classifier, iris[0])
    assert (again.version, again.reused) == (2, False)


def test_an_alias_given_with_reused_content_points_at_the_existing_version(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish("iris", iris_classifier, iris[0], alias="candidate", force_new=True)
    again = registry.publish("iris", iris_classifier, iris[0], alias="candidate")
    # The first live version holding the content answers; the alias moves to it.
    assert (again.version, again.reused) == (1, True)
    assert set(again.aliases) == {CHAMPION, "candidate"}


def _publish_same(home: str, queue: multiprocessing.Queue[int]) -> None:
    from tests.serve.models import identity

    queue.put(Registry(Path(home)).publish_onnx("race", identity("FP32")).version)


def test_concurrent_publishes_of_one_content_make_one_version(home: Path) -> None:
    Registry(home).close()  # the schema exists before the racers open it
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    workers = [ctx.Process(target=_publish_same, args=(str(home), queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert sorted(queue.get(timeout=5) for _ in range(4)) == [1, 1, 1, 1]
    assert [v.version for v in Registry(home).versions("race")] == [1]


def test_the_cli_says_nothing_new_was_published(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(identity("FP32"))
    args = ["registry", "publish", "m", str(path)]
    assert "published m version 1" in gyre(home, *args).stdout
    again = gyre(home, *args).stdout
    assert "unchanged: m version 1 already holds this content" in again
    assert "published m version 2" in gyre(home, *args, "--force-new").stdout


def test_a_mixed_table_model_is_reused_or_forced_new_like_any_other(
    registry: Registry, mixed_classifier: Pipeline, mixed_table: tuple
) -> None:
    frame, _ = mixed_table
    assert registry.publish("loans", mixed_classifier, frame).version == 1
    assert registry.publish("loans", mixed_classifier, frame).reused
    forced = registry.publish("loans", mixed_classifier, frame, force_new=True)
    assert (forced.version, forced.reused) == (2, False)


def test_a_mixed_table_model_exports_the_same_bytes_whatever_the_hash_seed(
    home: Path, tmp_path: Path, mixed_classifier: Pipeline, mixed_table: tuple
) -> None:
    # skl2onnx listed the graph's opset imports in a set's order: republishing from another
    # process (another PYTHONHASHSEED) made another version of the same model.
    model, sample = tmp_path / "loans.joblib", tmp_path / "rows.csv"
    joblib.dump(mixed_classifier, model)
    mixed_table[0].to_csv(sample, index=False)
    for seed in ("1", "3"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
        subprocess.run(
            [sys.executable, "-m", "gyre", "--home", str(home), "registry", "publish", "loans",
             str(model), "--sample", str(sample)],
            env={**env, "PYTHONHASHSEED": seed}, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    assert [v.version for v in Registry(home).versions("loans")] == [1]
