import multiprocessing
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from gyre.config import StoreConfig
from gyre.errors import ArtifactCorrupted, InvalidModel, ModelNotFound, ParityError, RegistryError
from gyre.registry import CHAMPION, Registry, parse_ref
from gyre.stores import Stores
from gyre.types import TensorSpec
from tests.forced import UNBLESSED


def test_publish_sklearn_pipeline_records_signature_parity_and_lineage(
    registry: Registry, iris_classifier: Pipeline, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = iris
    mv = registry.publish("iris", iris_classifier, x, lineage={"params": {"C": 1.0}})
    assert mv.version == 1
    assert mv.flavor == "sklearn"
    assert mv.signature.inputs == (TensorSpec("X", "FP32", (-1, 4)),)
    assert [s.name for s in mv.signature.outputs] == ["label", "probabilities"]
    assert mv.signature.output("probabilities") == TensorSpec("probabilities", "FP32", (-1, 3))
    assert mv.parity["passed"] is True
    assert mv.parity["max_abs_diff"] < 1e-4
    assert mv.parity["rows"] == 150
    assert mv.lineage["params"] == {"C": 1.0}
    assert len(mv.lineage["sample_sha256"]) == 64
    assert mv.native_sha256 is not None


def test_versions_count_up_per_model(
    registry: Registry, iris_classifier: Pipeline, iris_regressor: BaseEstimator, iris: tuple
) -> None:
    x, _ = iris
    assert registry.publish("a", iris_classifier, x).version == 1
    assert registry.publish("a", iris_classifier, x, force_new=True).version == 2
    assert registry.publish("b", iris_regressor, x).version == 1
    assert [(m.model, m.version) for m in registry.versions()] == [("a", 1), ("a", 2), ("b", 1)]


def test_regressor_exports_with_one_output(
    registry: Registry, iris_regressor: BaseEstimator, iris: tuple
) -> None:
    mv = registry.publish("ridge", iris_regressor, iris[0])
    assert [s.name for s in mv.signature.outputs] == ["variable"]
    assert mv.parity["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("wrap", [False, True], ids=["model", "in-pipeline"])
def test_lightgbm_publishes_with_parity(registry: Registry, iris: tuple, wrap: bool) -> None:
    x, y = iris
    model = lightgbm.LGBMClassifier(n_estimators=15, verbose=-1)
    if wrap:
        model = make_pipeline(StandardScaler(), model)
    mv = registry.publish("lgbm", model.fit(x, y), x)
    assert mv.flavor == "sklearn" if wrap else "lightgbm"
    assert mv.signature.output("label") == TensorSpec("label", "INT64", (-1,))
    assert mv.parity["max_abs_diff"] < 1e-4


def test_parity_failure_refuses_with_the_observed_difference(
    home: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    from gyre.config import RegistryConfig

    strict = Registry(home, RegistryConfig(parity_tolerance=0.0))
    with pytest.raises(ParityError, match=r"max absolute difference [0-9.e-]+ \(tolerance 0\)"):
        strict.publish("iris", iris_classifier, iris[0])
    assert strict.metadata.versions() == []


def test_sample_with_wrong_width_is_refused(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    with pytest.raises(InvalidModel, match="expects a 2-D table with 4 columns"):
        registry.publish("iris", iris_classifier, iris[0][:, :3])


def test_publish_file_joblib_needs_a_sample(
    registry: Registry, iris_classifier: Pipeline, tmp_path: Path, iris: tuple
) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(iris_classifier, path)
    with pytest.raises(InvalidModel, match=r"needs sample input rows.*--sample"):
        registry.publish_file("iris", path)
    sample = tmp_path / "rows.csv"
    np.savetxt(sample, iris[0], delimiter=",", header="a,b,c,d", comments="")
    mv = registry.publish_file("iris", path, sample=sample, alias=CHAMPION, force_alias=UNBLESSED)
    assert mv.aliases == (CHAMPION,)
    assert mv.native_sha256 is not None
    assert registry.artifacts.path_of(mv.native_sha256).read_bytes() == path.read_bytes()
    # Named CSV columns become the feature names when the model does not know them.
    assert mv.signature.feature_names == ("a", "b", "c", "d")


def test_publish_onnx_file_checks_graph_and_runs_a_test_inference(
    registry: Registry, iris_classifier: Pipeline, tmp_path: Path, iris: tuple
) -> None:
    source = registry.publish("src", iris_classifier, iris[0])
    path = tmp_path / "model.onnx"
    path.write_bytes(registry.artifact(source))
    mv = registry.publish_file("copy", path)
    assert mv.flavor == "onnx"
    assert mv.parity["checked"] is False
    assert mv.signature == source.signature
    assert mv.artifact_sha256 == source.artifact_sha256  # content-addressed: stored once

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(InvalidModel, match="not a valid ONNX graph"):
        registry.publish_file("broken", broken)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("model.txt", b"x", "must be .onnx, .joblib, .pkl, .py, .keras or a SavedModel folder"),
        ("model.joblib", b"garbage", "could not load"),
    ],
)
def test_bad_model_files_are_refused(
    registry: Registry, tmp_path: Path, iris: tuple, filename: str, content: bytes, message: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    sample = tmp_path / "rows.npy"
    np.save(sample, iris[0])
    with pytest.raises(InvalidModel, match=message):
        registry.publish_file("m", path, sample=sample)


def test_bad_sample_files_are_refused_without_advice_to_unpickle(
    registry: Registry, tmp_path: Path
) -> None:
    from gyre.registry import load_sample

    text = tmp_path / "text.npy"
    text.write_text("1,2,3\n")
    with pytest.raises(InvalidModel, match=r"is not a \.npy file; write the rows with numpy\.save"):
        load_sample(text)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cut = tmp_path / "cut.npy"
    np.save(cut, np.ones((3, 2)))
    cut.write_bytes(cut.read_bytes()[:100])
    for path in (objects, cut):
        with pytest.raises(InvalidModel, match=r"is not a numeric \.npy array") as caught:
            load_sample(path)
        assert "unsafely" not in str(caught.value)


def test_objects_that_are_not_models_are_refused(registry: Registry, iris: tuple) -> None:
    with pytest.raises(InvalidModel, match=r"cannot publish a builtins\.dict"):
        registry.publish("m", {"not": "a model"}, iris[0])


def test_bad_names_are_refused(registry: Registry, iris_classifier: Pipeline, iris: tuple) -> None:
    with pytest.raises(InvalidModel, match="model name 'a/b' is not allowed"):
        registry.publish("a/b", iris_classifier, iris[0])
    registry.publish("m", iris_classifier, iris[0])
    with pytest.raises(InvalidModel, match="alias name '7' is not allowed"):
        registry.set_alias("m", "7", 1)


def test_aliases_set_move_delete_and_resolve(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    for _ in range(3):
        registry.publish("m", iris_classifier, iris[0], force_new=True)
    assert registry.resolve("m").version == 3  # no champion: the latest
    assert registry.set_alias("m", CHAMPION, 1, reason=UNBLESSED, force=True) is None
    assert registry.resolve("m").version == 1
    assert registry.set_alias("m", CHAMPION, 2, reason="better AUC", force=True) == 1
    assert registry.resolve("m@champion").version == 2
    assert registry.resolve("m:3").version == 3
    registry.delete_alias("m", CHAMPION)
    assert registry.resolve("m").version == 3
    with pytest.raises(ModelNotFound, match="no alias `champion` for model `m`"):
        registry.resolve("m@champion")
    change = [c for c in registry.metadata.changes("m") if c["action"] == "alias"][-1]
    assert (change["version"], change["previous"], change["why"]) == (2, 1, "better AUC")


def test_alias_to_a_missing_version_is_refused(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry.publish("m", iris_classifier, iris[0])
    with pytest.raises(ModelNotFound, match="model `m` version 9 does not exist"):
        registry.set_alias("m", CHAMPION, 9, reason=UNBLESSED, force=True)


def test_soft_delete_refuses_aliased_versions_and_keeps_the_record(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry.publish("m", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish("m", iris_classifier, iris[0], force_new=True)
    with pytest.raises(RegistryError, match="aliased as `champion`; move or delete the alias"):
        registry.delete_version("m", 1)
    registry.delete_version("m", 2, reason="bad data")
    assert [m.version for m in registry.versions("m")] == [1]
    assert [m.version for m in registry.metadata.versions("m", include_deleted=True)] == [1, 2]
    with pytest.raises(ModelNotFound, match="version 2 is deleted"):
        registry.resolve("m:2")
    # A deleted version never comes back: numbering continues.
    assert registry.publish("m", iris_classifier, iris[0], force_new=True).version == 3


def test_unknown_model_says_how_to_list(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match=r"no model `nope`.*gyre registry list"):
        registry.resolve("nope")


def test_corrupted_and_missing_artifacts_are_refused_with_the_expected_hash(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    mv = registry.publish("m", iris_classifier, iris[0])
    path = registry.artifacts.path_of(mv.artifact_sha256)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(
        ArtifactCorrupted,
        match=f"model `m` version 1 is corrupted: expected sha256 {mv.artifact_sha256}",
    ):
        registry.artifact(mv)
    path.unlink()
    with pytest.raises(ArtifactCorrupted, match="model `m` version 1 is missing"):
        registry.artifact(mv)


def test_native_model_loads_only_after_its_hash_matches(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    mv = registry.publish("m", iris_classifier, iris[0])
    loaded = registry.load_native(mv)
    np.testing.assert_array_equal(loaded.predict(iris[0]), iris_classifier.predict(iris[0]))
    assert mv.native_sha256 is not None
    path = registry.artifacts.path_of(mv.native_sha256)
    path.write_bytes(b"malicious pickle")
    with pytest.raises(ArtifactCorrupted, match="native model `m` version 1 is corrupted"):
        registry.load_native(mv)


def _publish_many(
    config: StoreConfig, home: str, count: int, queue: "multiprocessing.Queue[int]"
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    reg = Registry(Stores(Path(home), config))
    for _ in range(count):
        queue.put(reg.publish("race", model, x, force_new=True).version)


def test_concurrent_publishes_never_share_a_version_number(stores: Stores) -> None:
    """On each backend: three processes publish at once, and no number is given twice."""
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    args = (stores.config, str(stores.home), 5, queue)
    workers = [ctx.Process(target=_publish_many, args=args) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    versions = sorted(queue.get(timeout=5) for _ in range(15))
    assert versions == list(range(1, 16))


def test_a_registry_of_another_schema_version_is_refused(home: Path) -> None:
    import sqlite3

    Registry(home).close()
    with sqlite3.connect(home / "registry.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RegistryError, match="has schema version 99, this gyre reads version 5"):
        Registry(home)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("split", {"weights": {"champion": float("inf"), "challenger": 1}}, "finite number"),
        ("split", {"weights": {"champion": float("nan"), "challenger": 1}}, "finite number"),
        ("split", {"weights": {"champion": -1}}, "finite number >= 0"),
        ("split", {"weights": {"champion": 0}}, "must not all be 0"),
        ("bandit", {"arms": ["champion"]}, "two or more"),
        ("shadow", {}, "shadow needs"),
        ("roulette", {}, "unknown traffic policy"),
        # Each finite, but their sum is not: the split's choice then failed on every request.
        ("split", {"weights": {"champion": 1e308, "challenger": 1e308}}, "add up to a finite"),
        ("split", {"weights": {"champion": 10**400}}, r"10000000000000000000… \(401 characters"),
        # str.isdigit() took these for version numbers, int() did not: every reload failed.
        ("split", {"weights": {"\u00b2": 100}}, "not an alias name or a version number"),
        ("split", {"weights": {"\u0661": 100}}, "not an alias name or a version number"),
        ("shadow", {"shadow": "\uff12"}, "not an alias name or a version number"),
        ("bandit", {"arms": ["champion", True]}, "not an alias name or a version number"),
        ("bandit", {"arms": ["champion", 2**64]}, "not an alias name or a version number"),
        ("bandit", {"arms": ["champion", "0"]}, "not an alias name or a version number"),
        ("split", [1, 2], "must be an object"),
    ],
)
def test_bad_traffic_policies_are_refused(
    registry: Registry, iris_classifier: Pipeline, iris: tuple, kind: str, params: dict,
    message: str,
) -> None:  # fmt: skip
    # An infinite weight once made every request to the model fail in the split's choice.
    registry.publish("m", iris_classifier, iris[0], alias="champion", force_alias=UNBLESSED)
    with pytest.raises(InvalidModel, match=message):
        registry.set_policy("m", kind, params)
    assert registry.policy("m") == ("champion", {}, None)  # nothing was stored


def test_policy_targets_are_stored_as_the_server_reads_them(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    for _ in range(7):
        registry.publish(
            "m", iris_classifier, iris[0], alias="champion", force_new=True, force_alias=UNBLESSED
        )
    clean = registry.set_policy(
        "m", "split", {"weights": {"champion": 1, "007": 2}}, reason=UNBLESSED, force=True
    )
    assert clean == {"weights": {"champion": 1.0, "7": 2.0}}
    assert registry.policy("m") == ("split", clean, None)


def test_a_policy_must_name_versions_that_exist_and_keeps_them(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry.publish("m", iris_classifier, iris[0], alias="champion", force_alias=UNBLESSED)
    registry.publish("m", iris_classifier, iris[0], force_new=True)
    # A split to a missing alias sent its share to the champion without a word.
    with pytest.raises(InvalidModel, match="has no alias `challneger`; set it first"):
        registry.set_policy("m", "split", {"weights": {"champion": 90, "challneger": 10}})
    with pytest.raises(InvalidModel, match="has no version 7; versions: 1, 2"):
        registry.set_policy("m", "bandit", {"arms": ["champion", "7"]})
    registry.set_alias("m", "challenger", 2, reason=UNBLESSED, force=True)
    registry.set_policy("m", "split", {"weights": {"champion": 90, "challenger": 10}})
    # What the policy sends traffic to stays until the policy changes.
    with pytest.raises(RegistryError, match="sends traffic to alias `challenger`; change"):
        registry.delete_alias("m", "challenger")
    registry.set_policy("m", "bandit", {"arms": ["champion", "2"]}, reason=UNBLESSED, force=True)
    with pytest.raises(RegistryError, match="sends traffic to version 2"):
        registry.delete_version("m", 2)
    registry.set_policy("m", "champion")
    registry.delete_alias("m", "challenger")


def test_a_broken_stored_policy_is_reported_not_raised(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry.publish("m", iris_classifier, iris[0], alias="champion", force_alias=UNBLESSED)
    registry.metadata.set_policy("m", "split", {"weights": {"\u00b2": 100}}, reason="old gyre")
    kind, params, broken = registry.policy("m")
    assert (kind, params) == ("split", {"weights": {"\u00b2": 100}})
    assert broken is not None and "not an alias name or a version number" in broken


@pytest.mark.parametrize("version", [2**63, -1, 0, True])
def test_alias_versions_sqlite_cannot_hold_are_refused(
    registry: Registry, iris_classifier: Pipeline, iris: tuple, version: int
) -> None:
    registry.publish("m", iris_classifier, iris[0])
    with pytest.raises(InvalidModel, match="is not a version number"):
        registry.set_alias("m", "champion", version, reason=UNBLESSED, force=True)
    with pytest.raises(ModelNotFound, match="does not exist"):
        registry.delete_version("m", 2**70)


@pytest.mark.parametrize("ref", ["m:\u00b2", "m:\u0661", "m:9223372036854775808", "m:+1", "m: 1"])
def test_references_take_ascii_version_numbers_within_64_bits(ref: str) -> None:
    with pytest.raises(InvalidModel, match="whole number in ASCII digits"):
        parse_ref(ref)


def test_names_may_not_end_in_a_newline() -> None:
    with pytest.raises(InvalidModel, match="is not allowed"):
        parse_ref("iris\n")


@pytest.mark.parametrize(
    "model",
    [
        LogisticRegression(),
        make_pipeline(StandardScaler(), LogisticRegression()),
        lightgbm.LGBMClassifier(),
    ],
)
def test_an_unfitted_model_is_refused_saying_so(
    registry: Registry, iris: tuple, model: BaseEstimator
) -> None:
    # The exporters' own errors said "no known ways to retrieve the number of classes".
    with pytest.raises(InvalidModel, match="is not fitted; call fit"):
        registry.publish("m", model, iris[0])


def test_a_snapshot_is_versions_aliases_and_policies_as_of_one_position(
    registry: Registry, iris_classifier: Pipeline, iris_regressor: BaseEstimator, iris: tuple
) -> None:
    registry.publish("m", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish("m", iris_regressor, iris[0], alias="challenger", force_alias=UNBLESSED)
    registry.set_policy("m", "split", {"weights": {"champion": 9, "challenger": 1}})
    read = registry.snapshot()
    assert read.position == registry.change_position() > 0
    assert [(v.model, v.version) for v in read.versions] == [("m", 1), ("m", 2)]
    assert read.aliases == {"m": {CHAMPION: 1, "challenger": 2}}
    assert read.policies["m"][0] == "split"
    registry.set_alias("m", CHAMPION, 2, reason=UNBLESSED, force=True)
    assert registry.change_position() > read.position
    assert registry.snapshot().aliases == {"m": {CHAMPION: 2, "challenger": 2}}


def test_changes_since_a_position_page_through_the_history(
    registry: Registry, iris: tuple[np.ndarray, np.ndarray], iris_classifier: Any
) -> None:
    first = registry.publish(
        "iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED
    )
    position = registry.change_position()
    registry.set_policy("iris", "shadow", {"shadow": 1}, reason="try it")
    registry.set_alias("iris", "old", first.version, reason="keep")
    assert [c["action"] for c in registry.changes("iris")] == [
        "publish", "alias", "policy", "alias"
    ]  # fmt: skip
    since = registry.changes(after=position)
    assert [(c["action"], c["why"]) for c in since] == [("policy", "try it"), ("alias", "keep")]
    assert registry.changes(after=position, limit=1) == since[:1]
    assert registry.changes("other") == [] and first.version == 1
