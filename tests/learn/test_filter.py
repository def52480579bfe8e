"""The runs filter and order language: what parses to what, every error saying where and
what was expected, and values that never enter the SQL text. (What a filter selects is
checked against a reference on both backends in test_run_store_conformance.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gyre.errors import InvalidRunFilter
from gyre.learn import RunStore
from gyre.learn._filter import (
    Comparison,
    Field,
    Order,
    parse_filter,
    parse_order,
    search_sql,
)
from gyre.stores import Stores


def test_the_documented_filter_parses() -> None:
    text = (
        "metrics.auc > 0.8 and params.max_depth = 3 and tags.team = 'eta' and status = 'finished'"
    )
    assert parse_filter(text) == (
        Comparison(Field("metrics", "auc"), ">", 0.8),
        Comparison(Field("params", "max_depth"), "=", 3.0),
        Comparison(Field("tags", "team"), "=", "eta"),
        Comparison(Field("attributes", "status"), "=", "finished"),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "attributes.status != 'failed'",
            Comparison(Field("attributes", "status"), "!=", "failed"),
        ),
        ('run.name = "it\'s"', Comparison(Field("attributes", "name"), "=", "it's")),
        ("name = 'it''s'", Comparison(Field("attributes", "name"), "=", "it's")),
        ("metric.`val-loss` <= -1.5e-3", Comparison(Field("metrics", "val-loss"), "<=", -1.5e-3)),
        ("param.`model.depth` >= .5", Comparison(Field("params", "model.depth"), ">=", 0.5)),
        ("tag.`owner/team name` < 'm'", Comparison(Field("tags", "owner/team name"), "<", "m")),
        ("started_at>1700000000", Comparison(Field("attributes", "started_at"), ">", 1.7e9)),
        ("EXPERIMENT = 'eta'", Comparison(Field("attributes", "experiment"), "=", "eta")),
        ("params.solver = 'lbfgs'", Comparison(Field("params", "solver"), "=", "lbfgs")),
    ],
)
def test_each_form_parses(text: str, expected: Comparison) -> None:
    assert parse_filter(text) == (expected,)


def test_and_is_any_case_and_blank_is_everything() -> None:
    assert len(parse_filter("metrics.a > 1 AND metrics.b < 2 And name = 'x'")) == 3
    assert parse_filter(None) == parse_filter("  ") == ()


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("metrics.auc > 0.8 or params.x = 1", 19, "`and` only; `or` is not supported"),
        ("metrics.auc ~ 0.8", 13, "an operator (=, !=, <, <=, >, >=)"),
        ("metrics.auc == 0.8", 14, "equality is one `=`"),
        ("metrics.auc > ", 15, "a value: a number or text in quotes"),
        ("status = finished", 10, "text in quotes ('finished')"),
        ("status = 'done'", 10, "a run status (running, finished, failed, interrupted)"),
        ("metrics.auc > 'high'", 15, "a number: metrics.auc is a number"),
        ("tags.team = 3", 13, "text in quotes: tags.team is text (tags.team = '3')"),
        ("metrics.val-loss > 1", 12, "backticks: metrics.`val-loss`"),
        ("metrics.`val-loss > 1", 22, "a closing backtick"),
        ("name = 'x", 10, "a closing quote (')"),
        ("colour = 'red'", 1, "a key such as metrics.auc"),
        ("attributes.colour = 'red'", 12, "a run attribute"),
        ("metrics.auc > 0.8 metrics.b > 1", 19, "`and` or the end of the filter"),
        ("metrics.auc > 1e999", 15, "a number a double can hold"),
        ("metrics.auc > 3abc", 15, "a value"),
        ("metrics.`` > 1", 9, "a key of 1-250 letters"),
    ],
)
def test_a_bad_filter_says_where_and_what_was_expected(
    text: str, position: int, expected: str
) -> None:
    with pytest.raises(InvalidRunFilter) as raised:
        parse_filter(text)
    message = str(raised.value)
    assert f"at position {position}," in message and expected in message, message
    assert "\n" not in message


def test_orders_parse_and_bad_ones_say_where() -> None:
    assert parse_order(["metrics.auc desc", "params.lr", "started_at DESC", "tags.t asc"]) == (
        Order(Field("metrics", "auc"), True),
        Order(Field("params", "lr"), False),
        Order(Field("attributes", "started_at"), True),
        Order(Field("tags", "t"), False),
    )
    assert parse_order("metrics.auc desc") == (Order(Field("metrics", "auc"), True),)
    with pytest.raises(
        InvalidRunFilter,
        match=r"order 'metrics.auc sideways': expected `asc`, `desc` or the end at position 13",
    ):
        parse_order(["metrics.auc sideways"])
    with pytest.raises(InvalidRunFilter, match="expected `asc`, `desc` or the end at position 18"):
        parse_order(["metrics.auc desc x"])


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@given(value=TEXT, number=st.floats(allow_nan=False, allow_infinity=False))
def test_values_are_parameters_never_sql_text(value: str, number: float) -> None:
    quoted = "'" + value.replace("'", "''") + "'"
    comparisons = parse_filter(
        f"tags.`a b` = {quoted} and metrics.m >= {number!r} and name != {quoted}"
    )
    assert comparisons[0].value == value and comparisons[1].value == number
    sql, args = search_sql(comparisons, parse_order(["params.p desc"]), experiment=value, limit=7)
    assert args == ["p", value, "a b", value, "m", number, value, 7]
    # The same SQL text whatever the values: they travel as parameters only.
    plain = parse_filter("tags.`a b` = 'v' and metrics.m >= 0 and name != 'v'")
    assert sql == search_sql(plain, parse_order(["params.p desc"]), experiment="v", limit=1)[0]
    assert sql.count("?") == len(args)


@pytest.fixture
def store(stores: Stores) -> Iterator[RunStore]:
    opened = stores.open_runs()
    yield opened
    opened.close()


def test_a_value_written_to_break_the_sql_is_only_data(store: RunStore) -> None:
    attack = "x'; DROP TABLE runs; --"
    run = store.create_run("eta", attack, tags={"team": attack})
    store.create_run("eta", "other")
    quoted = "'" + attack.replace("'", "''") + "'"
    assert [r.run_id for r in store.search(f"tags.team = {quoted} and name = {quoted}")] == [
        run.run_id
    ]
    assert len(store.search()) == 2
