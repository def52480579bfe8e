"""An open-loop HTTP load generator: requests arrive on a schedule, whether or not earlier
ones were answered, so an overloaded server shows up as latency instead of hiding it
(no coordinated omission: latency is measured from each request's scheduled time).

    python benchmarks/loadgen.py URL BODY_FILE --phases 500:5,3000:5,500:5 [--connections 256]

Prints one JSON object: per phase, the offered rate, answers per second by status, the
share of default answers, and p50/p99 latency in ms. Runs as its own process.

With `--grpc`, a closed-loop load of v2 gRPC ModelInfer calls instead, as wrk makes for
HTTP: `--concurrency` callers each send BODY_FILE (a serialized ModelInferRequest, sent
as is: the client spends nothing on protobuf) and wait for its answer, for `--seconds`,
over `--channels` connections (each its own TCP connection, so that several server
processes sharing the port all get some):

    python benchmarks/loadgen.py --grpc HOST:PORT BODY_FILE --concurrency 64 --seconds 10

Prints req_per_s, p50_ms, p99_ms and the count of each status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np


class Connection:
    """One keep-alive HTTP/1.1 connection sending one request at a time."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> tuple[int, bool]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise RuntimeError(repr(head)) from None
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return status, "gyre-default" in headers


async def run(url: str, body: bytes, phases: list[tuple[float, float]], connections: int,
              seed: int) -> dict[str, Any]:  # fmt: skip
    parts = urlsplit(url)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(parts.hostname or "127.0.0.1", parts.port or 80, request))
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    results: list[list[tuple[float, int, bool]]] = [[] for _ in phases]
    tasks: set[asyncio.Task[None]] = set()

    async def fire(phase: int, scheduled: float) -> None:
        connection = await pool.get()
        try:
            status, default = await connection.send()
        except (OSError, asyncio.IncompleteReadError):
            connection.writer = None
            status, default = 0, False
        pool.put_nowait(connection)
        results[phase].append((loop.time() - scheduled, status, default))

    start = loop.time()
    at = start
    for index, (rate, seconds) in enumerate(phases):
        end = at + seconds
        while True:
            at += rng.expovariate(rate)  # Poisson arrivals
            if at >= end:
                at = end
                break
            delay = at - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            task = asyncio.create_task(fire(index, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    report = []
    for (rate, seconds), rows in zip(phases, results, strict=True):
        latencies = np.array([r[0] for r in rows]) * 1000
        statuses: dict[str, int] = {}
        for _, status, _ in rows:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        ok = statuses.get("200", 0)
        defaults = sum(1 for r in rows if r[2])
        report.append(
            {
                "offered_per_s": rate,
                "seconds": seconds,
                "answered_200_per_s": round(ok / seconds, 1),
                "statuses": statuses,
                "default_ratio": round(defaults / ok, 4) if ok else 0.0,
                "p50_ms": round(float(np.percentile(latencies, 50)), 2) if len(rows) else None,
                "p99_ms": round(float(np.percentile(latencies, 99)), 2) if len(rows) else None,
            }
        )
    return {"phases": report}


GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


async def run_grpc(
    address: str, body: bytes, concurrency: int, seconds: float, channels: int
) -> dict[str, Any]:
    import grpc
    from grpc import aio

    # A channel of its own subchannel pool is a connection of its own.
    opened = [
        aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, min(channels, concurrency)))
    ]
    calls = [channel.unary_unary(GRPC_INFER) for channel in opened]  # bytes in, bytes out
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    end = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        call = calls[index % len(calls)]
        while True:
            start = time.perf_counter()
            if start >= end:
                return
            try:
                await call(body, timeout=30)
                status = "OK"
            except grpc.RpcError as exc:
                status = exc.code().name
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
    finally:
        for channel in opened:
            await channel.close()
    elapsed = time.perf_counter() - started
    milliseconds = np.array(latencies) * 1000
    return {
        "req_per_s": round(statuses.get("OK", 0) / elapsed, 1),
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 3) if latencies else None,
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 3) if latencies else None,
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="http://HOST:PORT/PATH, or HOST:PORT with --grpc")
    parser.add_argument("body_file")
    parser.add_argument("--phases", help="RATE:SECONDS,… e.g. 500:5,3000:5")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grpc", action="store_true", help="closed-loop v2 gRPC ModelInfer")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=4)
    args = parser.parse_args()
    with open(args.body_file, "rb") as f:
        body = f.read()
    import uvloop

    if args.grpc:
        grpc_load = run_grpc(args.url, body, args.concurrency, args.seconds, args.channels)
        print(json.dumps(uvloop.run(grpc_load)))
        return
    if args.phases is None:
        parser.error("--phases is required (or --grpc)")
    phases = [(float(r), float(s)) for r, s in (p.split(":") for p in args.phases.split(","))]
    print(json.dumps(uvloop.run(run(args.url, body, phases, args.connections, args.seed))))


if __name__ == "__main__":
    main()
