"""Measure what the coordinator's meta-parameters do for a small federation.

Usage::

    python scripts/bench_meta.py [--nodes 4] [--rows 0] [--level 0.15]
        [--window 500] [--insight-every 5] [--ablation] [--repeats 1]
        [--stagger 0] [--meta-options JSON] [--data CSV] [--json PATH]

Runs the same federation twice on Elec2 (``../shared/data/elec2.csv`` beside the checkout or
``--data``): a real coordinator process and ``--nodes`` real client
processes, client *i* learning from the *i*-th contiguous share of the rows.
In the first run the clients apply the meta-parameters the coordinator sends
back; in the second they run with ``--ignore-meta`` (they still upload, so
the coordinator's load is the same). Everything else, seeds included, is
identical, and the clients have no gossip peers and ask the coordinator for
none (``--discovery-interval 0``), so the difference between the runs is the
meta-parameters alone. ``--meta-options`` gives the first run's coordinator
settings (for instance ``'{"meta_first_samples": 20}'``). ``--ablation`` adds
two runs with the meta-parameters applied but only one half of the method
active: "priors only" (no exploration and every node in the exploit set, so
the rates stay at the clients' defaults) and "rates only" (a temperature so
high that every prior is 1.0, which shifts every expert's score alike).
Runs with settings start the coordinator through this script's ``--serve``
mode; the others use ``python -m sfhfe_node --role server`` unchanged.

Measurement. Each client writes one prediction per record, made before the
record is learned. Per node the script reports the prequential accuracy
(share of those predictions equal to the record's label, over the node's
whole share) and the records to the loss level: the first record count
``t >= --window`` at which the 0-1 loss (error rate) over records
``t - window + 1 .. t`` is at or below ``--level`` (default: at most 15 %
errors over 500 records; ``never`` if it is not reached, and the fewest
possible is the window itself). Then the averages over nodes, and the paired
gain: per repeat, the meta run's mean accuracy minus the ignoring run's, the
two runs made back to back on the same code. The meta runs are not
deterministic (when each meta version reaches a node depends on timing),
so ``--repeats R`` runs every federation R times and reports means, the
spread over runs and every paired gain; a gain helps only if it is larger
than that spread. A run whose processes fail to start (a port taken between
picking and binding it) is made again, up to three times. ``--stagger N``
starts each client only once the previous one has learned N records, as
nodes joining a running federation do: the late ones get meta-parameters
learned from the others from their first upload on. ``--json PATH`` writes
every figure.

The package is imported from this script's repository; when other people
edit the learner meanwhile, compare only the two arms of one invocation, or
run the script from a copy of the repository taken for the measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["main", "records_to_level"]

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "elec2.csv"
RUN_LIMIT_SECONDS = 1800
ATTEMPTS = 3
ABLATIONS: dict[str, dict[str, Any]] = {
    "priors_only": {"meta_explore": [1.0], "meta_top_quantile": 1.0},
    "rates_only": {"meta_temperature": 1e6},
}


def records_to_level(errors: list[int], window: int, level: float) -> int | None:
    """First record count at which the windowed error rate is <= ``level``."""
    total = 0
    for i, error in enumerate(errors):
        total += error
        if i >= window:
            total -= errors[i - window]
        if i + 1 >= window and total / window <= level:
            return i + 1
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within 30 s")


def _wait_records(api: int, records: int, process: subprocess.Popen[bytes]) -> None:
    url = f"http://{HOST}:{api}/v1/status"
    deadline = time.monotonic() + RUN_LIMIT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            with urllib.request.urlopen(url, timeout=1) as reply:
                if json.load(reply)["records"] >= records:
                    return
        time.sleep(0.1)


def _labels(path: Path, target: str) -> list[str]:
    with path.open(newline="") as handle:
        return [row[target].strip() for row in csv.DictReader(handle)]


def _node_errors(predictions: Path, labels: list[str], first: int) -> list[int]:
    errors = []
    with predictions.open() as handle:
        for line in handle:
            entry = json.loads(line)
            index = entry["index"]
            truth = labels[index if index >= first else first + index]
            errors.append(int(str(entry["prediction"]) != truth))
    return errors


def run_federation(
    data: Path,
    nodes: int,
    folder: Path,
    ignore_meta: bool,
    insight_every: int,
    options: dict[str, Any] | None = None,
    stagger: int = 0,
) -> list[dict[str, Any]]:
    """Run one federation to the end of its streams; return each node's summary.

    ``options`` are CoordinatorConfig settings; with them the coordinator is
    started through ``--serve`` instead of the command line. With
    ``stagger`` each client starts once the previous one has learned that
    many records, as nodes joining a running federation would.
    """
    port = _free_port()
    if options is None:
        command = [
            sys.executable, "-m", "sfhfe_node", "--role", "server",
            "--listen", f"{HOST}:{port}", "--state-dir", str(folder / "server"),
            "--log-level", "warning",
        ]
    else:
        command = [
            sys.executable, __file__, "--serve", "--port", str(port),
            "--state", str(folder / "server"), "--options", json.dumps(options),
        ]
    server = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL)
    clients = []
    try:
        _wait_ready(f"http://{HOST}:{port}/readyz", server)
        api = 0
        for i in range(nodes):
            if stagger and i > 0:
                _wait_records(api, stagger, clients[-1])
            api = _free_port()
            command = [
                sys.executable, "-m", "sfhfe_node", "--role", "client",
                "--node-id", f"n{i + 1}", "--server", f"http://{HOST}:{port}",
                "--listen", f"{HOST}:0", "--api", f"{HOST}:{api}",
                "--stream", f"csv:{data}", "--target", "class",
                "--share", f"{i + 1}/{nodes}", "--insight-every", str(insight_every),
                "--state-dir", str(folder / f"n{i + 1}"),
                "--predictions", str(folder / f"p{i + 1}.jsonl"),
                "--summary", str(folder / f"s{i + 1}.json"),
                "--threads", "1", "--seed", "0", "--log-level", "warning",
                "--discovery-interval", "0",
            ]
            if ignore_meta:
                command.append("--ignore-meta")
            clients.append(
                subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL)
            )
        for client in clients:
            if client.wait(timeout=RUN_LIMIT_SECONDS) != 0:
                raise SystemExit(f"a client exited with {client.returncode}")
    finally:
        for process in clients:
            if process.poll() is None:
                process.kill()
                process.wait()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return [
        json.loads((folder / f"s{i + 1}.json").read_text()) for i in range(nodes)
    ]


def _text(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


def _serve(port: int, state: Path, options: dict[str, Any]) -> int:
    import asyncio

    from sfhfe_node.coordinator import CoordinatorConfig, run_coordinator

    config = CoordinatorConfig(host=HOST, port=port, state_dir=state, **options)

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await run_coordinator(config, stop)

    asyncio.run(serve())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run both federations and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rows", type=int, default=0,
                        help="use only the first ROWS rows (0: all)")
    parser.add_argument("--level", type=float, default=0.15)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--insight-every", type=int, default=5)
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--stagger", type=int, default=0,
                        help="start each client once the previous one has "
                        "learned this many records (0: all at once)")
    parser.add_argument("--meta-options", default=None,
                        help="coordinator settings (JSON) of the meta run, "
                        "e.g. '{\"meta_evidence\": 8}'")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return _serve(args.port, args.state, json.loads(args.options))
    if not 1 <= args.nodes <= 16:
        parser.error("--nodes must be in 1..16")
    if not 1 <= args.repeats <= 20:
        parser.error("--repeats must be in 1..20")

    with tempfile.TemporaryDirectory(prefix="sfhfe-meta-") as name:
        folder = Path(name)
        data = args.data
        if args.rows:
            lines = data.read_text().splitlines()[: args.rows + 1]
            data = folder / "data.csv"
            data.write_text("\n".join(lines) + "\n")
        labels = _labels(data, "class")
        results: dict[str, list[dict[str, Any]]] = {}
        meta_options = json.loads(args.meta_options) if args.meta_options else None
        modes: list[tuple[str, bool, dict[str, Any] | None]] = [
            ("meta", False, meta_options), ("no_meta", True, None)
        ]
        if args.ablation:
            modes += [(name, False, options) for name, options in ABLATIONS.items()]
        for repeat in range(args.repeats):
            for mode, ignore, options in modes:
                started = time.monotonic()
                for attempt in range(ATTEMPTS):
                    # A port picked free can be taken before its process
                    # binds it; such a run is started again from scratch.
                    run_dir = folder / f"{mode}{repeat}-{attempt}"
                    try:
                        summaries = run_federation(
                            data,
                            args.nodes,
                            run_dir,
                            ignore,
                            args.insight_every,
                            options,
                            args.stagger,
                        )
                        break
                    except SystemExit as exc:
                        if attempt == ATTEMPTS - 1:
                            raise
                        print(f"# {mode} run {repeat + 1} failed ({exc}); again",
                              flush=True)
                rows = []
                for i, summary in enumerate(summaries):
                    first = i * len(labels) // args.nodes
                    path = run_dir / f"p{i + 1}.jsonl"
                    errors = _node_errors(path, labels, first)
                    rows.append(
                        {
                            "node": f"n{i + 1}",
                            "records": len(errors),
                            "accuracy": 1 - sum(errors) / max(len(errors), 1),
                            "to_level": records_to_level(
                                errors, args.window, args.level
                            ),
                            "meta_version": summary["meta_version"],
                            "learning_rates": summary["learning_rates"],
                        }
                    )
                results.setdefault(mode, []).append(rows)
                elapsed = time.monotonic() - started
                print(f"# {mode} run {repeat + 1}: {elapsed:.0f} s", flush=True)

    print(f"\nloss level: 0-1 loss <= {args.level} over {args.window} records; "
          f"figures are means over {args.repeats} run(s)\n")
    print(f"{'node':>5} {'acc meta':>9} {'acc none':>9} "
          f"{'to level meta':>14} {'to level none':>14}")
    for i in range(args.nodes):
        cells = []
        for mode in ("meta", "no_meta"):
            runs = [rows[i] for rows in results[mode]]
            accuracy = sum(r["accuracy"] for r in runs) / len(runs)
            reached = [r["to_level"] for r in runs if r["to_level"] is not None]
            level = sum(reached) / len(reached) if reached else None
            cells.append((accuracy, level))
        print(f"{f'n{i + 1}':>5} {cells[0][0]:>9.4f} {cells[1][0]:>9.4f} "
              f"{_text(cells[0][1]):>14} {_text(cells[1][1]):>14}")
    averages = {}
    for mode, runs in results.items():
        means = [sum(r["accuracy"] for r in rows) / len(rows) for rows in runs]
        reached = [r["to_level"] for rows in runs for r in rows if r["to_level"]]
        averages[mode] = {
            "accuracy": sum(means) / len(means),
            "accuracy_min": min(means),
            "accuracy_max": max(means),
            "to_level": sum(reached) / len(reached) if reached else None,
            "reached": len(reached),
        }
    print(f"\n{'run':>12} {'mean accuracy':>14} {'min..max over runs':>19} "
          f"{'mean to level':>14} {'reached':>8}")
    for mode, figures in averages.items():
        spread = f"{figures['accuracy_min']:.4f}..{figures['accuracy_max']:.4f}"
        print(f"{mode:>12} {figures['accuracy']:>14.4f} {spread:>19} "
              f"{_text(figures['to_level']):>14} {figures['reached']:>8}")
    gains = [
        sum(r["accuracy"] for r in meta) / len(meta)
        - sum(r["accuracy"] for r in none) / len(none)
        for meta, none in zip(results["meta"], results["no_meta"])
    ]
    print(f"\npaired gain in mean accuracy (meta - no_meta, same repeat): "
          f"{sum(gains) / len(gains):+.4f}, per run "
          + " ".join(f"{gain:+.4f}" for gain in gains))
    if args.json is not None:
        report = {"level": args.level, "window": args.window,
                  "nodes": results, "mean": averages, "paired_gains": gains}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
