"""A throwaway PostgreSQL cluster on loopback, for the tests and for trying gyre on
PostgreSQL by hand.

    python -m tests.pgcluster start DIR   # initdb (first time) + start; prints the URL
    python -m tests.pgcluster stop DIR

`make postgres` runs the first with DIR = /tmp/gyre-postgres-UID. The cluster listens on
127.0.0.1 (or the addresses `start(listen=…)` names: the replica tests add the host side of
their network namespaces' links), on a free port, with password (scram-sha-256)
authentication for user `gyre` from loopback and from the /24 network of each address it
listens on; its socket stays inside DIR. `initdb` refuses to run as root, so as root the
cluster belongs to the `postgres` user (the Debian package makes it) or to `nobody`. When
PostgreSQL's programs are missing, `scripts/ensure-postgres` installs Debian's package.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "gyre-test-password"
USER = "gyre"
LOOPBACK = "127.0.0.1"
# pg_hba.conf: initdb writes host lines for loopback only (127.0.0.1/32 and ::1/128, with
# scram-sha-256); the lines after this marker are written anew at each start.
_HBA_MARKER = "# gyre: the networks of the listen addresses (written by tests/pgcluster.py)"


def bindir() -> Path:
    """Where initdb and pg_ctl are: PATH first, else the newest Debian install."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    installs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not installs:
        raise RuntimeError(
            "PostgreSQL is not installed (no initdb); run scripts/ensure-postgres "
            "(as root it installs Debian's postgresql package)"
        )
    return installs[-1].parent


def _owner() -> str | None:
    """The user the cluster runs as: None for the current one, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a `postgres` nor a `nobody` user exists")


def _run(args: list[str], owner: str | None) -> None:
    command = ["runuser", "-u", owner, "--", *args] if owner else args
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )


def ensure_installed() -> None:
    """PostgreSQL's programs, installed by scripts/ensure-postgres when they are missing."""
    try:
        bindir()
    except RuntimeError:
        script = Path(__file__).resolve().parents[1] / "scripts" / "ensure-postgres"
        subprocess.run([str(script)], check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Cluster:
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres", host: str = LOOPBACK) -> str:
        """The URL of `database`, reached at `host` (one of the addresses it listens on)."""
        return f"postgresql://{USER}:{PASSWORD}@{host}:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        _run([str(bindir() / "pg_ctl"), "-D", str(self.data), *args], _owner())

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-m", mode, "-w")

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.folder / "server.log"))


def _allow_networks(data: Path, listen: Sequence[str]) -> None:
    """Let clients on the /24 network of each non-loopback address in `listen` connect with
    scram-sha-256, as initdb lets loopback clients; lines of an earlier start are replaced."""
    hba = data / "pg_hba.conf"
    kept = hba.read_text().split(_HBA_MARKER)[0].rstrip("\n")
    networks = sorted(
        str(ipaddress.ip_network(f"{a}/24", strict=False))
        for a in listen
        if not ipaddress.IPv4Address(a).is_loopback
    )
    lines = [f"host    all             all             {n:<23} scram-sha-256" for n in networks]
    # Written in place: the file keeps its owner (the cluster's user).
    hba.write_text("\n".join([kept, _HBA_MARKER, *lines]) + "\n")


def start(folder: Path, listen: Sequence[str] = (LOOPBACK,)) -> Cluster:
    """Create the cluster in `folder` on first use, and start it listening on `listen`
    (IPv4 addresses of this machine; 127.0.0.1 by default). As root, `folder`'s parents
    must let the cluster's user through (a checkout under /root does not): use a folder
    under /tmp then."""
    for address in listen:
        ipaddress.IPv4Address(address)  # ValueError for anything else
    owner = _owner()
    folder.mkdir(parents=True, exist_ok=True)
    if owner and subprocess.run(["runuser", "-u", owner, "--", "test", "-x", str(folder.parent)],
                                check=False).returncode:  # fmt: skip
        raise RuntimeError(
            f"the `{owner}` user cannot reach {folder} (a parent folder is closed to it); "
            "give a folder under /tmp, e.g. python -m tests.pgcluster start /tmp/gyre-postgres"
        )
    data = folder / "data"
    if not (data / "PG_VERSION").exists():
        password_file = folder / "password"
        password_file.write_text(PASSWORD + "\n")
        if owner:
            shutil.chown(folder, owner)
            shutil.chown(password_file, owner)
        try:
            _run(
                [str(bindir() / "initdb"), "-D", str(data), "-U", USER, "--pwfile",
                 str(password_file), "--auth-host=scram-sha-256", "--auth-local=trust",
                 "-E", "UTF8", "--locale=C"],
                owner,
            )  # fmt: skip
        finally:
            password_file.unlink(missing_ok=True)
    _allow_networks(data, listen)
    port = _free_port()
    # A socket's path has at most 107 bytes: a deep folder gets one under /tmp.
    sockets = folder if len(str(folder)) < 80 else Path(tempfile.mkdtemp(prefix="gyre-pg-s-"))
    if owner:
        shutil.chown(sockets, owner)
    # Written anew at each start (a new free port); PostgreSQL reads this file last.
    (data / "postgresql.auto.conf").write_text(
        f"port = {port}\nlisten_addresses = '{','.join(listen)}'\n"
        f"unix_socket_directories = '{sockets}'\nmax_connections = 200\n"
    )
    if owner:
        shutil.chown(data / "postgresql.auto.conf", owner)
    cluster = Cluster(folder, port)
    cluster.start()
    return cluster


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pgcluster start|stop DIR", file=sys.stderr)
        return 2
    folder = Path(argv[1]).resolve()
    if argv[0] == "stop":
        Cluster(folder, 0).stop()
        return 0
    cluster = start(folder)
    print(cluster.url())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
