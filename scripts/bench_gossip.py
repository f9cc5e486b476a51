"""Benchmark the gossip wire format and one exchange over real websockets.

For each payload -- what a node sends one peer per round (every expert of a
real learner built for Elec2: 6 features, 16 classes, in one frame) and one
synthetic expert of 1,000,000 parameters -- it measures:

- ``raw_bytes``: the float32 bytes of the weights, and ``wire_bytes``: the
  signed frame that carries them (the ratio must stay <= 1.05);
- ``encode_us`` / ``decode_us``: median time to sign and encode, and to verify
  and decode, one frame (MAC included);
- ``p50_ms`` / ``p99_ms``: one exchange on 127.0.0.1 -- encode, send, the
  receiving :class:`GossipNode` authenticates, decodes, checks and buffers
  the update and answers ``ack`` -- timed until the ack is decoded.

Loops are bounded; everything stays on 127.0.0.1. Usage::

    python scripts/bench_gossip.py [--rounds 200] [--big-rounds 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sfhfe_node.gossip.merge import blend_params, params_norm
from sfhfe_node.gossip.node import GossipNode
from sfhfe_node.gossip.protocol import Ack, Hello, Weights, decode, encode
from sfhfe_node.learner import Learner

KEY = b"benchmark-cluster-key-0123456789"
BIG = "big"
BIG_SHAPE = (1000, 1000)


class BenchHost:
    """A gossip host over fixed numpy weights (the real learner's, plus one big)."""

    def __init__(self, weights: dict[str, dict[str, np.ndarray]]) -> None:
        self.weights = weights
        self.spec = {
            name: {key: tuple(value.shape) for key, value in params.items()}
            for name, params in weights.items()
        }
        self.norms = {name: params_norm(params) for name, params in weights.items()}

    def embedding(self) -> np.ndarray:
        return np.ones(16, np.float32)

    def expert_usage(self) -> dict[str, float]:
        return {name: 0.0 for name in self.weights}

    def records(self) -> int:
        return 10_000

    def weight_spec(self) -> dict[str, dict[str, tuple[int, ...]]]:
        return self.spec

    async def export_experts(
        self, names: list[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        return {name: self.weights[name] for name in names}

    async def import_expert(
        self, expert: str, params: dict[str, np.ndarray], factor: float
    ) -> None:
        self.weights[expert] = blend_params(self.weights[expert], params, factor)

    async def keep_peer_weights(
        self, updates: dict[str, dict[str, dict[str, np.ndarray]]]
    ) -> int:
        return 0

    def own_norm(self, expert: str) -> float:
        return self.norms[expert]


def real_weights() -> dict[str, dict[str, np.ndarray]]:
    """The exchanged weights of a learner built for Elec2, plus the big expert."""
    learner = Learner(6, task="classification", max_classes=16, seed=0)
    weights = {name: learner.export_expert(name) for name in learner.weight_spec()}
    rng = np.random.default_rng(0)
    weights[BIG] = {"w": rng.normal(0.0, 0.05, BIG_SHAPE).astype(np.float32)}
    return weights


def payloads(
    weights: dict[str, dict[str, np.ndarray]],
) -> list[tuple[str, dict[str, dict[str, np.ndarray]]]]:
    """(label, experts) per exchange: the learner's bank, then the big expert."""
    rng = np.random.default_rng(1)
    nudged = {
        expert: {
            name: (value + rng.normal(0, 0.01, value.shape)).astype(np.float32)
            for name, value in params.items()
        }
        for expert, params in weights.items()
    }
    bank = {name: params for name, params in nudged.items() if name != BIG}
    return [(f"elec2 x{len(bank)}", bank), ("1M", {BIG: nudged[BIG]})]


def time_codec(message: Weights, cap: int, repeat: int) -> tuple[float, float, int]:
    """Median encode and decode time in microseconds, and the frame size."""
    encode_times, decode_times = [], []
    frame = encode(message, KEY)
    for _ in range(repeat):
        begin = time.perf_counter()
        frame = encode(message, KEY)
        middle = time.perf_counter()
        decode(frame, cap, KEY)
        end = time.perf_counter()
        encode_times.append(middle - begin)
        decode_times.append(end - middle)
    return (
        statistics.median(encode_times) * 1e6,
        statistics.median(decode_times) * 1e6,
        len(frame),
    )


async def open_peer(node: GossipNode) -> ClientConnection:
    """A bare client that has done its hello with ``node``."""
    ws = await connect(
        f"ws://127.0.0.1:{node.port}", proxy=None, compression=None,
        max_size=node.max_frame,
    )
    await ws.recv()
    hello = Hello("bench", None, np.ones(16, np.float32), {}, 10_000)
    await ws.send(encode(hello, KEY))
    return ws


async def time_exchanges(
    ws: ClientConnection, experts: dict[str, dict[str, np.ndarray]], rounds: int
) -> list[float]:
    """Milliseconds from encoding a weights frame to decoding its ack."""
    latencies = []
    for version in range(rounds):
        begin = time.perf_counter()
        message = Weights("bench", experts, 10_000, version)
        await ws.send(encode(message, KEY))
        while True:
            reply = decode(await ws.recv(), 2**24, KEY)
            if isinstance(reply, Ack) and reply.ref == message.nonce:
                break
        latencies.append((time.perf_counter() - begin) * 1e3)
        if not reply.accepted:
            raise RuntimeError(f"exchange refused: {reply.reason}")
    return latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


async def run(rounds: int, big_rounds: int) -> list[dict[str, Any]]:
    weights = real_weights()
    node = GossipNode(
        "receiver", BenchHost(weights), listen=("127.0.0.1", 0), advertise=None,
        peers=[], cluster_key=KEY, interval=3600.0,
    )
    await node.start()
    assert node.max_frame is not None
    rows = []
    try:
        ws = await open_peer(node)
        for label, experts in payloads(weights):
            count = rounds if BIG not in experts else big_rounds
            message = Weights("bench", experts, 10_000, 1)
            enc, dec, wire = time_codec(message, node.max_frame, count)
            latencies = await time_exchanges(ws, experts, count)
            raw = sum(v.nbytes for params in experts.values() for v in params.values())
            rows.append(
                {
                    "payload": label,
                    "params": raw // 4,
                    "raw_bytes": raw,
                    "wire_bytes": wire,
                    "encode_us": round(enc, 1),
                    "decode_us": round(dec, 1),
                    "p50_ms": round(percentile(latencies, 0.50), 3),
                    "p99_ms": round(percentile(latencies, 0.99), 3),
                    "rounds": count,
                }
            )
        await ws.close()
    finally:
        await node.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200,
                        help="exchanges per real expert (default 200)")
    parser.add_argument("--big-rounds", type=int, default=30,
                        help="exchanges of the 1M-parameter payload (default 30)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = asyncio.run(run(max(args.rounds, 1), max(args.big_rounds, 1)))
    header = (
        f"{'payload':<10} {'params':>9} {'raw B':>9} {'wire B':>9} {'wire/raw':>8} "
        f"{'enc us':>8} {'dec us':>8} {'p50 ms':>7} {'p99 ms':>7}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['payload']:<10} {row['params']:>9} {row['raw_bytes']:>9} "
            f"{row['wire_bytes']:>9} {row['wire_bytes'] / row['raw_bytes']:>8.4f} "
            f"{row['encode_us']:>8.1f} {row['decode_us']:>8.1f} "
            f"{row['p50_ms']:>7.3f} {row['p99_ms']:>7.3f}"
        )
    worst = max(row["wire_bytes"] / row["raw_bytes"] for row in rows)
    print(f"worst wire/raw ratio {worst:.4f} (limit 1.05): "
          f"{'ok' if worst <= 1.05 else 'OVER'}")
    if args.json is not None:
        args.json.write_text(json.dumps({"exchanges": rows}, indent=2))
    return 0 if worst <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
