import pytest

from gyre.collect import EventType, format_timestamp, parse_timestamp
from gyre.errors import ConfigError

ORDERS = EventType(
    "orders",
    {"order_id": "string", "restaurant_id": "int", "amount": "float", "paid": "bool",
     "at": "timestamp", "note": "string?"},
    ("restaurant_id",),
    "at",
    "order_id",
)  # fmt: skip
GOOD = {"order_id": "o1", "restaurant_id": 17, "amount": 12, "paid": True,
        "at": "2026-11-26T08:00:00Z"}  # fmt: skip


def test_a_good_record_is_typed_and_timestamps_become_epoch_microseconds() -> None:
    fact = ORDERS.validate(GOOD)
    assert fact == {**GOOD, "amount": 12.0, "at": 1_795_680_000_000_000, "note": None}
    assert format_timestamp(fact["at"]) == "2026-11-26T08:00:00Z"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"restaurant_id": "17"}, "field `restaurant_id`: expected int, got str '17'"),
        ({"restaurant_id": True}, "field `restaurant_id`: expected int, got bool"),
        ({"restaurant_id": 2**70}, "does not fit in 64 bits"),
        ({"amount": 10**400}, "field `amount`: an integer of 1329 bits is too large"),
        ({"amount": "12"}, "field `amount`: expected float, got str"),
        ({"paid": 1}, "field `paid`: expected bool, got int"),
        ({"order_id": 5}, "field `order_id`: expected string, got int"),
        ({"at": "yesterday"}, "field `at`: 'yesterday' is not an RFC 3339 timestamp"),
        ({"at": "2026-11-26T08:00:00"}, "has no time zone"),
        ({"at": True}, "got a boolean"),
        ({"at": None}, "missing field(s) at"),
        ({"colour": "red"}, "unknown field(s) colour; `orders` has order_id"),
    ],
)
def test_bad_records_are_refused_with_the_reason(change: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        ORDERS.validate({**GOOD, **change})
    assert reason in str(caught.value)


def test_missing_fields_are_named() -> None:
    with pytest.raises(ValueError, match=r"missing field\(s\) amount, order_id"):
        ORDERS.validate({"restaurant_id": 1, "paid": False, "at": 0})


def test_unknown_fields_can_be_ignored_per_type() -> None:
    lenient = EventType("clicks", {"user": "int", "at": "timestamp"}, ("user",), "at",
                        unknown_fields="ignore")  # fmt: skip
    assert lenient.validate({"user": 1, "at": 0, "extra": "x"}) == {"user": 1, "at": 0}


def test_timestamps_accept_offsets_and_epoch_seconds() -> None:
    assert parse_timestamp("2026-11-26T09:00:00+01:00") == parse_timestamp("2026-11-26T08:00:00Z")
    assert parse_timestamp(1.5) == 1_500_000
    assert parse_timestamp(253_402_300_799) == parse_timestamp("9999-12-31T23:59:59Z")
    # Out of that range a number would overflow the 64-bit columns and the date functions.
    for value in (float("inf"), float("nan"), 10**400, 253_402_300_800, -62_135_596_801):
        with pytest.raises(ValueError, match="is not epoch seconds of the years 1 to 9999"):
            parse_timestamp(value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": {"a": "decimal", "t": "timestamp"}}, "has type 'decimal'"),
        ({"entity": ()}, "declare its entity key"),
        ({"entity": ("nope",)}, "`nope` is not one of its fields"),
        ({"fields": {"a": "int", "t": "int"}}, "must be a timestamp"),
        ({"fields": {"a": "int?", "t": "timestamp"}}, "cannot be optional"),
        ({"unknown_fields": "maybe"}, 'must be "reject" or "ignore"'),
    ],
)
def test_bad_declarations_are_config_errors(kwargs: dict, message: str) -> None:
    declared = {"name": "e", "fields": {"a": "int", "t": "timestamp"}, "entity": ("a",),
                "time_field": "t", **kwargs}  # fmt: skip
    with pytest.raises(ConfigError, match=None) as caught:
        EventType(**declared)
    assert message in str(caught.value)


def test_the_definition_hash_changes_with_the_definition() -> None:
    other = EventType("orders", {**ORDERS.fields, "note": "string"}, ("restaurant_id",), "at",
                      "order_id")  # fmt: skip
    assert ORDERS.definition_hash != other.definition_hash
    assert len(ORDERS.definition_hash) == 64
