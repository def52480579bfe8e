"""Hosts on this machine for the replica tests: network namespaces, each linked to the
root namespace by a veth pair.

Host N has the address 10.231.N.2/24 inside its namespace; the root namespace's end of the
link is 10.231.N.1, where the tests' PostgreSQL listens (tests/pgcluster.py `listen`). Each
namespace routes 10.231.0.0/16 to its link, so every host reaches the database at one
address, the first host's 10.231.N.1, as hosts on one network reach one database server.
Nothing else is routed: a server in a namespace reaches the database and nothing more.

Names carry a random tag (namespaces `gyre-TAG-I`, links `gyTAGIh`, at most 15 characters
as Linux wants), and each new host takes a /24 that no interface of the machine has, under
a lock file, so runs side by side never share one. `network_hosts` removes what it made
even when the test fails. Making namespaces needs root and iproute2 (CI runs as root);
where that fails, the error says so and the test fails: replica tests are never skipped.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NETWORK = ipaddress.ip_network("10.231.0.0/16")
_LOCK = Path("/tmp/gyre-netns.lock")


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str  # inside the namespace
    gateway: str  # the root namespace's end of the link
    link: str  # the name of that end

    def url(self, port: int) -> str:
        return f"http://{self.address}:{port}"


def ip(*args: str) -> str:
    """`ip ARGS`; a failure raises with iproute2's own message."""
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RuntimeError(
            "the replica tests need iproute2's `ip` (apt-get install iproute2)"
        ) from None
    if result.returncode != 0:
        raise RuntimeError(
            f"`ip {' '.join(args)}` failed (exit {result.returncode}): "
            f"{result.stderr.strip()}; the replica tests make network namespaces, which "
            "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        )
    return result.stdout


def _subnets_in_use() -> set[int]:
    """The N of every 10.231.N.0/24 that an interface of the root namespace has."""
    used = set()
    for line in ip("-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        address = ipaddress.ip_interface(fields[fields.index("inet") + 1]).ip
        if address in NETWORK:
            used.add(int(str(address).split(".")[2]))
    return used


def _create(host: Host) -> None:
    inner = f"{host.link[:-1]}n"
    ip("netns", "add", host.namespace)
    ip("link", "add", host.link, "type", "veth", "peer", "name", inner, "netns", host.namespace)
    ip("addr", "add", f"{host.gateway}/24", "dev", host.link)
    ip("link", "set", host.link, "up")
    ns = ("-n", host.namespace)
    ip(*ns, "addr", "add", f"{host.address}/24", "dev", inner)
    ip(*ns, "link", "set", inner, "up")
    ip(*ns, "link", "set", "lo", "up")
    ip(*ns, "route", "add", str(NETWORK), "via", host.gateway)


def _remove(host: Host) -> None:
    """Remove the namespace (its end of the link goes with it, and so the other end)."""
    namespaces = ip("netns", "list")
    if any(line.split()[0] == host.namespace for line in namespaces.splitlines() if line):
        ip("netns", "delete", host.namespace)
    if host.link in _links():
        ip("link", "delete", host.link)


def _links() -> set[str]:
    return {
        line.split(":")[1].strip().split("@")[0]
        for line in ip("-o", "link", "show").splitlines()
        if line
    }


@contextmanager
def network_hosts(count: int) -> Iterator[list[Host]]:
    """`count` hosts, removed on leaving (also on an error)."""
    if os.geteuid() != 0:
        raise RuntimeError(
            "the replica tests make network namespaces (`ip netns`), which needs root: run "
            "them as root, as CI does"
        )
    tag = uuid.uuid4().hex[:6]
    made: list[Host] = []
    try:
        with _LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # until the addresses are taken
            free = sorted(set(range(1, 255)) - _subnets_in_use())
            if len(free) < count:
                raise RuntimeError(f"fewer than {count} free /24 networks left in {NETWORK}")
            for i, n in enumerate(random.sample(free, count)):
                host = Host(f"gyre-{tag}-{i}", f"10.231.{n}.2", f"10.231.{n}.1", f"gy{tag}{i}h")
                made.append(host)
                _create(host)
        yield made
    finally:
        errors = []
        for host in made:
            try:
                _remove(host)
            except RuntimeError as exc:
                errors.append(str(exc))
        if errors:
            raise RuntimeError("could not remove the test hosts: " + "; ".join(errors))
