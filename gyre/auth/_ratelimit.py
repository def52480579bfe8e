"""Consumers' rate limits: token buckets, in one process or shared by a server's processes.

Each consumer with a `rate_per_s` has one bucket that holds up to `burst` tokens (the rate
when unset), refills at `rate_per_s` tokens a second, and gives one token per request. The
arithmetic is one pure function (`take`), with the time passed in.

`rate_per_s` is the consumer's total over all processes of one server, so the processes of
a `gyre serve --workers N` share their buckets: one small file, `rate-limits.bin` in the
server run's folder under `<home>/run/` (see `_rundir`), mapped into every worker's
memory. A request takes the file's lock (`flock`), reads and writes its consumer's 16
bytes, and lets go: two system calls and a few microseconds, only for consumers that have
a rate. `flock` is released by the kernel when a process dies, so a worker killed with the
lock held (even by SIGKILL) wedges nobody; a `multiprocessing.Lock` would stay held
forever. The file is created, or re-laid out for a changed set of consumers, by whichever
process opens it first; it never shrinks (another process may have it mapped). The times
in it are CLOCK_MONOTONIC seconds, one clock for every process of the machine; a bucket
whose time lies ahead of the clock (the machine rebooted) starts again from now.

One process (`--workers 1`, and the in-process app) keeps its buckets in memory: no file,
no system call. Consumers without a rate cost nothing at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from gyre.config import ConsumerConfig

_MAGIC = b"gyre-rl1"
_HEADER = len(_MAGIC) + 32  # the magic, then a digest of the layout (names, rates, bursts)
_SLOT = struct.Struct("<dd")  # tokens, monotonic time of the last update


def take(
    tokens: float, updated: float, now: float, rate_per_s: float, burst: float
) -> tuple[float, float, float]:
    """One request against a bucket: (tokens, updated) after it, and 0.0 when it may go
    ahead, else the seconds until a token will be there."""
    if not 0.0 <= tokens <= burst:  # a bucket never holds this (NaN included): start full
        tokens = burst
    if not updated <= now:  # the clock started again (a reboot), or NaN
        updated = now
    tokens = min(burst, tokens + (now - updated) * rate_per_s)
    if tokens >= 1.0:
        return tokens - 1.0, now, 0.0
    return tokens, now, (1.0 - tokens) / rate_per_s


def _limits(consumers: Mapping[str, ConsumerConfig]) -> dict[str, tuple[float, float]]:
    """{consumer: (rate_per_s, burst)} for the consumers that have a rate, by name."""
    return {
        name: (c.rate_per_s, max(c.burst or c.rate_per_s, 1.0))
        for name, c in sorted(consumers.items())
        if c.rate_per_s is not None
    }


class RateLimits(Protocol):
    def take(self, consumer: str, now: float) -> float:
        """0.0 when the consumer may make a request now, else the seconds to wait."""
        ...


class LocalRateLimits:
    """The buckets of one process, in memory."""

    def __init__(self, limits: Mapping[str, tuple[float, float]], now: float) -> None:
        self._limits = dict(limits)
        self._state = {name: (burst, now) for name, (_, burst) in limits.items()}

    def take(self, consumer: str, now: float) -> float:
        rate, burst = self._limits[consumer]
        tokens, updated = self._state[consumer]
        tokens, updated, wait_s = take(tokens, updated, now, rate, burst)
        self._state[consumer] = (tokens, updated)
        return wait_s


class SharedRateLimits:
    """The buckets of every process of one server, in a file each of them maps."""

    def __init__(self, path: Path, limits: Mapping[str, tuple[float, float]], now: float) -> None:
        self.path = path
        self._limits = dict(limits)
        self._offsets = {name: _HEADER + i * _SLOT.size for i, name in enumerate(self._limits)}
        size = _HEADER + len(self._limits) * _SLOT.size
        layout = json.dumps(sorted(self._limits.items())).encode()
        header = _MAGIC + hashlib.sha256(layout).digest()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            with self._locked():
                if os.fstat(self._fd).st_size < size:
                    os.ftruncate(self._fd, size)
                if os.pread(self._fd, _HEADER, 0) != header:
                    # New, or written for other consumers: every bucket starts full.
                    slots = b"".join(_SLOT.pack(burst, now) for _, burst in self._limits.values())
                    os.pwrite(self._fd, header + slots, 0)
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise

    def _locked(self) -> _Flock:
        return _Flock(self._fd)

    def take(self, consumer: str, now: float) -> float:
        rate, burst = self._limits[consumer]
        offset = self._offsets[consumer]
        with self._locked():
            tokens, updated = _SLOT.unpack_from(self._map, offset)
            tokens, updated, wait_s = take(tokens, updated, now, rate, burst)
            _SLOT.pack_into(self._map, offset, tokens, updated)
        return wait_s

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class _Flock:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def rate_limits(
    consumers: Mapping[str, ConsumerConfig], now: float, shared: Path | None = None
) -> RateLimits | None:
    """The buckets of the consumers that have a rate (None when none has): in `shared`,
    for a server of several processes, else in this process's memory."""
    limits = _limits(consumers)
    if not limits:
        return None
    if shared is None:
        return LocalRateLimits(limits, now)
    return SharedRateLimits(shared, limits, now)
