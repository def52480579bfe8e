"""Python models with files (weights) in worker processes, against real `gyre serve`."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from gyre.registry import Registry
from tests.conftest import start_server

pytestmark = pytest.mark.integration

PYMODELS = Path(__file__).parent / "pymodels"
COEF = np.array([1.0, -2.0, 0.5], dtype=np.float32)
ROWS = [[1.0, 2.0, 3.0], [0.5, 0.0, -4.0]]


def body(rows: list[list[float]]) -> dict:
    data = [v for row in rows for v in row]
    return {"inputs": [{"name": "x", "shape": [len(rows), 3], "datatype": "FP32", "data": data}]}


def publish_linear(home: Path, source: Path, coef: np.ndarray, bias: float) -> Registry:
    """Publish tests/serve/pymodels/linear.py from a copy under `source`, with its weights
    in a folder there; the caller deletes `source`."""
    (source / "dir" / "weights").mkdir(parents=True)
    shutil.copy(PYMODELS / "linear.py", source / "linear.py")
    np.save(source / "dir" / "weights" / "coef.npy", coef)
    (source / "dir" / "bias.txt").write_text(str(bias))
    registry = Registry(home)
    registry.publish_file("linear", source / "linear.py", artifacts=source / "dir")
    return registry


def test_a_python_model_with_a_weights_file_is_served_after_its_source_is_deleted(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    registry = publish_linear(home, tmp_path / "src", COEF, 0.25)
    (mv,) = registry.versions("linear")
    registry.close()
    shutil.rmtree(tmp_path / "src")  # the code and the weights: only the registry has them
    expected = (np.array(ROWS, dtype=np.float32) @ COEF + np.float32(0.25)).tolist()
    assert expected != [0.25, 0.25]
    for start in ("first", "restart", "restart without the cache"):
        extra: tuple[str, ...] = ()
        if start == "restart without the cache":  # two processes make it at once
            shutil.rmtree(home / "cache")
            extra = ("--workers", "2")
        server = start_server(home, *extra)
        try:
            for _ in range(4):  # with two processes, likely both
                response = httpx.post(f"{server.url}/v2/models/linear/infer", json=body(ROWS))
                assert response.status_code == 200, (start, response.text)
                assert response.json()["outputs"][0]["data"] == pytest.approx(expected), start
        finally:
            assert server.stop() == 0
    cache = home / "cache" / "files"
    assert [p.name for p in cache.iterdir()] == [mv.files_sha256]  # no half-made copy left
    assert (cache / str(mv.files_sha256) / "weights" / "coef.npy").is_file()


def test_a_corrupted_weights_file_refuses_its_version_and_the_rest_is_served(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    registry = publish_linear(home, tmp_path / "src", COEF, 0.25)
    registry.publish_file("scorer", PYMODELS / "scorer.py")
    (mv,) = registry.versions("linear")
    registry.close()
    coef = next(f for f in mv.files if f.path == "weights/coef.npy")
    registry.artifacts.path_of(coef.sha256).write_bytes(b"\x93NUMPY not the weights")
    server = start_server(home)
    try:
        refused = httpx.post(f"{server.url}/v2/models/linear/infer", json=body(ROWS))
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert "worker failed to load" in error
        assert f"(file `weights/coef.npy`) is corrupted: expected sha256 {coef.sha256}" in error
        scorer = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0, 1]}]}
        served = httpx.post(f"{server.url}/v2/models/scorer/infer", json=scorer)
        assert served.status_code == 200 and served.json()["outputs"][0]["data"] == [2.0]
        assert 'event="failed",model="linear"' in httpx.get(f"{server.url}/metrics").text
    finally:
        assert server.stop() == 0
    log = server.output()
    assert "could not load linear:1" in log and "is corrupted: expected sha256" in log
