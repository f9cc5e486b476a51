"""Measure the coordinator's upload throughput and latency.

Usage::

    python scripts/bench_coordinator.py [--clients 10,100,1000]
        [--durability normal,full] [--seconds 5] [--json PATH]

For each durability level the script starts a real coordinator process
(``python -m sfhfe_node --role server``) on 127.0.0.1 with a fresh database,
then for each client count starts a separate load process that opens one
keep-alive HTTP/1.1 connection per simulated client and posts msgpack
insights in a closed loop (each client waits for its reply before its next
upload) for ``--seconds`` after a short warm-up. Every insight is new (its own
``(node_id, seq)``), so every upload is a committed write. It prints a table
of uploads per second and latency p50 / p99 and, with ``--json``, writes
``{"runs": [{"clients", "durability", "uploads_per_s", "p50_ms", "p99_ms",
"errors"}]}``.

The load process is written on bare asyncio streams rather than an HTTP
client library so that it spends as little of the shared CPU as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack

__all__ = ["main", "make_insight", "run_load"]

HOST = "127.0.0.1"
EXPERTS = (
    "geometry", "temporal", "reconstruction", "causal", "drift",
    "governance", "consistency", "peer", "meta", "memory",
)
WARMUP_SECONDS = 1.0


def make_insight(node_id: str, seq: int, rng: random.Random) -> dict[str, Any]:
    """An insight shaped like a real client's, with plausible random values."""
    experts = {}
    for name in EXPERTS:
        start = rng.uniform(0.2, 0.9)
        experts[name] = {
            "lr": rng.choice((0.001, 0.003, 0.01, 0.03)),
            "loss_start": start,
            "loss_end": start * rng.uniform(0.7, 1.05),
            "usage": rng.random(),
            "samples": rng.randint(0, 320),
        }
    return {
        "schema": 1,
        "node_id": node_id,
        "seq": seq,
        "time": time.time(),
        "task": "classification",
        "records": 320 * (seq + 1),
        "window": {
            "records": 320,
            "loss": rng.uniform(0.2, 0.7),
            "accuracy": rng.uniform(0.6, 0.9),
        },
        "experts": experts,
        "drift": {"events": int(rng.random() < 0.02), "active": rng.random() < 0.01},
        "memory_bytes": rng.randint(10**6, 10**8),
        "embedding": [rng.uniform(-1, 1) for _ in range(16)],
        "gossip": f"ws://127.0.0.1:{7000 + seq % 1000}",
    }


# The load process.


async def _client(
    port: int,
    node_id: str,
    deadline: float,
    measure_from: float,
    latencies: list[float],
    counters: dict[str, int],
    token: str | None,
) -> None:
    rng = random.Random(node_id)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    seq = 0
    writer = None
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        while time.monotonic() < deadline:
            body = msgpack.packb(make_insight(node_id, seq, rng))
            head = (
                f"POST /v1/insights HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                f"Content-Type: application/msgpack\r\n{auth}"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.monotonic()
            writer.write(head + body)
            status = await _read_reply(reader)
            finished = time.monotonic()
            seq += 1
            if finished < measure_from:
                continue
            if status == 200:
                counters["ok"] += 1
                latencies.append(finished - started)
            else:
                counters["errors"] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        counters["errors"] += 1
    finally:
        if writer is not None:
            writer.close()


async def _read_reply(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def run_load(
    port: int, clients: int, seconds: float, prefix: str, token: str | None
) -> dict[str, Any]:
    """Drive ``clients`` closed-loop uploaders for ``seconds``; return figures."""
    latencies: list[float] = []
    counters = {"ok": 0, "errors": 0}
    now = time.monotonic()
    measure_from = now + WARMUP_SECONDS
    deadline = measure_from + seconds
    await asyncio.gather(
        *(
            _client(port, f"{prefix}-{i}", deadline, measure_from, latencies,
                    counters, token)
            for i in range(clients)
        )
    )
    latencies.sort()

    def quantile(q: float) -> float:
        if not latencies:
            return float("nan")
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "clients": clients,
        "uploads_per_s": counters["ok"] / seconds,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "errors": counters["errors"],
    }


# The driver.


def _start_server(port: int, state: Path, durability: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "sfhfe_node", "--role", "server",
        "--listen", f"{HOST}:{port}", "--state-dir", str(state),
        "--durability", durability, "--log-level", "warning",
    ]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"coordinator exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("coordinator did not become ready within 30 s")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _load_process(port: int, clients: int, seconds: float, prefix: str) -> dict:
    command = [
        sys.executable, __file__, "--load", "--port", str(port),
        "--clients", str(clients), "--seconds", str(seconds), "--prefix", prefix,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"load process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--load``, one load process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,100,1000")
    parser.add_argument("--durability", default="normal,full")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="b", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")

    if args.load:
        try:
            import uvloop
        except ImportError:
            run = asyncio.run
        else:
            run = uvloop.run
        token = os.environ.get("SFHFE_BENCH_TOKEN")
        result = run(
            run_load(args.port, int(args.clients), args.seconds, args.prefix, token)
        )
        print(json.dumps(result))
        return 0

    counts = [int(part) for part in args.clients.split(",")]
    levels = args.durability.split(",")
    runs = []
    print(f"{'durability':>10} {'clients':>7} {'uploads/s':>10} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    with tempfile.TemporaryDirectory(prefix="sfhfe-bench-") as folder:
        for level in levels:
            port = _free_port()
            server = _start_server(port, Path(folder) / level, level)
            try:
                for count in counts:
                    result = _load_process(port, count, args.seconds, f"{level}{count}")
                    result["durability"] = level
                    runs.append(result)
                    print(f"{level:>10} {count:>7} {result['uploads_per_s']:>10.0f} "
                          f"{result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f} "
                          f"{result['errors']:>6}", flush=True)
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
