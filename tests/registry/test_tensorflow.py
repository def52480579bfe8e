"""TensorFlow SavedModels and Keras files, converted with tf2onnx and parity-checked against
the serving signature's own output."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from gyre.errors import ExportError, InvalidModel
from gyre.registry import Registry


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("tensorflow")
    keras.utils.set_random_seed(3)
    features = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(features)
    probs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = keras.Model(features, probs)
    model.export(str(folder / "keras_export"), verbose=False)
    with warnings.catch_warnings():
        # Keras 3.15 saves TF variables with np.array(v), which numpy 2.4 flags: theirs.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        model.save(folder / "model.keras")

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(tf.random.stateless_normal([3, 2], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            logits = tf.matmul(x, self.weights)
            return {"score": tf.sigmoid(logits), "best": tf.argmax(logits, axis=1)}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="a"),
                tf.TensorSpec([None, 3], tf.float32, name="b"),
            ]
        )
        def pair(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"sum": a + b}

    scorer = Scorer()
    tf.saved_model.save(
        scorer, str(folder / "module"), signatures={"serving_default": scorer.serve}
    )
    tf.saved_model.save(scorer, str(folder / "pair"), signatures={"serving_default": scorer.pair})
    tf.saved_model.save(scorer, str(folder / "unsigned"))
    rng = np.random.default_rng(0)
    np.save(folder / "rows4.npy", rng.normal(size=(200, 4)))
    np.save(folder / "rows3.npy", rng.normal(size=(200, 3)))
    return {
        "keras_export": folder / "keras_export",
        "keras_file": folder / "model.keras",
        "module": folder / "module",
        "pair": folder / "pair",
        "unsigned": folder / "unsigned",
        "rows4": folder / "rows4.npy",
        "rows3": folder / "rows3.npy",
    }


def test_a_keras_savedmodel_publishes_with_its_signature_names_and_parity(
    registry: Registry, models: dict[str, Path]
) -> None:
    mv = registry.publish_file("net", models["keras_export"], sample=models["rows4"])
    assert mv.flavor == "tensorflow"
    assert [(s.name, s.datatype, s.shape) for s in mv.signature.inputs] == [
        ("features", "FP32", (-1, 4))
    ]
    assert [(s.name, s.shape) for s in mv.signature.outputs] == [("output_0", (-1, 3))]
    assert mv.parity["passed"] is True
    assert mv.parity["rows"] == 200
    assert mv.parity["max_abs_diff"] < 1e-6
    assert mv.lineage["source"] == "saved_model"
    assert mv.lineage["tensorflow_signature"] == "serving_default"
    assert len(mv.lineage["saved_model_sha256"]) == 64
    assert mv.native_sha256 is None


def test_a_tf_module_savedmodel_keeps_every_named_output(
    registry: Registry, models: dict[str, Path]
) -> None:
    import onnxruntime as ort
    import tensorflow as tf

    mv = registry.publish_file("scorer", models["module"], sample=models["rows3"])
    assert [s.name for s in mv.signature.inputs] == ["x"]
    assert {s.name: s.datatype for s in mv.signature.outputs} == {"best": "INT64", "score": "FP32"}
    # The stored graph answers as TensorFlow does, output by output.
    rows = np.load(models["rows3"]).astype(np.float32)
    session = ort.InferenceSession(registry.artifact(mv), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    served = dict(zip(names, session.run(None, {"x": rows}), strict=True))
    native = tf.saved_model.load(str(models["module"])).signatures["serving_default"](
        x=tf.constant(rows)
    )
    np.testing.assert_array_equal(served["best"], native["best"].numpy())
    np.testing.assert_allclose(served["score"], native["score"].numpy(), atol=1e-6)


def test_a_keras_file_publishes_through_its_own_savedmodel_export(
    registry: Registry, models: dict[str, Path]
) -> None:
    mv = registry.publish_file("net", models["keras_file"], sample=models["rows4"])
    assert mv.flavor == "tensorflow"
    assert mv.lineage["source"] == "keras"
    assert [s.name for s in mv.signature.inputs] == ["features"]
    assert mv.parity["max_abs_diff"] < 1e-6


def test_republishing_a_savedmodel_or_keras_file_in_one_process_reuses_its_version(
    registry: Registry, models: dict[str, Path]
) -> None:
    # tf2onnx numbered its nodes from a counter of the process: each conversion made
    # other bytes, so every publish from a notebook made a new version.
    for source, sample in (("module", models["rows3"]), ("keras_file", models["rows4"])):
        first = registry.publish_file(source, models[source], sample=sample)
        again = registry.publish_file(source, models[source], sample=sample)
        assert (again.version, again.reused) == (first.version, True), source


def test_a_sample_with_text_columns_is_refused_for_a_tensorflow_model(
    registry: Registry, models: dict[str, Path], tmp_path: Path
) -> None:
    sample = tmp_path / "mixed.csv"
    sample.write_text("city,a,b\nOslo,1.0,2.0\nBergen,3.0,4.0\n")
    with pytest.raises(InvalidModel, match="takes one tensor of numbers, but the sample has text"):
        registry.publish_file("scorer", models["module"], sample=sample)


def test_tensorflow_inputs_that_cannot_be_checked_are_refused(
    registry: Registry, models: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(InvalidModel, match=r"needs sample input rows.*--sample"):
        registry.publish_file("net", models["keras_export"])
    with pytest.raises(InvalidModel, match=r"takes `features` of shape \[N, 4\]"):
        registry.publish_file("net", models["keras_export"], sample=models["rows3"])
    with pytest.raises(InvalidModel, match=r"folder without saved_model.pb.*model.export"):
        registry.publish_file("net", tmp_path, sample=models["rows4"])
    with pytest.raises(ExportError, match=r"takes 2 inputs \(a, b\); gyre publishes"):
        registry.publish_file("pair", models["pair"], sample=models["rows3"])
    with pytest.raises(InvalidModel, match=r"has no `serving_default` signature.*signatures="):
        registry.publish_file("scorer", models["unsigned"], sample=models["rows3"])
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InvalidModel, match=r"could not load .*broken.keras with Keras"):
        registry.publish_file("net", broken, sample=models["rows4"])
    assert registry.versions() == []


def test_a_pickle_of_a_missing_optional_library_names_its_extra(
    registry: Registry, tmp_path: Path, models: dict[str, Path]
) -> None:
    # A pickle that imports a module of the xgboost package this install lacks.
    path = tmp_path / "model.pkl"
    path.write_bytes(b"cxgboost.gyre_absent_module\nModel\n.")
    with pytest.raises(InvalidModel) as caught:
        registry.publish_file("m", path, sample=models["rows4"])
    assert str(caught.value) == (
        f"could not load {path}: it needs xgboost.gyre_absent_module, which is not installed; "
        "pip install 'gyre[xgboost]'"
    )


def test_a_published_savedmodel_answers_tf_serving_requests_as_tensorflow_does(
    home: Path, models: dict[str, Path]
) -> None:
    import tensorflow as tf

    from gyre.config import load_config
    from tests.serve.apptest import AppClient

    registry = Registry(home)
    registry.publish_file("scorer", models["module"], sample=models["rows3"])
    registry.close()
    rows = np.load(models["rows3"])[:3].astype(np.float32)
    native = tf.saved_model.load(str(models["module"])).signatures["serving_default"](
        x=tf.constant(rows)
    )
    client = AppClient(load_config(home=home))
    try:
        answer = client.post("/v1/models/scorer:predict", json={"instances": rows.tolist()})
    finally:
        client.close()
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["best"] for p in predictions] == native["best"].numpy().tolist()
    np.testing.assert_allclose([p["score"] for p in predictions], native["score"], atol=1e-6)
