"""Row transforms: small arithmetic expressions over a fact's numeric fields, declared once
as text and compiled twice, to a Python function (online engine) and to SQL (offline).

The language: numbers, field names (or earlier transforms), `+ - * /`, unary minus,
parentheses and the functions `abs(x)`, `log1p(x)`, `sqrt(x)`, `coalesce(x, y, …)`.
Values are floats. Both compilations share these rules, so they agree:
- a null operand makes the result null (except in `coalesce`, which takes the first
  non-null argument);
- division by zero, `log1p` of x <= -1 and `sqrt` of x < 0 are null, never inf or NaN.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gyre.errors import ConfigError

Row = Mapping[str, Any]
Evaluate = Callable[[Row], float | None]
FUNCTIONS = ("abs", "log1p", "sqrt", "coalesce")


@dataclass(frozen=True)
class Expression:
    """A compiled transform: `evaluate(row)` in Python, `sql(column)` for DuckDB."""

    text: str
    evaluate: Evaluate
    _render: Callable[[Callable[[str], str]], str]
    names: frozenset[str]

    def sql(self, column: Callable[[str], str]) -> str:
        """The SQL expression, with `column(name)` giving each referenced name's SQL."""
        return self._render(column)


def compile_expression(text: str, numeric: frozenset[str], where: str) -> Expression:
    """Parse `text`; `numeric` names the fields and transforms it may use."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ConfigError(f"{where}: {text!r} is not an expression ({exc.msg})") from None
    names: set[str] = set()
    evaluate, render = _compile(tree, numeric, names, f"{where}: {text!r}")
    return Expression(text, evaluate, render, frozenset(names))


def _number(value: float) -> str:
    return repr(float(value))


def _compile(
    node: ast.expr, numeric: frozenset[str], names: set[str], where: str
) -> tuple[Evaluate, Callable[[Callable[[str], str]], str]]:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: only numbers may be constants, not {value!r}")
        constant = float(value)
        return (lambda row: constant), (lambda column: f"CAST({_number(constant)} AS DOUBLE)")
    if isinstance(node, ast.Name):
        name = node.id
        if name not in numeric:
            known = ", ".join(sorted(numeric)) or "none"
            raise ConfigError(f"{where}: `{name}` is not a numeric field; numeric fields: {known}")
        names.add(name)

        def field(row: Row) -> float | None:
            value = row.get(name)
            return None if value is None else float(value)

        return field, (lambda column: f"CAST({column(name)} AS DOUBLE)")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner, inner_sql = _compile(node.operand, numeric, names, where)
        if isinstance(node.op, ast.UAdd):
            return inner, inner_sql

        def negate(row: Row) -> float | None:
            value = inner(row)
            return None if value is None else -value

        return negate, (lambda column: f"(-{inner_sql(column)})")
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        return _binary(node, numeric, names, where)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        return _call(node.func.id, node.args, numeric, names, where)
    raise ConfigError(
        f"{where}: only numbers, numeric fields, + - * /, parentheses and "
        f"{', '.join(FUNCTIONS)} are allowed"
    )


def _binary(
    node: ast.BinOp, numeric: frozenset[str], names: set[str], where: str
) -> tuple[Evaluate, Callable[[Callable[[str], str]], str]]:
    left, left_sql = _compile(node.left, numeric, names, where)
    right, right_sql = _compile(node.right, numeric, names, where)
    op = node.op

    def evaluate(row: Row) -> float | None:
        a, b = left(row), right(row)
        if a is None or b is None:
            return None
        if isinstance(op, ast.Add):
            return a + b
        if isinstance(op, ast.Sub):
            return a - b
        if isinstance(op, ast.Mult):
            return a * b
        return None if b == 0 else a / b

    symbol = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}[type(op)]

    def render(column: Callable[[str], str]) -> str:
        a, b = left_sql(column), right_sql(column)
        if symbol == "/":
            return f"({a} / NULLIF({b}, 0.0))"
        return f"({a} {symbol} {b})"

    return evaluate, render


def _call(
    function: str, args: list[ast.expr], numeric: frozenset[str], names: set[str], where: str
) -> tuple[Evaluate, Callable[[Callable[[str], str]], str]]:
    if function not in FUNCTIONS:
        raise ConfigError(f"{where}: unknown function `{function}`; use {', '.join(FUNCTIONS)}")
    compiled = [_compile(arg, numeric, names, where) for arg in args]
    if function == "coalesce":
        if len(compiled) < 2:
            raise ConfigError(f"{where}: coalesce takes two or more arguments")

        def first(row: Row) -> float | None:
            for evaluate, _ in compiled:
                value = evaluate(row)
                if value is not None:
                    return value
            return None

        return first, (lambda column: f"coalesce({', '.join(sql(column) for _, sql in compiled)})")
    if len(compiled) != 1:
        raise ConfigError(f"{where}: {function} takes one argument")
    ((inner, inner_sql),) = compiled

    def evaluate(row: Row) -> float | None:
        value = inner(row)
        if value is None:
            return None
        if function == "abs":
            return abs(value)
        if function == "log1p":
            return math.log(1.0 + value) if value > -1.0 else None
        return math.sqrt(value) if value >= 0.0 else None

    def render(column: Callable[[str], str]) -> str:
        x = inner_sql(column)
        if function == "abs":
            return f"abs({x})"
        if function == "log1p":
            # ln(1 + x), not a log1p: the Python side computes exactly this too.
            return f"(CASE WHEN {x} > -1.0 THEN ln(1.0 + {x}) END)"
        return f"(CASE WHEN {x} >= 0.0 THEN sqrt({x}) END)"

    return evaluate, render
