"""Declaring feature views: aggregations, transforms, request-time features, TOML, hash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gyre.collect import EventType, parse_timestamp
from gyre.config import load_config
from gyre.errors import ConfigError
from gyre.features import Aggregation, FeatureView, feature_views
from gyre.features._expressions import compile_expression

ORDERS = EventType(
    "orders",
    {"id": "string", "shop": "int", "amount": "float", "kind": "string?", "at": "timestamp"},
    ("shop",), "at", "id",
)  # fmt: skip
COUNT = Aggregation("count", None, "1h")


def test_aggregations_parse_from_text() -> None:
    assert Aggregation.parse("mean(amount) over 7d") == Aggregation("mean", "amount", "7d")
    assert Aggregation.parse(" count( ) over 10m") == Aggregation("count", None, "10m")
    assert str(Aggregation("sum", "amount", "1h")) == "sum(amount) over 1h"
    with pytest.raises(ConfigError, match="must read FUNCTION"):
        Aggregation.parse("mean amount 7d")


@pytest.mark.parametrize(
    ("aggregations", "transforms", "requested", "message"),
    [
        ((Aggregation("median", "amount", "1h"),), {}, {}, "unknown function"),
        ((Aggregation("sum", "kind", "1h"),), {}, {}, "sum needs a number"),
        ((Aggregation("max", "nope", "1h"),), {}, {}, "`nope` is not a field"),
        ((Aggregation("count", None, "1w"),), {}, {}, "window '1w' must be"),
        ((Aggregation("count", None, "\u0663h"),), {}, {}, "window '\u0663h' must be"),
        ((Aggregation("count", None, "1h\n"),), {}, {}, "window '1h\\n' must be"),
        ((Aggregation("count", None, "9" * 30 + "d"),), {}, {}, "window '9999"),
        # Nine digits of days: 2.7 million years, past what a time minus it can hold.
        ((Aggregation("count", None, "999999999d"),), {}, {}, "longer than 10,000 years"),
        ((), {}, {}, "declares no aggregation"),
        ((COUNT,), {"x": "kind * 2"}, {}, "`kind` is not a numeric field"),
        ((COUNT,), {"x": "amount ** 2"}, {}, "only numbers, numeric fields"),
        ((COUNT,), {"x": "exp(amount)"}, {}, "unknown function `exp`"),
        ((COUNT,), {"x": "amount +"}, {}, "is not an expression"),
        ((COUNT,), {"x": "'a'"}, {}, "only numbers may be constants"),
        ((COUNT,), {"amount": "amount"}, {}, "shadows a field"),
        ((COUNT,), {"x": "y", "y": "amount"}, {}, "`y` is not a numeric field"),
        ((COUNT,), {}, {"basket": "decimal"}, "has kind 'decimal'"),
        ((COUNT,), {}, {"shop": "int"}, "clashes with the entity key"),
    ],
)
def test_bad_definitions_are_refused_with_the_reason(
    aggregations: tuple, transforms: dict, requested: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        FeatureView("v", ORDERS, aggregations, transforms, requested)
    assert message in str(caught.value)


def test_expressions_propagate_nulls_and_refuse_undefined_arithmetic() -> None:
    numeric = frozenset({"a", "b"})
    ratio = compile_expression("(a + 1) / b", numeric, "test")
    assert ratio.evaluate({"a": 3, "b": 2}) == 2.0
    assert ratio.evaluate({"a": 3, "b": 0}) is None
    assert ratio.evaluate({"a": None, "b": 2}) is None
    assert compile_expression("log1p(a)", numeric, "t").evaluate({"a": -1}) is None
    assert compile_expression("sqrt(-a)", numeric, "t").evaluate({"a": 4}) is None
    assert compile_expression("coalesce(a, b, 7)", numeric, "t").evaluate({"a": None}) == 7.0
    assert compile_expression("abs(-a)", numeric, "t").evaluate({"a": 2}) == 2.0
    assert ratio.names == {"a", "b"}


def test_the_hash_changes_with_any_part_of_the_definition() -> None:
    base = FeatureView("v", ORDERS, (COUNT,))
    variants = [
        FeatureView("v", ORDERS, (Aggregation("count", None, "2h"),)),
        FeatureView("v", ORDERS, (COUNT,), {"x": "amount * 2"}),
        FeatureView("v", ORDERS, (COUNT,), {}, {"basket": "float"}),
        FeatureView("w", ORDERS, (COUNT,)),
    ]
    assert base.definition_hash == FeatureView("v", ORDERS, (COUNT,)).definition_hash
    assert len({base.definition_hash, *(v.definition_hash for v in variants)}) == 5


def test_request_features_are_checked_and_derived_from_the_request_time() -> None:
    view = FeatureView("v", ORDERS, (COUNT,), {}, {"basket": "float", "n": "int",
                       "hour": "hour_of_day", "weekday": "day_of_week"})  # fmt: skip
    at = parse_timestamp("2026-11-26T13:30:00Z")  # a Thursday
    values = view.request_values({"basket": 3, "n": 2}, at)
    assert values == {"basket": 3.0, "n": 2, "hour": 13, "weekday": 3}
    with pytest.raises(ValueError, match="`basket` \\(float\\) is missing"):
        view.request_values({"n": 2}, at)
    with pytest.raises(ValueError, match="`n` must be a finite int"):
        view.request_values({"basket": 1.0, "n": 2.5}, at)


def test_the_model_matrix_has_nan_for_missing_values_and_refuses_strings() -> None:
    view = FeatureView("v", ORDERS, (COUNT, Aggregation("mean", "amount", "1h")))
    table = view.matrix([{"count_events_1h": 2, "mean_amount_1h": None}])
    assert table.dtype == np.float32 and table[0, 0] == 2 and np.isnan(table[0, 1])
    texts = FeatureView("t", ORDERS, (Aggregation("last", "kind", "1h"),))
    with pytest.raises(ConfigError, match="holds strings"):
        texts.matrix([{"last_kind_1h": "a"}])


def test_views_are_declared_in_toml(tmp_path: Path) -> None:
    config_file = tmp_path / "gyre.toml"
    config_file.write_text(
        """
[collect.events.orders]
fields = {id = "string", shop = "int", amount = "float", at = "timestamp"}
entity = ["shop"]
time = "at"
id = "id"

[features.views.shop_orders]
source = "orders"
transforms = {amount_usd = "amount * 1.08"}
aggregations = ["count() over 1h", "mean(amount_usd) over 7d"]
request = {basket = "float"}
"""
    )
    config = load_config(tmp_path, config_file)
    types = {"orders": EventType.from_config("orders", config.collect.events["orders"])}
    views = feature_views(config.features.views, types)
    view = views["shop_orders"]
    assert view.features == ["count_events_1h", "mean_amount_usd_7d", "basket"]
    assert view.derive({"amount": 10.0})["amount_usd"] == pytest.approx(10.8)
    bad = tmp_path / "bad.toml"
    bad.write_text('[features.views.x]\nsource = "nope"\naggregations = ["count() over 1h"]\n')
    with pytest.raises(ConfigError, match="source `nope` is not a declared event type"):
        feature_views(load_config(tmp_path, bad).features.views, types)


def test_the_cli_lists_and_shows_views_with_their_hash(tmp_path: Path) -> None:
    import subprocess
    import sys

    config_file = tmp_path / "gyre.toml"
    config_file.write_text(
        '[collect.events.orders]\nfields = {shop = "int", amount = "float", at = "timestamp"}\n'
        'entity = ["shop"]\ntime = "at"\n'
        '[features.views.spend]\nsource = "orders"\ntransforms = {cents = "amount * 100"}\n'
        'aggregations = ["sum(cents) over 1d"]\nrequest = {hour = "hour_of_day"}\n'
    )
    cli = [sys.executable, "-m", "gyre", "--home", str(tmp_path), "--config", str(config_file)]
    listed = subprocess.run([*cli, "features", "list"], capture_output=True, text=True)
    shown = subprocess.run([*cli, "features", "show", "spend", "--sql"], capture_output=True,
                           text=True)  # fmt: skip
    assert listed.returncode == 0 and "spend" in listed.stdout
    assert "transform cents = amount * 100" in shown.stdout
    assert "sum_cents_1d: sum(cents) over 1d (float)" in shown.stdout
    assert "hour: from the request (hour_of_day)" in shown.stdout
    assert "FILTER (WHERE" in shown.stdout
    unknown = subprocess.run([*cli, "features", "show", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 1 and "unknown feature view `nope`" in unknown.stderr
