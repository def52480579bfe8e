"""Publishing gyre's trainers and torch modules: torch.mlp, torch.cnn and keras.mlp on the
digits exported to ONNX with a dynamic batch and parity-checked, the native trainer stored
and loaded back, and a real `gyre serve` answering the real tritonclient as the native
model does; scikit-learn and LightGBM trainers publish their `model_`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from gyre.errors import InvalidModel
from gyre.learn import TorchMLP, make_trainer
from gyre.registry import CHAMPION, Registry
from tests.conftest import ServerProcess, start_server
from tests.forced import UNBLESSED

NETS = {
    "torch-mlp": ("torch.mlp", {"hidden": [64], "epochs": 15}),
    "torch-cnn": ("torch.cnn", {"image_shape": [1, 8, 8], "channels": [8], "epochs": 5}),
    "keras-mlp": ("keras.mlp", {"hidden": [64], "epochs": 15}),
}


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


@pytest.fixture(scope="module")
def nets(digits: dict[str, Any]) -> dict[str, Any]:
    """Each network family fitted on the digits."""
    return {
        name: make_trainer(family, "classification", params, seed=0).fit(*digits["train"])
        for name, (family, params) in NETS.items()
    }


@pytest.mark.parametrize("name", list(NETS))
def test_a_network_publishes_as_onnx_with_a_dynamic_batch_and_parity(
    registry: Registry, nets: dict[str, Any], digits: dict[str, Any], name: str
) -> None:
    trainer = nets[name]
    x_train, _ = digits["train"]
    mv = registry.publish(name, trainer, x_train[:300])
    assert mv.flavor == name.split("-")[0]
    assert mv.parity["passed"] is True and mv.parity["rows"] == 300
    assert mv.parity["label_mismatches"] == 0 and mv.parity["max_abs_diff"] < 1e-5
    assert mv.lineage["torch_version"].startswith("2.13.0")
    assert ("keras_version" in mv.lineage) == (name == "keras-mlp")
    assert [(s.name, s.datatype, s.shape) for s in mv.signature.inputs] == [("X", "FP32", (-1, 64))]
    assert [(s.name, s.datatype, s.shape) for s in mv.signature.outputs] == [
        ("label", "INT64", (-1,)),
        ("probabilities", "FP32", (-1, 10)),
    ]
    session = ort.InferenceSession(registry.artifact(mv), providers=["CPUExecutionProvider"])
    x_test, _ = digits["test"]
    for rows in (1, 37):
        batch = x_test[:rows].astype(np.float32)
        labels, proba = session.run(None, {"X": batch})
        assert labels.shape == (rows,) and proba.shape == (rows, 10)
        np.testing.assert_array_equal(labels, trainer.predict(batch))
        np.testing.assert_allclose(proba, trainer.predict_proba(batch), atol=1e-5)


@pytest.mark.parametrize("name", list(NETS))
def test_the_native_trainer_is_stored_and_loads_back_predicting(
    registry: Registry, nets: dict[str, Any], digits: dict[str, Any], name: str
) -> None:
    x_train, _ = digits["train"]
    mv = registry.publish(name, nets[name], x_train[:100])
    native = registry.load_native(mv)
    assert type(native) is type(nets[name])
    x_test, _ = digits["test"]
    np.testing.assert_array_equal(native.predict_proba(x_test), nets[name].predict_proba(x_test))
    again = registry.publish(name, nets[name], x_train[:100])
    assert again.version == mv.version and again.reused  # the export is the same bytes


@pytest.mark.parametrize("family", ["torch.mlp", "keras.mlp"])
def test_a_regressor_answers_one_value_per_row(registry: Registry, family: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    x[::11, 3] = np.nan  # the training medians are in the graph
    y = 50.0 + 4.0 * x[:, 0] - np.nan_to_num(x[:, 3])
    trainer = make_trainer(family, "regression", {"epochs": 5}, seed=1).fit(x, y)
    mv = registry.publish("value", trainer, x)
    assert [(s.name, s.datatype, s.shape) for s in mv.signature.outputs] == [
        ("variable", "FP32", (-1, 1))
    ]
    assert mv.parity["passed"] is True
    session = ort.InferenceSession(registry.artifact(mv), providers=["CPUExecutionProvider"])
    (values,) = session.run(None, {"X": x[:9].astype(np.float32)})
    np.testing.assert_allclose(values[:, 0], trainer.predict(x[:9]), rtol=1e-5)


def test_text_labels_are_served_as_strings(registry: Registry) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    y = np.array(["low", "high"])[(x[:, 0] > 0).astype(int)]
    trainer = TorchMLP(epochs=5).fit(x, y)
    mv = registry.publish("words", trainer, x)
    assert [(s.name, s.datatype) for s in mv.signature.outputs] == [
        ("label", "BYTES"),
        ("probabilities", "FP32"),
    ]
    session = ort.InferenceSession(registry.artifact(mv), providers=["CPUExecutionProvider"])
    labels, _ = session.run(None, {"X": x[:20].astype(np.float32)})
    assert list(labels) == list(trainer.predict(x[:20]))


def test_a_plain_torch_module_publishes_its_output_as_variable(registry: Registry) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    rows = np.random.default_rng(3).normal(size=(50, 4))
    mv = registry.publish("plain", module, rows)
    assert mv.flavor == "torch"
    assert [(s.name, s.shape) for s in mv.signature.outputs] == [("variable", (-1, 2))]
    assert mv.parity["passed"] is True
    loaded = registry.load_native(mv)
    with torch.no_grad():
        expected = module(torch.from_numpy(rows[:5].astype(np.float32)))
        np.testing.assert_array_equal(
            loaded(torch.from_numpy(rows[:5].astype(np.float32))), expected
        )


def test_scikit_learn_and_lightgbm_trainers_publish_their_fitted_model(
    registry: Registry, digits: dict[str, Any]
) -> None:
    x_train, y_train = digits["train"]
    x_test, y_test = digits["test"]
    forest = make_trainer("sklearn.RandomForestClassifier", "classification",
                          {"n_estimators": 10}, seed=0).fit(x_train, y_train)  # fmt: skip
    mv = registry.publish("forest", forest, x_train[:200])
    assert mv.flavor == "sklearn" and mv.parity["passed"] is True
    assert isinstance(registry.load_native(mv), Pipeline)
    # Early stopping on validation rows: the ONNX graph holds the best round's trees.
    boosted = make_trainer("lightgbm", "classification", {"n_estimators": 300,
                           "learning_rate": 0.3, "early_stopping_rounds": 3}, seed=0)  # fmt: skip
    boosted.fit(x_train, y_train, validation=(x_test, y_test))
    assert boosted.model_.best_iteration_ < len(boosted.history_) < 300
    mv = registry.publish("boosted", boosted, x_train[:200])
    assert mv.flavor == "lightgbm" and mv.parity["passed"] is True
    assert type(registry.load_native(mv)).__name__ == "LGBMClassifier"


def test_an_unfitted_trainer_is_refused(registry: Registry) -> None:
    rows = np.zeros((3, 4))
    with pytest.raises(InvalidModel, match="TorchMLP is not fitted; call fit"):
        registry.publish("raw", TorchMLP(), rows)
    sklearn_trainer = make_trainer("sklearn.Ridge", "regression", {}, seed=0)
    with pytest.raises(InvalidModel, match="SklearnTrainer is not fitted; call fit"):
        registry.publish("raw", sklearn_trainer, rows)


def test_the_registry_and_the_trainers_do_not_import_torch_until_used() -> None:
    code = "import sys, gyre.learn, gyre.registry, gyre.serve\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, nets: dict[str, Any], digits: dict[str, Any]
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("served") / "home"
    registry = Registry(home)
    for name, trainer in nets.items():
        registry.publish(
            name, trainer, digits["train"][0][:200], alias=CHAMPION, force_alias=UNBLESSED
        )
    registry.close()
    server = start_server(home)
    yield server
    assert server.stop() == 0


@pytest.mark.integration
@pytest.mark.parametrize("name", list(NETS))
def test_gyre_serve_answers_the_tritonclient_as_the_native_model_does(
    served: ServerProcess, nets: dict[str, Any], digits: dict[str, Any], name: str
) -> None:
    import tritonclient.http as triton

    x_test, _ = digits["test"]
    rows = x_test[:25].astype(np.float32)
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    assert client.is_model_ready(name)
    metadata = client.get_model_metadata(name)
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 64]}]
    tensor = triton.InferInput("X", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    outputs = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probabilities")]
    result = client.infer(name, [tensor], outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("label"), nets[name].predict(rows))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), nets[name].predict_proba(rows), atol=1e-5
    )
    client.close()
