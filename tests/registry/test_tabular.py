"""Publishing mixed-type tables: DataFrame and CSV samples, one ONNX input per column."""

from pathlib import Path

import joblib
import lightgbm
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from gyre.collect import event_types
from gyre.config import load_config
from gyre.errors import InvalidModel
from gyre.features import feature_views
from gyre.registry import Registry, load_sample
from gyre.types import TensorSpec
from tests.serve.models import mixed_inputs

MIXED_INPUTS = (
    TensorSpec("city", "BYTES", (-1, 1)),
    TensorSpec("age", "INT64", (-1, 1)),
    TensorSpec("income", "FP32", (-1, 1)),
)


def test_a_mixed_dataframe_exports_one_typed_input_per_column_with_parity(
    registry: Registry, mixed_classifier: Pipeline, mixed_table: tuple
) -> None:
    frame, _ = mixed_table
    mv = registry.publish("loans", mixed_classifier, frame)
    assert mv.signature.inputs == MIXED_INPUTS
    assert mv.signature.feature_names is None  # the inputs are the columns' names
    assert [s.name for s in mv.signature.outputs] == ["label", "probabilities"]
    assert mv.parity["passed"] is True
    assert mv.parity["rows"] == len(frame)
    assert mv.parity["max_abs_diff"] < 1e-4
    assert len(mv.lineage["sample_sha256"]) == 64
    assert (
        registry.load_native(mv).predict(frame).tolist() == mixed_classifier.predict(frame).tolist()
    )


def test_the_exported_graph_ignores_unseen_categories_as_the_pipeline_does(
    registry: Registry, mixed_classifier: Pipeline, mixed_table: tuple
) -> None:
    mv = registry.publish("loans", mixed_classifier, mixed_table[0])
    session = ort.InferenceSession(registry.artifact(mv), providers=["CPUExecutionProvider"])
    rows = pd.DataFrame({"city": ["Paris", "Oslo"], "age": [40, 22], "income": [61_000.5, 1.0]})
    feeds = {
        "city": rows["city"].to_numpy(object).reshape(-1, 1),
        "age": rows["age"].to_numpy(np.int64).reshape(-1, 1),
        "income": rows["income"].to_numpy(np.float32).reshape(-1, 1),
    }
    labels, proba = session.run(None, feeds)
    assert labels.tolist() == mixed_classifier.predict(rows).tolist()
    np.testing.assert_allclose(proba, mixed_classifier.predict_proba(rows), atol=1e-5)


def test_the_sample_columns_are_taken_in_the_models_order(
    registry: Registry, mixed_classifier: Pipeline, mixed_table: tuple
) -> None:
    frame, _ = mixed_table
    shuffled = frame[["income", "city", "age"]].assign(extra="x")
    assert registry.publish("loans", mixed_classifier, shuffled).signature.inputs == MIXED_INPUTS


def test_an_all_number_dataframe_keeps_the_single_fp32_input(
    registry: Registry, mixed_table: tuple
) -> None:
    frame, labels = mixed_table
    numbers = frame[["age", "income"]]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(numbers, labels)
    mv = registry.publish("numbers", model, numbers)  # no feature-name warning either
    assert mv.signature.inputs == (TensorSpec("X", "FP32", (-1, 2)),)
    assert mv.signature.feature_names == ("age", "income")
    assert mv.parity["passed"] is True
    # A model fitted on the NumPy rows predicts on them (a DataFrame would warn).
    plain = make_pipeline(StandardScaler(), LogisticRegression()).fit(numbers.to_numpy(), labels)
    assert registry.publish("plain", plain, numbers).signature.feature_names == ("age", "income")


def test_inputs_keep_the_column_names_skl2onnx_would_rewrite(
    registry: Registry, mixed_table: tuple
) -> None:
    frame, labels = mixed_table
    odd = frame.rename(columns={"city": "home city", "income": "income ($)"})
    model = make_pipeline(
        ColumnTransformer(
            [
                ("city", OneHotEncoder(handle_unknown="ignore"), ["home city"]),
                ("numbers", StandardScaler(), ["age", "income ($)"]),
            ]
        ),
        LogisticRegression(max_iter=500),
    ).fit(odd, labels)
    mv = registry.publish("odd", model, odd)
    assert [s.name for s in mv.signature.inputs] == ["home city", "age", "income ($)"]
    assert mv.parity["passed"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="age"), r"lacks column\(s\) age the model was fitted on"),
        (lambda f: f.assign(city=f["city"].where(f.index != 3)), "`city` has missing values"),
        (lambda f: f.assign(age=f["age"] > 40), "`age` holds booleans; cast it"),
        (lambda f: f.assign(city=f["city"].astype(object).where(f.index != 5, 7)), "mixes strings"),
        (lambda f: f.iloc[:0], "has no rows"),
    ],
)
def test_bad_dataframe_samples_are_refused_saying_what_to_fix(
    registry: Registry, mixed_classifier: Pipeline, mixed_table: tuple, change, message: str
) -> None:
    with pytest.raises(InvalidModel, match=message):
        registry.publish("loans", mixed_classifier, change(mixed_table[0]))


def test_string_columns_need_a_model_fitted_on_the_dataframe(
    registry: Registry, mixed_table: tuple
) -> None:
    frame, labels = mixed_table
    model = LogisticRegression().fit(frame[["age", "income"]].to_numpy(), labels)
    with pytest.raises(InvalidModel, match="fit it on the DataFrame itself"):
        registry.publish("m", model, frame)


def test_a_feature_view_binding_is_refused_with_a_mixed_sample(
    registry: Registry, mixed_classifier: Pipeline, mixed_table: tuple, tmp_path: Path
) -> None:
    config_file = tmp_path / "gyre.toml"
    config_file.write_text(
        '[collect.events.loans]\nfields = {id = "string", who = "int", income = "float", '
        'at = "timestamp"}\nentity = ["who"]\ntime = "at"\nid = "id"\n'
        '[features.views.applicants]\nsource = "loans"\naggregations = ["count() over 1h"]\n'
    )
    config = load_config(tmp_path / "home", config_file)
    view = feature_views(config.features.views, event_types(config.collect.events))["applicants"]
    with pytest.raises(InvalidModel, match=r"feature view `applicants`.*string columns \(city\)"):
        registry.publish("m", mixed_classifier, mixed_table[0], features=view)


def test_a_mixed_csv_sample_with_a_header_publishes_per_column_inputs(
    registry: Registry, mixed_classifier: Pipeline, mixed_table: tuple, tmp_path: Path
) -> None:
    frame, _ = mixed_table
    sample = tmp_path / "rows.csv"
    frame.to_csv(sample, index=False)
    rows, names = load_sample(sample)
    assert names == ("city", "age", "income")
    assert list(rows.dtypes.astype(str)) == ["str", "int64", "float64"]
    model = tmp_path / "model.joblib"
    joblib.dump(mixed_classifier, model)
    mv = registry.publish_file("loans", model, sample=sample)
    assert mv.signature.inputs == MIXED_INPUTS
    assert mv.parity["passed"] is True

    numeric = tmp_path / "numbers.csv"
    frame[["age", "income"]].to_csv(numeric, index=False)
    rows, names = load_sample(numeric)  # a numeric CSV is read as before: rows and names
    assert isinstance(rows, np.ndarray) and rows.shape == (len(frame), 2)
    assert names == ("age", "income")

    headless = tmp_path / "headless.csv"  # its first row is taken for the header
    frame.to_csv(headless, index=False, header=False)
    with pytest.raises(InvalidModel, match=r"lacks column\(s\) city, age, income the model"):
        registry.publish_file("loans", model, sample=headless)
    spaced = tmp_path / "spaced.csv"  # quoted cells, blanks around the header's names
    spaced.write_text('city , age,income\n"Oslo, Norway",31,52000.5\nBergen,40,1.0\n')
    rows, _ = load_sample(spaced)
    assert list(rows.columns) == ["city", "age", "income"]
    assert rows["city"].tolist() == ["Oslo, Norway", "Bergen"]
    numbers_first = tmp_path / "numbers-first.csv"
    numbers_first.write_text("1,2\n3,Oslo\n")
    with pytest.raises(InvalidModel, match="needs a header row naming its columns"):
        load_sample(numbers_first)


def test_an_onnx_graph_with_typed_inputs_publishes_and_tests_on_a_dataframe(
    registry: Registry, mixed_table: tuple, tmp_path: Path
) -> None:
    mv = registry.publish_onnx("mixed", mixed_inputs())  # test inference on zeros
    assert mv.signature.inputs == MIXED_INPUTS
    assert [(s.name, s.datatype) for s in mv.signature.outputs] == [
        ("total", "FP32"),
        ("city_out", "BYTES"),
    ]
    frame, _ = mixed_table
    # The same graph again, tested on the rows this time: a new version only when asked.
    assert registry.publish_onnx("mixed", mixed_inputs(), sample=frame).reused
    assert registry.publish_onnx("mixed", mixed_inputs(), sample=frame, force_new=True).version == 2
    with pytest.raises(InvalidModel, match=r"lacks column\(s\) income; the graph's inputs"):
        registry.publish_onnx("mixed", mixed_inputs(), sample=frame.drop(columns="income"))
    graph, sample = tmp_path / "mixed.onnx", tmp_path / "rows.csv"
    graph.write_bytes(mixed_inputs())
    frame.to_csv(sample, index=False)
    assert registry.publish_file("mixed", graph, sample=sample, force_new=True).version == 3


def test_a_category_column_is_a_string_input(registry: Registry, mixed_table: tuple) -> None:
    frame, labels = mixed_table
    categories = frame.assign(city=frame["city"].astype("category"))
    model = make_pipeline(
        ColumnTransformer([("city", OneHotEncoder(), ["city"])], remainder="passthrough"),
        LogisticRegression(max_iter=500),
    ).fit(categories, labels)
    mv = registry.publish("loans", model, categories)
    assert mv.signature.inputs == MIXED_INPUTS
    assert mv.parity["passed"] is True


def test_a_lightgbm_model_with_string_columns_is_refused_with_the_pipeline_to_use(
    registry: Registry, mixed_table: tuple
) -> None:
    frame, labels = mixed_table
    categories = frame.assign(city=frame["city"].astype("category"))
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(categories, labels)
    with pytest.raises(InvalidModel, match=r"a lightgbm model takes numbers.*OneHotEncoder"):
        registry.publish("m", model, categories)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # An empty integer cell: the pipeline's own error, a traceback, before.
        ("city,age,income\nOslo,30,60000\nRome,,1\n", "could not predict on the sample rows"),
        # Bytes that are not UTF-8: a UnicodeDecodeError traceback before.
        (b"city,age,income\n\xff\xfe,30,1\n", "is not UTF-8 text"),
    ],
)
def test_a_sample_the_model_cannot_read_is_one_clear_error(
    registry: Registry,
    mixed_classifier: Pipeline,
    tmp_path: Path,
    content: str | bytes,
    message: str,
) -> None:
    model, sample = tmp_path / "loans.joblib", tmp_path / "rows.csv"
    joblib.dump(mixed_classifier, model)
    if isinstance(content, str):
        sample.write_text(content)
    else:
        sample.write_bytes(content)
    with pytest.raises(InvalidModel, match=message):
        registry.publish_file("loans", model, sample=sample)


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "xgboost"])
def test_trees_behind_a_column_transformer_publish_with_parity(
    registry: Registry, mixed_table: tuple, estimator: str
) -> None:
    # The per-column export did not register gyre's converters: XGBoost had none, and
    # HistGradientBoosting took skl2onnx's, whose rounded thresholds failed parity.
    from sklearn.ensemble import HistGradientBoostingClassifier
    from xgboost import XGBClassifier

    frame, labels = mixed_table
    trees = (
        HistGradientBoostingClassifier(max_iter=30, random_state=0)
        if estimator == "hist_gradient_boosting"
        else XGBClassifier(n_estimators=30, max_depth=3)
    )
    columns = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough"
    )
    pipeline = make_pipeline(columns, trees).fit(frame, labels)
    mv = registry.publish("trees", pipeline, frame)
    assert [s.name for s in mv.signature.inputs] == ["city", "age", "income"]
    assert mv.parity["passed"] and mv.parity["max_abs_diff"] < 1e-5
