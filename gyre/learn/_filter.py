"""The runs filter and order language, parsed once and compiled to parameterized SQL.

    metrics.auc > 0.8 and params.max_depth = 3 and tags.team = 'eta' and status = 'finished'

A filter is comparisons joined by `and` (only `and`: a run matches when every comparison
holds). A comparison is `KEY OP VALUE`:

- KEY: `metrics.K`, `params.K`, `tags.K` (also `metric.`, `param.`, `tag.`), or a run
  attribute: `status`, `name`, `experiment`, `run_id`, `started_at`, `ended_at` (also as
  `attributes.status`, `attribute.`, `attr.`, `run.`). K is letters, digits and `_`, or
  anything a key may hold inside backticks: metrics.`val-loss`, params.`model.depth`.
- OP: `=`, `!=`, `<`, `<=`, `>`, `>=`.
- VALUE: a number (`3`, `-0.5`, `1e-3`) or text in '…' or "…" (a quote inside is written
  twice: 'it''s').

The rules, stated once (the SQL below and the conformance suite's reference both follow
them):

- metrics are numbers: compared with a number only; the value compared is the latest.
- parameters are JSON: a number compares with numeric parameters (ints and floats)
  numerically, and matches no other; text compares with a parameter's text: a string
  parameter as it is, any other as its JSON text (`params.depth = '3'` matches 3).
- tags, `status`, `name`, `experiment` and `run_id` are text, compared by their bytes
  (code points); `started_at` and `ended_at` are numbers (seconds since the epoch).
- a run lacking a key that a comparison names does not match it (whatever the operator),
  and a run lacking a key that an order names sorts after the runs that have it (in either
  direction); `ended_at` of a running run is lacking.
- order: `KEY [asc|desc]`, several in turn; parameters sort numbers (by value) before
  text (by text); ties, and the default, are broken by `started_at desc`, then `run_id`.

Values never enter the SQL text: each is a `?` parameter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gyre.errors import InvalidRunFilter
from gyre.learn._runs import KEY, RUN_STATUSES

OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
_SQL_OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_PREFIXES = {"metrics": "metrics", "metric": "metrics", "params": "params",
             "param": "params", "tags": "tags", "tag": "tags", "attributes": "attributes",
             "attribute": "attributes", "attr": "attributes", "run": "attributes"}  # fmt: skip
TEXT_ATTRIBUTES = ("status", "name", "experiment", "run_id")
NUMBER_ATTRIBUTES = ("started_at", "ended_at")
ATTRIBUTES = TEXT_ATTRIBUTES + NUMBER_ATTRIBUTES
TABLES = {"metrics": "run_latest", "params": "run_params", "tags": "run_tags"}

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_]+")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_KEY_TAIL = re.compile(r"[A-Za-z0-9_\-./]*")
_EXAMPLE = "metrics.auc > 0.8 and params.max_depth = 3 and status = 'finished'"


@dataclass(frozen=True)
class Field:
    kind: str  # metrics, params, tags or attributes
    key: str  # for attributes, the attribute's name


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str
    value: float | str


@dataclass(frozen=True)
class Order:
    field: Field
    descending: bool


class _Parser:
    """A cursor over one filter or order text; errors name the position (from 1)."""

    def __init__(self, text: str, what: str) -> None:
        self.text, self.what, self.pos = text, what, 0

    def fail(self, expected: str, at: int | None = None) -> InvalidRunFilter:
        at = self.pos if at is None else at
        rest = self.text[at:]
        found = f"found {rest[:20]!r}" if rest else "found the end"
        return InvalidRunFilter(
            f"{self.what} {self.text!r}: expected {expected} at position {at + 1}, {found}"
        )

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip()
        return self.pos >= len(self.text)

    def word(self) -> str | None:
        self.skip()
        match = _WORD.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group()

    def field(self) -> Field:
        self.skip()
        start = self.pos
        word = self.word()
        expected = f"a key such as metrics.auc, params.max_depth, tags.team or status ({_EXAMPLE})"
        if word is None:
            raise self.fail(expected)
        prefix = _PREFIXES.get(word.lower())
        if prefix is None or not self.text.startswith(".", self.pos):
            if word.lower() in ATTRIBUTES:
                return Field("attributes", word.lower())
            raise self.fail(expected, start)
        self.pos += 1  # the dot
        key_at = self.pos
        if self.text.startswith("`", self.pos):
            end = self.text.find("`", self.pos + 1)
            if end < 0:
                raise self.fail("a closing backtick (`)", len(self.text))
            key = self.text[self.pos + 1 : end]
            self.pos = end + 1
        else:
            match = _BARE_KEY.match(self.text, self.pos)
            if match is None:
                raise self.fail(f"a key after `{word}.` (in backticks when it holds a "
                                "dot, a dash or a space: metrics.`val-loss`)")  # fmt: skip
            key, self.pos = match.group(), match.end()
            if self.text.startswith(("-", ".", "/"), self.pos):
                tail = _KEY_TAIL.match(self.text, self.pos)
                whole = key + (tail.group() if tail else "")
                raise self.fail("an operator; a key with a dot, a dash or a slash goes in "
                                f"backticks: {word}.`{whole}`")  # fmt: skip
        if prefix == "attributes":
            if key.lower() not in ATTRIBUTES:
                raise self.fail(f"a run attribute ({', '.join(ATTRIBUTES)})", key_at)
            return Field(prefix, key.lower())
        if not KEY.fullmatch(key):
            raise self.fail("a key of 1-250 letters, digits, '_', '-', '.', '/' or spaces",
                            key_at)  # fmt: skip
        return Field(prefix, key)

    def operator(self) -> str:
        self.skip()
        for op in ("<=", ">=", "!=", "=", "<", ">"):
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                if op == "=" and self.text.startswith("=", self.pos):
                    raise self.fail("a value (equality is one `=`)")
                return op
        raise self.fail("an operator (" + ", ".join(OPERATORS) + ")")

    def value(self) -> tuple[float | str, int]:
        self.skip()
        start = self.pos
        if self.text.startswith(("'", '"'), self.pos):
            quote, chars, i = self.text[self.pos], [], self.pos + 1
            while True:
                end = self.text.find(quote, i)
                if end < 0:
                    raise self.fail(f"a closing quote ({quote})", len(self.text))
                chars.append(self.text[i:end])
                if self.text.startswith(quote, end + 1):  # a doubled quote is one quote
                    chars.append(quote)
                    i = end + 2
                    continue
                self.pos = end + 1
                return "".join(chars), start
        match = _NUMBER.match(self.text, self.pos)
        if match is None or _WORD.match(self.text, match.end()):
            word = _WORD.match(self.text, self.pos)
            hint = f" ('{word.group()}')" if word else ""
            raise self.fail(f"a value: a number or text in quotes{hint}")
        number = float(match.group())
        if not math.isfinite(number):
            raise self.fail("a number a double can hold")
        self.pos = match.end()
        return number, start


def _check_type(parser: _Parser, field: Field, op: str, value: float | str, at: int) -> None:
    name = f"{field.kind}.{field.key}" if field.kind != "attributes" else field.key
    numeric = field.kind == "metrics" or field.key in NUMBER_ATTRIBUTES
    if numeric and isinstance(value, str):
        raise parser.fail(f"a number: {name} is a number", at)
    textual = field.kind == "tags" or field.key in TEXT_ATTRIBUTES
    if textual and not isinstance(value, str):
        raise parser.fail(f"text in quotes: {name} is text ({name} = '{value:g}')", at)
    if field.key == "status" and op in ("=", "!=") and value not in RUN_STATUSES:
        raise parser.fail(f"a run status ({', '.join(RUN_STATUSES)})", at)


def parse_filter(text: str | None) -> tuple[Comparison, ...]:
    """The comparisons of a filter (none for None or blank), or `InvalidRunFilter` saying
    where and what was expected."""
    if text is None:
        return ()
    parser = _Parser(text, "runs filter")
    if parser.at_end():
        return ()
    found = []
    while True:
        field = parser.field()
        op = parser.operator()
        value, at = parser.value()
        _check_type(parser, field, op, value, at)
        found.append(Comparison(field, op, value))
        if parser.at_end():
            return tuple(found)
        joined_at = parser.pos
        word = parser.word()
        if word is not None and word.lower() == "or":
            raise parser.fail("`and` (conditions are joined by `and` only; `or` is not "
                              "supported: run two searches)", joined_at)  # fmt: skip
        if word is None or word.lower() != "and":
            raise parser.fail("`and` or the end of the filter", joined_at)


def parse_order(order_by: Sequence[str]) -> tuple[Order, ...]:
    """`["metrics.auc desc", "params.lr"]` as orders (ascending unless `desc`)."""
    if isinstance(order_by, str):  # one order given bare: a sequence of its characters
        order_by = [order_by]
    found = []
    for item in order_by:
        parser = _Parser(item, "runs order")
        field = parser.field()
        word = parser.word()
        if word is not None and word.lower() not in ("asc", "desc"):
            raise parser.fail("`asc`, `desc` or the end", parser.pos - len(word))
        if not parser.at_end():
            raise parser.fail("`asc`, `desc` or the end")
        found.append(Order(field, word is not None and word.lower() == "desc"))
    return tuple(found)


# -- to SQL --------------------------------------------------------------------------------

RUN_COLUMNS = "r.rid, r.run_id, r.experiment, r.name, r.status, r.error, r.started_at, r.ended_at"


def search_sql(
    comparisons: Sequence[Comparison],
    orders: Sequence[Order],
    *,
    experiment: str | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """One SELECT of the page's runs (RUN_COLUMNS), its `?` parameters in order.

    Each comparison on a metric, parameter or tag is a subquery of the run ids that meet
    it (a range of one index: key and value), and the filter their INTERSECT: the cost is
    the sum of the comparisons' ranges whatever order a planner would have joined them in
    (SQLite without statistics joined the largest first). Each metric, parameter or tag
    an order names is one left join (a run lacking it sorts last)."""
    aliases: dict[tuple[str, str], str] = {}
    for o in orders:
        if o.field.kind != "attributes":
            aliases.setdefault((o.field.kind, o.field.key), f"j{len(aliases)}")
    sql = [f"SELECT {RUN_COLUMNS} FROM runs r"]
    args: list[Any] = []
    for (kind, key), alias in aliases.items():
        sql.append(f"LEFT JOIN {TABLES[kind]} {alias} ON {alias}.rid = r.rid AND {alias}.key = ?")
        args.append(key)
    where, subqueries, sub_args = [], [], []
    for c in comparisons:
        op = _SQL_OPERATORS[c.op]
        kind, key = c.field.kind, c.field.key
        if kind == "attributes":
            where.append(f"r.{key} {op} ?")
            args.append(c.value)
            continue
        column = ("txt" if isinstance(c.value, str) else "num") if kind == "params" else "value"
        subqueries.append(f"SELECT rid FROM {TABLES[kind]} WHERE key = ? AND {column} {op} ?")
        sub_args += [key, c.value]
    if subqueries:
        where.append("r.rid IN (" + " INTERSECT ".join(subqueries) + ")")
        args += sub_args
    if experiment is not None:
        where.append("r.experiment = ?")
        args.append(experiment)
    if where:
        sql.append("WHERE " + " AND ".join(where))
    terms = []
    for o in orders:
        direction = " DESC" if o.descending else ""
        kind, key = o.field.kind, o.field.key
        if kind == "attributes":
            if key == "ended_at":
                terms.append("(r.ended_at IS NULL)")
            terms.append(f"r.{key}{direction}")
            continue
        alias = aliases[(kind, key)]
        terms.append(f"({alias}.rid IS NULL)")
        if kind == "params":
            terms += [f"({alias}.num IS NULL)", f"{alias}.num{direction}",
                      f"{alias}.txt{direction}"]  # fmt: skip
        else:
            terms.append(f"{alias}.value{direction}")
    terms += ["r.started_at DESC", "r.run_id"]
    sql.append("ORDER BY " + ", ".join(terms) + " LIMIT ?")
    args.append(limit)
    return " ".join(sql), args
