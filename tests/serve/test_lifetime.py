"""A child whose parent died while the child was still starting up does not live on."""

import subprocess
import sys
import time

import pytest

from tests.conftest import process_running

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
        while process_running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_running(child)
    finally:
        if process_running(child):
            subprocess.run(["kill", "-9", str(child)], check=False)
