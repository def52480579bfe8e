"""Request ids that only this server can issue, bound to the model and version that answered.

An id reads `MODEL~VERSION~TOKEN`. TOKEN is 64 hex digits: a 16-byte nonce (8 random bytes
drawn once per process, then the process's request counter) followed by a 16-byte keyed
BLAKE2b tag over the id's `MODEL~VERSION~` text, the nonce, and whether the answer takes
feedback (it does when a bandit policy chose its version; the flag is in the tag, not in
the text). The 32-byte key is made once and kept in the feedback store
(`<home>/feedback.db`), so every process of every server on one home issues and checks ids
under the same key. What that buys:

- nobody without the key can make an id the server takes: a guessed token, a counter
  stepped from a real id, or a real id with its version changed all fail the tag (a blind
  guess succeeds with probability 2**-128);
- any process can tell at once, without a lookup, whether an id is one this server issued
  and whether its answer was recorded for feedback, so a feedback post may wait for the
  record of an answer that another process has not written yet, while a forged id, or the
  id of an answer that takes no feedback, gets its 404 at once (see `FeedbackStore.served`);
- issuing costs one keyed hash of about 40 bytes (~2 µs here): no system call, no I/O.

The model and version in the id are there for people reading logs; the feedback path takes
them from the served record, never from the id.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
from dataclasses import dataclass

from gyre._numbers import parse_count

KEY_BYTES = 32
_NONCE_BYTES = 16
_TAG_BYTES = 16
_TOKEN_HEX = 2 * (_NONCE_BYTES + _TAG_BYTES)
# A model name (128 characters at most), a version (19 digits), two `~` and the token.
_MAX_ID_CHARS = 128 + 19 + 2 + _TOKEN_HEX
# The last byte under the tag: whether the answer was recorded for feedback.
_TAKES_FEEDBACK = b"\x01"
_NO_FEEDBACK = b"\x00"


@dataclass(frozen=True, slots=True)
class Issued:
    """What a genuine id says: the model and version that answered, and whether the
    answer was recorded for feedback."""

    model: str
    version: int
    takes_feedback: bool


class RequestIds:
    """Issues ids under `key` and recognises the ids issued under it by any process."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a request id key has {KEY_BYTES} bytes, not {len(key)}")
        self._mac = hashlib.blake2b(key=key, digest_size=_TAG_BYTES)
        # Unique per process (with 2**-64 odds of two processes sharing one), so the counter
        # makes every nonce unique without coordination.
        self._prefix = os.urandom(_NONCE_BYTES - 8)
        self._count = itertools.count()

    def _tag(self, head: str, nonce: bytes, kind: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(head.encode() + nonce + kind)
        return mac.digest()

    def issue(self, model: str, version: int, *, takes_feedback: bool) -> str:
        head = f"{model}~{version}~"
        nonce = self._prefix + next(self._count).to_bytes(8, "big")
        kind = _TAKES_FEEDBACK if takes_feedback else _NO_FEEDBACK
        return head + (nonce + self._tag(head, nonce, kind)).hex()

    def verify(self, request_id: str) -> Issued | None:
        """What `request_id` says when it is exactly an id issued under this key, else None."""
        if len(request_id) > _MAX_ID_CHARS:
            return None
        parts = request_id.split("~")
        if len(parts) != 3:
            return None
        model, version_text, token = parts
        version = parse_count(version_text)
        if version is None or len(token) != _TOKEN_HEX:
            return None
        try:
            raw = bytes.fromhex(token)
        except ValueError:
            return None
        if raw.hex() != token:  # fromhex also takes upper case and spaces: not our spelling
            return None
        head = f"{model}~{version_text}~"  # the tag covers the text as issued
        nonce, tag = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for kind in (_TAKES_FEEDBACK, _NO_FEEDBACK):
            if hmac.compare_digest(self._tag(head, nonce, kind), tag):
                return Issued(model, version, kind == _TAKES_FEEDBACK)
        return None
