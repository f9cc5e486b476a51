"""``sfhfe-node demo``: a whole federation on this machine, on real data.

Starts one coordinator and three clients as separate processes on 127.0.0.1,
each client learning its own contiguous third of the Elec2 electricity-market
stream shipped with the package, uploading insights and gossiping with the
other two. It prints progress, then one row per node, and stops every process
it started, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sfhfe_node.stream import count_rows

__all__ = ["main", "run_demo"]

NODES = 3
STREAM = "builtin:elec2"


@dataclass
class Child:
    """One process the demo started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def _start(name: str, args: list[str], state: Path) -> Child:
    log_path = state / f"{name}.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sfhfe_node", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return Child(name, process, log_path, log)


def _wait_http(url: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer on {url} within {timeout:.0f} s")


def _stop_all(children: list[Child], grace: float = 20.0) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        child.log.close()


def run_demo(
    state: Path,
    *,
    out: IO[str] = sys.stdout,
    gossip_interval: float = 1.0,
    timeout: float = 280.0,
) -> dict[str, Any]:
    """Run the federation with its files under ``state``; return the summary."""
    begun = time.monotonic()
    children: list[Child] = []
    server_port = _free_port()
    gossip_ports = [_free_port() for _ in range(NODES)]
    api_ports = [_free_port() for _ in range(NODES)]
    total = count_rows(STREAM)
    try:
        # The coordinator first: clients upload to it from their first batches.
        server = _start(
            "coordinator",
            [
                "--role",
                "server",
                "--listen",
                f"127.0.0.1:{server_port}",
                "--state-dir",
                str(state / "coordinator"),
            ],
            state,
        )
        children.append(server)
        _wait_http(f"http://127.0.0.1:{server_port}/healthz", server, 60)
        print(f"coordinator listening on 127.0.0.1:{server_port}", file=out)

        # Three clients, each dialling the other two.
        addresses = [f"ws://127.0.0.1:{port}" for port in gossip_ports]
        for i in range(NODES):
            peers = ",".join(a for j, a in enumerate(addresses) if j != i)
            node = f"node-{i + 1}"
            children.append(
                _start(
                    node,
                    [
                        "--role",
                        "client",
                        "--node-id",
                        node,
                        "--server",
                        f"http://127.0.0.1:{server_port}",
                        "--listen",
                        f"127.0.0.1:{gossip_ports[i]}",
                        "--advertise",
                        addresses[i],
                        "--peers",
                        peers,
                        "--api",
                        f"127.0.0.1:{api_ports[i]}",
                        "--stream",
                        STREAM,
                        "--share",
                        f"{i + 1}/{NODES}",
                        "--state-dir",
                        str(state / node),
                        "--predictions",
                        str(state / node / "predictions.jsonl"),
                        "--summary",
                        str(state / node / "summary.json"),
                        "--gossip-interval",
                        str(gossip_interval),
                        "--gossip-cooldown",
                        "5",
                        "--insight-every",
                        "5",
                        "--stay",
                    ],
                    state,
                )
            )
        clients = children[1:]
        for child, port in zip(clients, api_ports):
            _wait_http(f"http://127.0.0.1:{port}/v1/status", child, 120)
        print(
            f"{NODES} clients streaming thirds of Elec2 ({total} records), "
            "gossiping on 127.0.0.1",
            file=out,
        )
        _follow(clients, api_ports, total, begun, timeout, out)

        # Stop the clients (they checkpoint and flush), then the coordinator.
        _stop_all(clients)
        _stop_all([server])
        failed = [c for c in children if c.process.returncode != 0]
        if failed:
            raise RuntimeError(
                ", ".join(
                    f"{c.name} exited with {c.process.returncode}" for c in failed
                )
            )
        nodes = [
            _node_row(state / f"node-{i + 1}" / "summary.json") for i in range(NODES)
        ]
        return {"wall_seconds": round(time.monotonic() - begun, 2), "nodes": nodes}
    except BaseException:
        for child in children:
            if child.process.poll() is not None and child.process.returncode != 0:
                print(f"--- last lines of {child.log_path}", file=out)
                lines = child.log_path.read_text(errors="replace").splitlines()
                print("\n".join(lines[-15:]), file=out)
        raise
    finally:
        _stop_all(children, grace=10.0)


def _follow(
    clients: list[Child],
    api_ports: list[int],
    total: int,
    begun: float,
    timeout: float,
    out: IO[str],
) -> None:
    """Print progress until every client has learned its whole share."""
    last_print = 0.0
    while True:
        statuses = []
        for child, port in zip(clients, api_ports):
            if child.process.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited early with {child.process.returncode}"
                )
            try:
                statuses.append(_get_json(f"http://127.0.0.1:{port}/v1/status"))
            except (urllib.error.URLError, OSError, ValueError):
                statuses.append(None)
        done = all(s is not None and s.get("stream_done") for s in statuses)
        now = time.monotonic()
        if done or now - last_print >= 2.0:
            last_print = now
            parts = []
            for s in statuses:
                if s is None:
                    parts.append("?")
                    continue
                accuracy = s.get("accuracy")
                shown = "-" if accuracy is None else f"{accuracy:.3f}"
                parts.append(f"{s['node_id']} {s['records']:>6} acc {shown}")
            print(f"[{now - begun:5.1f}s] " + " | ".join(parts), file=out, flush=True)
        if done:
            return
        if now - begun > timeout:
            raise RuntimeError(f"demo did not finish within {timeout:.0f} s")
        time.sleep(0.5)


def _node_row(path: Path) -> dict[str, Any]:
    summary = json.loads(path.read_text())
    return {
        "node_id": summary["node_id"],
        "records": summary["records"],
        "accuracy": summary["accuracy"],
        "no_change_accuracy": summary["no_change_accuracy"],
        "insights_acked": summary["insights_acked"],
        "gossip_sent": summary["gossip_sent"],
        "gossip_accepted": summary["gossip_accepted"],
        "gossip_rejected": summary["gossip_rejected"],
        "peer_weight": summary.get("peer_weight", 0.0),
        "peer_helped": summary.get("peer_helped", 0),
        "peer_hurt": summary.get("peer_hurt", 0),
        "peers": summary["peers"],
    }


def format_table(report: dict[str, Any]) -> str:
    """The summary as a fixed-width table, one row per node."""
    header = (
        f"{'node':<8} {'records':>8} {'accuracy':>9} {'no-change':>10} "
        f"{'insights':>9} {'sent':>6} {'accepted':>9} {'rejected':>9} "
        f"{'peer share':>10} {'helped/hurt':>11}  peers"
    )
    lines = [header, "-" * len(header)]
    for node in report["nodes"]:
        lines.append(
            f"{node['node_id']:<8} {node['records']:>8} {_pct(node['accuracy']):>9} "
            f"{_pct(node['no_change_accuracy']):>10} {node['insights_acked']:>9} "
            f"{node['gossip_sent']:>6} {node['gossip_accepted']:>9} "
            f"{node['gossip_rejected']:>9} {node['peer_weight']:>10.3f} "
            f"{node['peer_helped']:>5}/{node['peer_hurt']:<5}  "
            f"{','.join(node['peers']) or '-'}"
        )
    lines.append(f"wall time {report['wall_seconds']:.1f} s")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sfhfe-node demo``."""
    parser = argparse.ArgumentParser(
        prog="sfhfe-node demo",
        description="Run a coordinator and three clients on 127.0.0.1 on Elec2.",
    )
    parser.add_argument("--report", type=Path, help="also write the summary as JSON")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep the nodes' files here (default: a temporary folder)",
    )
    parser.add_argument(
        "--gossip-interval",
        type=float,
        default=1.0,
        help="seconds between weight exchanges (default 1)",
    )
    args = parser.parse_args(argv)
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="sfhfe-demo-"))
    state.mkdir(parents=True, exist_ok=True)
    try:
        report = run_demo(state, gossip_interval=args.gossip_interval)
    except (RuntimeError, OSError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    finally:
        if args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
    print()
    print(format_table(report))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.report}")
    return 0
