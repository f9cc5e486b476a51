"""Measure what gossip is worth: four real client processes on Elec2.

Elec2 is split into four shares, contiguous (``--share I/4``) and round-robin
(record ``r`` goes to node ``r mod 4``; the share files are written to a temp
directory). For each split the four nodes run once gossiping with each other
and once isolated (no ``--peers``), and the script prints each node's
prequential accuracy side by side. Then a Byzantine run on the contiguous
split: nodes 1-3 are honest, node 4 is an attacker written here, speaking the
real protocol, that copies each victim's embedding (to look as similar as
possible), claims 10**9 records, and every round sends the victim's own
latest weights sign-flipped, scaled by 100 or with NaN values, in rotation.
The honest nodes' accuracy is compared with the same nodes in the gossip run
without an attacker.

No coordinator runs (no ``--server``: the clients do not upload). Everything
stays on 127.0.0.1; each run is bounded by ``--timeout``. Usage::

    python scripts/bench_federation.py [--rate 1000] [--interval 0.5]
        [--splits contiguous,round_robin] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sfhfe_node.gossip.protocol import Hello, Weights, decode, encode

ELEC2 = ROOT.parent / "shared" / "data" / "elec2.csv"
NODES = 4
ATTACKER = "node-4"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_round_robin(source: Path, folder: Path) -> list[Path]:
    """Write the four round-robin share files; return their paths."""
    paths = [folder / f"share-{i + 1}.csv" for i in range(NODES)]
    files = [open(path, "w", newline="", encoding="utf-8") for path in paths]
    try:
        writers = [csv.writer(file) for file in files]
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            for writer in writers:
                writer.writerow(header)
            for index, row in enumerate(reader):
                writers[index % NODES].writerow(row)
    finally:
        for file in files:
            file.close()
    return paths


class Client:
    """One ``sfhfe-node --role client`` process."""

    def __init__(
        self, node_id: str, stream: list[str], folder: Path, args: argparse.Namespace
    ) -> None:
        self.node_id = node_id
        self.port = free_port()
        self.api = free_port()
        self.address = f"ws://127.0.0.1:{self.port}"
        self.summary = folder / f"{node_id}.json"
        self.command = [
            sys.executable, "-m", "sfhfe_node", "--role", "client",
            "--node-id", node_id,
            "--listen", f"127.0.0.1:{self.port}", "--advertise", self.address,
            "--api", f"127.0.0.1:{self.api}", *stream, "--target", "class",
            "--state-dir", str(folder / node_id),
            "--predictions", str(folder / f"{node_id}.jsonl"),
            "--summary", str(self.summary),
            "--gossip-interval", str(args.interval), "--gossip-k", "3",
            "--gossip-margin", "0.05", "--gossip-cooldown", "5",
            "--rate", str(args.rate), "--stay", "--batch-size", "32",
        ]
        self.log = folder / f"{node_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, peers: list[str]) -> None:
        command = self.command + (["--peers", ",".join(peers)] if peers else [])
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "SFHFE_LOG_LEVEL": "info"},
            )

    def status(self) -> dict[str, Any] | None:
        try:
            with _NO_PROXY.open(
                f"http://127.0.0.1:{self.api}/v1/status", timeout=2.0
            ) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the client's log (the folder is temporary)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> dict[str, Any]:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self.summary.exists():
            raise RuntimeError(
                f"{self.node_id} wrote no summary; the end of its log:\n"
                f"{self.log_tail()}"
            )
        return json.loads(self.summary.read_text())


async def wait_done(clients: list[Client], timeout: float) -> None:
    """Wait until every client's stream is done (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = await asyncio.gather(
            *(asyncio.to_thread(client.status) for client in clients)
        )
        for client in clients:
            assert client.process is not None
            if client.process.poll() is not None:
                raise RuntimeError(
                    f"{client.node_id} exited {client.process.returncode}; the end "
                    f"of its log:\n{client.log_tail()}"
                )
        if all(state is not None and state.get("stream_done") for state in states):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"streams not done within {timeout} s")


class Attacker:
    """A Byzantine peer: speaks the protocol, sends poisoned copies of weights."""

    def __init__(self, interval: float) -> None:
        self.port = free_port()
        self.address = f"ws://127.0.0.1:{self.port}"
        self.interval = interval
        self.sent = {"sign_flip": 0, "scaled": 0, "nan": 0}
        self.acks: dict[str, int] = {}

    async def serve(self, ws: ServerConnection) -> None:
        latest: dict[str, dict[str, np.ndarray]] = {}
        hello = decode(await ws.recv())
        if not isinstance(hello, Hello):
            return
        await ws.send(encode(self._echo(hello)))
        sender = asyncio.create_task(self._poison_forever(ws, latest))
        try:
            async for frame in ws:
                message = decode(frame)
                if isinstance(message, Hello):
                    await ws.send(encode(self._echo(message)))
                elif isinstance(message, Weights):
                    latest.update(
                        {e: {n: v.copy() for n, v in p.items()}
                         for e, p in message.experts.items()}
                    )
                elif message.TYPE == "ack":
                    reason = getattr(message, "reason", "")
                    self.acks[reason] = self.acks.get(reason, 0) + 1
        except ConnectionClosed:
            return  # the node closed the link: the attack run is over
        finally:
            sender.cancel()

    def _echo(self, hello: Hello) -> Hello:
        return Hello(ATTACKER, self.address, hello.embedding, hello.usage, 10**9)

    async def _poison_forever(
        self, ws: ServerConnection, latest: dict[str, dict[str, np.ndarray]]
    ) -> None:
        version = 0
        while True:
            await asyncio.sleep(self.interval)
            if not latest:
                continue
            version += 1
            mode = ("sign_flip", "scaled", "nan")[version % 3]
            experts = {e: _poison(p, mode) for e, p in latest.items()}
            try:
                await ws.send(encode(Weights(ATTACKER, experts, 10**9, version)))
            except ConnectionClosed:
                return
            self.sent[mode] += 1


def _poison(params: dict[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    if mode == "sign_flip":
        return {name: -value for name, value in params.items()}
    if mode == "scaled":
        return {name: value * np.float32(100.0) for name, value in params.items()}
    poisoned = {name: value.copy() for name, value in params.items()}
    for value in poisoned.values():
        value.reshape(-1)[:: max(1, value.size // 4)] = np.nan
    return poisoned


async def run_once(
    split: str, mode: str, streams: list[list[str]], args: argparse.Namespace,
    folder: Path,
) -> dict[str, Any]:
    """Run four nodes (or three and the attacker) once; return the run record."""
    folder.mkdir(parents=True)
    honest = NODES - 1 if mode == "byzantine" else NODES
    clients = [
        Client(f"node-{i + 1}", streams[i], folder, args) for i in range(honest)
    ]
    attacker = Attacker(args.interval) if mode == "byzantine" else None
    server = None
    if attacker is not None:
        server = await serve(attacker.serve, "127.0.0.1", attacker.port)
    began = time.monotonic()
    try:
        for client in clients:
            peers = [] if mode == "isolated" else [
                other.address for other in clients if other is not client
            ]
            if attacker is not None:
                peers.append(attacker.address)
            client.start(peers)
        await wait_done(clients, args.timeout)
    finally:
        summaries = [await asyncio.to_thread(client.stop) for client in clients]
        if server is not None:
            server.close()
            await server.wait_closed()
    nodes = [
        {
            "node_id": summary["node_id"],
            "honest": True,
            "records": int(summary["records"]),
            "accuracy": float(summary["accuracy"]),
            "gossip_sent": summary.get("gossip_sent", 0),
            "gossip_accepted": summary.get("gossip_accepted", 0),
            "gossip_rejected_by_reason": summary.get("gossip_rejected_by_reason", {}),
            "peer_weight": summary.get("peer_weight", 0.0),
            "peer_helped": summary.get("peer_helped", 0),
            "peer_hurt": summary.get("peer_hurt", 0),
            "peer_models": {
                peer: model["weight"]
                for peer, model in summary.get("peer_models", {}).items()
            },
        }
        for summary in summaries
    ]
    if attacker is not None:
        nodes.append(
            {"node_id": ATTACKER, "honest": False, "records": 0, "accuracy": 0.0,
             "poisoned_frames": dict(attacker.sent), "acks": dict(attacker.acks)}
        )
    print(f"  {split:<12} {mode:<10} done in {time.monotonic() - began:.1f} s")
    return {"split": split, "mode": mode, "nodes": nodes}


def mean_accuracy(run: dict[str, Any], only: set[str] | None = None) -> float:
    values = [
        node["accuracy"] for node in run["nodes"]
        if node["honest"] and (only is None or node["node_id"] in only)
    ]
    return sum(values) / len(values)


def report(runs: list[dict[str, Any]]) -> None:
    by_key = {(run["split"], run["mode"]): run for run in runs}
    for split in dict.fromkeys(run["split"] for run in runs):
        gossip = by_key.get((split, "gossip"))
        isolated = by_key.get((split, "isolated"))
        if gossip is None or isolated is None:
            continue
        print(f"\n{split}: prequential accuracy per node")
        print(
            f"  {'node':<8} {'records':>8} {'isolated':>9} {'gossip':>9} "
            f"{'gain pp':>8}"
        )
        alone = {node["node_id"]: node for node in isolated["nodes"]}
        for node in gossip["nodes"]:
            base = alone[node["node_id"]]["accuracy"]
            print(
                f"  {node['node_id']:<8} {node['records']:>8} {base:>9.4f} "
                f"{node['accuracy']:>9.4f} {100 * (node['accuracy'] - base):>+8.2f}"
            )
        gain = mean_accuracy(gossip) - mean_accuracy(isolated)
        print(
            f"  {'mean':<8} {'':>8} {mean_accuracy(isolated):>9.4f} "
            f"{mean_accuracy(gossip):>9.4f} {100 * gain:>+8.2f}"
        )
        attacked = by_key.get((split, "byzantine"))
        if attacked is None:
            continue
        honest = {node["node_id"] for node in attacked["nodes"] if node["honest"]}
        clean = {node["node_id"]: node["accuracy"] for node in gossip["nodes"]}
        print(f"\n{split}: honest nodes with one attacker of four")
        print(f"  {'node':<8} {'no attack':>10} {'attacked':>9} {'diff pp':>8}")
        for node in attacked["nodes"]:
            if node["honest"]:
                diff = node["accuracy"] - clean[node["node_id"]]
                print(
                    f"  {node['node_id']:<8} {clean[node['node_id']]:>10.4f} "
                    f"{node['accuracy']:>9.4f} {100 * diff:>+8.2f}"
                )
        worst = min(
            node["accuracy"] - clean[node["node_id"]]
            for node in attacked["nodes"] if node["honest"]
        )
        diff = mean_accuracy(attacked) - mean_accuracy(gossip, honest)
        print(f"  {'mean':<8} {mean_accuracy(gossip, honest):>10.4f} "
              f"{mean_accuracy(attacked):>9.4f} {100 * diff:>+8.2f}"
              f"   (worst node {100 * worst:+.2f} pp)")
        for node in attacked["nodes"]:
            if not node["honest"]:
                print(f"  attacker frames {node['poisoned_frames']}, "
                      f"acks {node['acks']}")
            else:
                print(f"  {node['node_id']} rejected "
                      f"{node['gossip_rejected_by_reason']}")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as temp:
        folder = Path(temp)
        for split in args.splits:
            if split == "contiguous":
                streams = [
                    ["--stream", f"csv:{ELEC2}", "--share", f"{i + 1}/{NODES}"]
                    for i in range(NODES)
                ]
            else:
                paths = write_round_robin(ELEC2, folder)
                streams = [["--stream", f"csv:{path}"] for path in paths]
            modes = ["gossip", "isolated"]
            if split in args.byzantine:
                modes.append("byzantine")
            for mode in modes:
                place = folder / f"{split}-{mode}"
                runs.append(await run_once(split, mode, streams, args, place))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="records per second per node (default 1000)")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="gossip interval in seconds (default 0.5)")
    parser.add_argument("--splits", default="contiguous,round_robin",
                        help="comma-separated: contiguous, round_robin")
    parser.add_argument("--byzantine", default="contiguous,round_robin",
                        help="splits that also get a Byzantine run ('' for none)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="most seconds per run (default 300)")
    parser.add_argument("--json", type=Path, help="write the runs here")
    args = parser.parse_args(argv)
    args.splits = [s for s in args.splits.split(",") if s]
    args.byzantine = {s for s in args.byzantine.split(",") if s}
    for split in args.splits:
        if split not in ("contiguous", "round_robin"):
            parser.error(f"unknown split {split!r}")
    print(f"rate {args.rate} rec/s per node, gossip interval {args.interval} s, "
          f"k 3, margin 0.05, cooldown 5 s")
    runs = asyncio.run(main_async(args))
    report(runs)
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
