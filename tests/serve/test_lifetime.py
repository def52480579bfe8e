"""A child whose parent died while the child was still starting up does not live on."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

# The child is slow to start (as a server worker importing its modules is), and its parent
# is already gone when it asks to follow it.
CHILD = """
import sys, time
time.sleep(1.0)
from gyre.serve import _lifetime
_lifetime.{call}(int(sys.argv[1]))
time.sleep(60)
"""

PARENT = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(child.pid, flush=True)
"""


def _running(pid: int) -> bool:
    try:
        state = (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")
@pytest.mark.parametrize("call", ["die_with_parent", "watch_parent"])
def test_a_child_of_a_parent_dead_before_it_started_exits(call: str) -> None:
    parent = subprocess.run(
        [sys.executable, "-c", PARENT, CHILD.format(call=call)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    child = int(parent.stdout.strip())
    try:
        deadline = time.monotonic() + 20
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(child)
    finally:
        if _running(child):
            subprocess.run(["kill", "-9", str(child)], check=False)
