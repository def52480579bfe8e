"""Request ids: only the holder of the key makes ids that verify, and each says what it was
issued for."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from gyre.monitor import Issued, RequestIds
from gyre.monitor._request_ids import KEY_BYTES

KEY = bytes(range(KEY_BYTES))


def test_an_issued_id_says_which_model_version_and_whether_it_takes_feedback() -> None:
    ids = RequestIds(KEY)
    routed = ids.issue("iris", 2, takes_feedback=True)
    pinned = ids.issue("iris", 2, takes_feedback=False)
    assert routed.startswith("iris~2~") and len(routed.split("~")[2]) == 64
    assert ids.verify(routed) == Issued("iris", 2, takes_feedback=True)
    assert ids.verify(pinned) == Issued("iris", 2, takes_feedback=False)
    # Another process (its own nonce prefix) under the same key recognises them.
    assert RequestIds(KEY).verify(routed) == Issued("iris", 2, takes_feedback=True)


def test_ids_are_unique_across_requests_and_processes() -> None:
    first, second = RequestIds(KEY), RequestIds(KEY)
    issued = {ids.issue("m", 1, takes_feedback=True) for ids in (first, second) for _ in range(500)}
    assert len(issued) == 1000


def test_no_change_to_an_id_verifies() -> None:
    ids = RequestIds(KEY)
    real = ids.issue("iris", 2, takes_feedback=True)
    token = real.split("~")[2]
    changed = [f"iris~1~{token}", f"iris~02~{token}", f"iris~²~{token}", f"irisx~2~{token}",
               f"iris~2~{token.upper()}", f"iris~2~{token[:-2]}", f"iris~2~{token} ",
               f"iris~2~{token[:32]} {token[33:]}", f"iris~2~{token}~", real + "0", ""]  # fmt: skip
    for position, digit in enumerate(token):
        other = "0" if digit != "0" else "1"
        changed.append(f"iris~2~{token[:position]}{other}{token[position + 1 :]}")
    assert [c for c in changed if ids.verify(c) is not None] == []
    assert RequestIds(os.urandom(KEY_BYTES)).verify(real) is None  # another key: another server


@given(st.text(alphabet="iris~0123456789abcdef", max_size=90) | st.text(max_size=300))
def test_text_nobody_issued_never_verifies(text: str) -> None:
    assert RequestIds(KEY).verify(text) is None
