"""Whole numbers read from text and JSON at the boundary, by one rule everywhere.

A version in a path, a header's byte count, a policy target, an id's counter: each is
1 to 19 ASCII digits that fit a signed 64-bit integer (what SQLite stores). `str.isdigit`
is not that test: it accepts superscripts and other Unicode digits (`"²"`) that `int()`
then refuses or reads differently, and it has no upper bound, so a check with it lets a
value through that fails later, where nobody catches it. Callers turn `None` into their
own error, which names the field and the fix.
"""

from __future__ import annotations

from typing import Any

INT64_MAX = 2**63 - 1


def parse_count(text: str) -> int | None:
    """`text` as an integer from 0 to 2**63 - 1 when it is written in ASCII digits only
    (no sign, no spaces, no underscores), else None."""
    if not 0 < len(text) <= 19 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= INT64_MAX else None


def is_int64(value: Any) -> bool:
    """Whether a decoded JSON value is an integer (not a bool) that SQLite can store."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -INT64_MAX - 1 <= value <= INT64_MAX
    )
