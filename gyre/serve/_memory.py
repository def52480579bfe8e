"""What a server process frees goes back to the system: the C allocator's one setting.

glibc serves a block of at least its mmap threshold (128 KiB) with a mapping of its own,
which goes back to the system when it is freed. But by default that threshold moves:
each time such a block is freed, the threshold rises to the block's size (up to 32 MiB).
After the first large request body is freed, later bodies of up to that size come from
the heap instead, where they are interleaved with small long-lived blocks and can not be
given back: a server process that answered bursts of 32 concurrent 4 MiB bodies (all
held at once) kept 60-120 MiB more after a burst than before it; with the threshold held
at 128 KiB it kept 2-9 MiB. Setting the threshold once (to glibc's own default) is what
stops it moving. Small blocks (pymalloc's arenas, most of onnxruntime's) are not
affected; a large block costs a mapping and its page faults, paid only by requests with
large bodies. Nothing happens on other C libraries.
"""

from __future__ import annotations

import ctypes
import sys

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_large_blocks() -> None:
    """Hold glibc's mmap threshold at its default, so large freed blocks go back."""
    if not sys.platform.startswith("linux"):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
