"""Names of models and aliases, and references to a version (`NAME`, `NAME:3`, `NAME@ALIAS`)."""

from __future__ import annotations

import re

from gyre._numbers import parse_count
from gyre.errors import InvalidModel

CHAMPION = "champion"
CHALLENGER = "challenger"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name) or (kind == "alias" and name.isdigit()):
        raise InvalidModel(
            f"{kind} name {name!r} is not allowed: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
            + (" (and not only digits)" if kind == "alias" else "")
        )
    return name


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`NAME`, `NAME:VERSION` or `NAME@ALIAS` -> (name, version, alias)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return check_name("model", name), None, check_name("alias", alias)
    if ":" in ref:
        name, text = ref.split(":", 1)
        version = parse_count(text)
        if version is None:
            raise InvalidModel(
                f"version in {ref!r} must be a whole number in ASCII digits, as in `{name}:3`"
            )
        return check_name("model", name), version, None
    return check_name("model", ref), None, None
