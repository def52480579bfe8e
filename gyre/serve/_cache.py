"""The prediction cache: answers keyed by (model, version, exact input bytes), bounded by
bytes, least recently used evicted first."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from gyre.serve._runtime import Tensors


def cache_key(model: str, version: int, feeds: Tensors) -> bytes:
    """A digest of the model, version and every input's name, dtype, shape and bytes."""
    digest = hashlib.blake2b(f"{model}\0{version}".encode(), digest_size=20)
    for name in sorted(feeds):
        array = feeds[name]
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype == object:
            for item in array.ravel():
                text = item.encode() if isinstance(item, str) else bytes(item)
                digest.update(len(text).to_bytes(4, "little") + text)
        else:
            digest.update(array.tobytes())
    return digest.digest()


def _size(outputs: Tensors) -> int:
    return 64 + sum(a.nbytes + 96 for a in outputs.values())


class PredictionCache:
    """An LRU of answers within `capacity_bytes` (hits and misses are counted in metrics)."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.size_bytes = 0
        self._entries: OrderedDict[bytes, tuple[Tensors, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Tensors | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, outputs: Tensors) -> None:
        size = _size(outputs) + len(key)
        if size > self.capacity_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.size_bytes -= previous[1]
        # Answers are shared between requests: make them read-only so none can alter them.
        for array in outputs.values():
            array.flags.writeable = False
        self._entries[key] = (outputs, size)
        self.size_bytes += size
        while self.size_bytes > self.capacity_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.size_bytes -= evicted
