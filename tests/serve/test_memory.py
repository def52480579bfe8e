"""The server's allocator setting: large blocks keep their own mappings, freed or not."""

from __future__ import annotations

import subprocess
import sys

from gyre.serve import _memory

PROBE = """
import importlib.util, sys
from pathlib import Path
# The module alone: importing gyre.serve would load onnxruntime and the rest first.
spec = importlib.util.spec_from_file_location("memory", sys.argv[2])
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)
if sys.argv[1] == "held":
    memory.return_large_blocks()
def heap():
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith("[heap]"):
            start, end = line.split()[0].split("-")
            return range(int(start, 16), int(end, 16))
    return range(0)
freed = b"x" * (8 << 20)
del freed  # glibc's moving threshold would rise to 8 MiB here
block = b"x" * (4 << 20)
print(id(block) in heap())  # a bytes object's id is its address
"""


def from_the_heap(mode: str) -> bool:
    """Whether a 4 MiB block allocated after an 8 MiB one was freed is in the heap."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode, _memory.__file__],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip() == "True"


def test_a_large_block_keeps_its_own_mapping_after_a_larger_one_was_freed() -> None:
    assert not from_the_heap("held")  # a mapping of its own: freed, it goes back at once
    assert from_the_heap("moving")  # glibc's default: the heap, where it may stay
