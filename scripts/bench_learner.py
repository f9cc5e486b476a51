"""Prequential benchmark of the learner against its ablations and baselines.

Usage::

    python scripts/bench_learner.py [--data DIR] [--streams elec2,shuttle]
        [--batch 64] [--seed 0] [--more-seeds 1,2] [--limit N] [--quick]
        [--no-river] [--warmup 1000] [--json PATH]

Runs every row test-then-train over the same records, in this process, and
prints one table per stream: accuracy, balanced accuracy (mean recall over
the classes present), records per second of the learning loop (reading
excluded) and the process's peak resident memory after the row (the full
learner runs first, so its figure is its own; later rows show the running
maximum). Rows: the full learner; the router replaced by a uniform average;
the mixture without replay and EWC; each expert alone; the no-change and
majority baselines; River's adaptive random forest, Hoeffding adaptive tree
and logistic regression, each given the previous label as a feature (skipped
when River is not installed); and the per-record design the batched bank
replaces (ten MLP experts, the top three updated by Adam one record at a
time). ``--more-seeds`` adds a row ``full:seed=S`` per listed seed, the full
learner seeded with S. ``--quick`` runs 2,000 records per stream.

Speeds are compared in a *race*: the full learner (each seed), the River
models and the per-record loop run interleaved, ``CHUNK`` records each in
turn, and their records/s come from that race, so that whatever else the
machine does meanwhile slows them alike and their ratios hold (printed
under each table). The other rows run one after the other. Before its timed
run every row runs once, untimed and thrown away, on the first ``--warmup``
records, so that one-time costs (first calls into a library, memory the
allocator grows into) fall outside every row's timing alike.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfhfe_node.learner import DEFAULT_EXPERTS, LabelEncoder, Learner

__all__ = ["learner_steps", "main", "race", "read_stream", "run_learner"]

STREAMS = {"elec2": "class", "shuttle": "anomaly"}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUICK_RECORDS = 2000
CHUNK = 1000  # records a raced row runs per turn


def read_stream(
    path: Path, target: str, limit: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, encoded class indices and feature names of a CSV stream."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        column = header.index(target)
        encoder = LabelEncoder(16)
        features, targets = [], []
        for row in reader:
            if limit is not None and len(targets) >= limit:
                break
            features.append([_number(c) for i, c in enumerate(row) if i != column])
            targets.append(encoder.encode(row[column]))
    names = [name for i, name in enumerate(header) if i != column]
    return np.array(features), np.array(targets, dtype=np.float64), names


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _row(
    name: str, y: np.ndarray, predicted: np.ndarray, seconds: float
) -> dict[str, Any]:
    known = y >= 0
    truth, guess = y[known].astype(np.int64), predicted[known].astype(np.int64)
    recalls = [float(np.mean(guess[truth == c] == c)) for c in np.unique(truth)]
    return {
        "name": name,
        "accuracy": float(np.mean(guess == truth)),
        "balanced_accuracy": float(np.mean(recalls)),
        "records_per_s": float(len(y) / max(seconds, 1e-9)),
        "peak_rss_mb": _peak_rss_mb(),
    }


def learner_steps(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    batch: int,
    seed: int,
    options: dict[str, Any],
    predicted: np.ndarray,
    probes: dict[int, float] | None = None,
) -> Iterator[None]:
    """A prequential run of the learner, pausing after every ``CHUNK`` records.

    Fills ``predicted``; ``probes`` maps record counts to the resident
    memory (MB) measured when the run passed them.
    """
    learner = Learner(X.shape[1], seed=seed, feature_names=names, **options)
    marks = sorted(probes) if probes is not None else []
    pause = CHUNK
    for start in range(0, len(X), batch):
        prediction, _ = learner.step(X[start : start + batch], y[start : start + batch])
        predicted[start : start + batch] = prediction.labels
        if marks and learner.records >= marks[0]:
            probes[marks.pop(0)] = _rss_mb()  # type: ignore[index]
        if learner.records >= pause:
            pause += CHUNK
            yield


def _drain(steps: Iterator[None]) -> None:
    """Run a paused run to its end."""
    collections.deque(steps, maxlen=0)


def run_learner(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    batch: int,
    seed: int,
    options: dict[str, Any],
    probes: dict[int, float] | None = None,
) -> tuple[np.ndarray, float]:
    """Predicted labels of a whole prequential run, and its seconds."""
    predicted = np.zeros(len(X))
    steps = learner_steps(X, y, names, batch, seed, options, predicted, probes)
    started = time.perf_counter()
    _drain(steps)
    return predicted, time.perf_counter() - started


def run_no_change(y: np.ndarray) -> tuple[np.ndarray, float]:
    """Repeat the previous label (class 0 first)."""
    started = time.perf_counter()
    predicted = np.concatenate([[0.0], y[:-1]])
    return predicted, time.perf_counter() - started


def run_majority(y: np.ndarray) -> tuple[np.ndarray, float]:
    """Predict the most frequent label seen so far."""
    started = time.perf_counter()
    counts = np.zeros(16)
    predicted = np.zeros(len(y))
    for i, label in enumerate(y.astype(np.int64).tolist()):
        predicted[i] = counts.argmax()
        if label >= 0:
            counts[label] += 1
    return predicted, time.perf_counter() - started


def river_steps(
    make: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    predicted: np.ndarray,
) -> Iterator[None]:
    """A River classifier, one record at a time, with the previous label
    added; pauses after every ``CHUNK`` records and fills ``predicted``."""
    model = make()
    previous = 0.0
    rows = [dict(zip(names, row)) for row in X.tolist()]
    for i, (features, label) in enumerate(zip(rows, y.tolist())):
        features["previous_label"] = previous
        guess = model.predict_one(features)
        predicted[i] = 0.0 if guess is None else float(guess)
        if label >= 0:
            model.learn_one(features, int(label))
            previous = label
        if (i + 1) % CHUNK == 0:
            yield


def per_record_steps(
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    predicted: np.ndarray,
    classes: int = 16,
) -> Iterator[None]:
    """Ten MLP experts, top three by recent loss, Adam one record at a time;
    pauses after every ``CHUNK`` records and fills ``predicted``."""
    torch.manual_seed(seed)
    width = X.shape[1] + classes
    experts = [
        torch.nn.Sequential(
            torch.nn.Linear(width, 32), torch.nn.Tanh(), torch.nn.Linear(32, classes)
        )
        for _ in range(10)
    ]
    optimizers = [torch.optim.Adam(e.parameters(), lr=0.005) for e in experts]
    recent = np.zeros(10)
    mean, square, count = np.zeros(X.shape[1]), np.zeros(X.shape[1]), 0
    previous = torch.zeros(classes)
    seen = 1
    for i in range(len(X)):
        if i and i % CHUNK == 0:
            yield
        row = np.nan_to_num(X[i])
        count += 1
        delta = row - mean
        mean += delta / count
        square += delta * (row - mean)
        std = np.sqrt(np.maximum(square / count, 1e-12))
        scaled = (row - mean) / np.where(std > 1e-9, std, 1.0)
        z = torch.from_numpy(scaled.astype(np.float32))
        inputs = torch.cat([z, previous])
        top = np.argsort(recent, kind="stable")[:3]
        mask = torch.full((classes,), -30.0)
        mask[:seen] = 0.0
        outputs = [experts[e](inputs) + mask for e in top]
        probs = torch.stack([torch.softmax(o.detach(), 0) for o in outputs]).mean(0)
        predicted[i] = float(probs.argmax())
        label = int(y[i])
        if label < 0:
            continue
        seen = max(seen, label + 1)
        target = torch.tensor(label)
        for e, output in zip(top.tolist(), outputs):
            loss = torch.nn.functional.cross_entropy(output[None], target[None])
            optimizers[e].zero_grad()
            loss.backward()
            optimizers[e].step()
            recent[e] = 0.95 * recent[e] + 0.05 * float(loss.detach())
        recent[np.setdiff1d(np.arange(10), top)] *= 0.999
        previous = torch.zeros(classes)
        previous[label] = 1.0


def race(runs: dict[str, Iterator[None]]) -> dict[str, float]:
    """Seconds each run took, advancing them in turn a chunk at a time.

    Interleaved, the runs share whatever the machine does meanwhile (other
    processes, frequency changes), so the ratios of their speeds hold even
    when absolute speeds drift during the benchmark.
    """
    seconds = dict.fromkeys(runs, 0.0)
    pending = dict(runs)
    while pending:
        for name, steps in list(pending.items()):
            started = time.perf_counter()
            try:
                next(steps)
            except StopIteration:
                del pending[name]
            seconds[name] += time.perf_counter() - started
    return seconds


def _river_models() -> dict[str, Callable[[], Any]] | None:
    try:
        from river import forest, linear_model, preprocessing, tree
    except ImportError:
        return None
    return {
        "river_arf": lambda: forest.ARFClassifier(n_models=10, seed=0),
        "river_hat": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=0),
        "river_logreg": lambda: preprocessing.StandardScaler()
        | linear_model.LogisticRegression(),
    }


def bench_stream(
    name: str, path: Path, target: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Every row of one stream's table."""
    X, y, names = read_stream(path, target, args.limit)
    probes = {20_000: 0.0, len(X): 0.0} if len(X) > 20_000 else {}
    learners: list[tuple[str, dict[str, Any]]] = [
        ("full", {}),
        ("uniform", {"routing": "uniform"}),
        ("no_replay_no_ewc", {"replay": False, "ewc": False}),
    ]
    learners += [
        (f"expert:{spec.name}", {"experts": (spec,), "top_k": 1})
        for spec in DEFAULT_EXPERTS
    ]
    w = min(args.warmup, len(X))
    rows = {}
    for row_name, options in learners:
        if w:
            run_learner(X[:w], y[:w], names, args.batch, args.seed, options)
        run_probes = probes if row_name == "full" else None
        predicted, seconds = run_learner(
            X, y, names, args.batch, args.seed, options, run_probes
        )
        rows[row_name] = _row(row_name, y, predicted, seconds)
        _progress(rows[row_name])
    for row_name, runner in (("no_change", run_no_change), ("majority", run_majority)):
        predicted, seconds = runner(y)
        rows[row_name] = _row(row_name, y, predicted, seconds)
    raced = _race_rows(X, y, names, args, w)
    speed = {row["name"]: row["records_per_s"] for row in raced}
    rows["full"]["records_per_s"] = speed.pop("full")
    listed = [rows["full"]]
    listed += [rows[row_name] for row_name, _ in learners[1:]]
    listed += [row for row in raced if row["name"].startswith("full:")]
    listed += [rows["no_change"], rows["majority"]]
    listed += [row for row in raced if not row["name"].startswith("full")]
    result: dict[str, Any] = {"records": len(X), "rows": listed}
    if probes:
        result["full_rss_mb"] = {str(k): round(v, 1) for k, v in probes.items()}
    return result


def _race_rows(
    X: np.ndarray, y: np.ndarray, names: list[str], args: argparse.Namespace, w: int
) -> list[dict[str, Any]]:
    """The full learner (each seed) and the baselines, raced side by side."""
    predicted: dict[str, np.ndarray] = {}
    runs: dict[str, Iterator[None]] = {}

    def enter(row_name: str, make_steps: Callable[..., Iterator[None]]) -> None:
        if w:
            _drain(make_steps(X[:w], y[:w], np.zeros(w)))
        predicted[row_name] = np.zeros(len(X))
        runs[row_name] = make_steps(X, y, predicted[row_name])

    for i, seed in enumerate([args.seed, *args.more_seeds]):
        row_name = f"full:seed={seed}" if i else "full"
        enter(row_name, lambda a, b, out, s=seed: learner_steps(
            a, b, names, args.batch, s, {}, out
        ))
    models = None if args.no_river else _river_models()
    if models is None:
        print("river is not installed (or --no-river): its rows are skipped",
              file=sys.stderr)
    else:
        for row_name, make in models.items():
            enter(row_name, lambda a, b, out, m=make: river_steps(m, a, b, names, out))
    enter("per_record_loop", lambda a, b, out: per_record_steps(a, b, args.seed, out))
    seconds = race(runs)
    raced = [_row(n, y, predicted[n], seconds[n]) for n in runs]
    for row in raced:
        _progress(row)
    return raced


def _progress(row: dict[str, Any]) -> None:
    print(
        f"  {row['name']:<24} acc {row['accuracy']:.4f}  "
        f"rec/s {row['records_per_s']:.0f}",
        file=sys.stderr,
        flush=True,
    )


def print_table(name: str, result: dict[str, Any]) -> None:
    """One stream's rows as a Markdown table."""
    print(f"\n### {name} ({result['records']} records)\n")
    print("| row | accuracy | balanced accuracy | records/s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in result["rows"]:
        print(
            f"| {row['name']} | {row['accuracy']:.4f} | "
            f"{row['balanced_accuracy']:.4f} | {row['records_per_s']:,.0f} | "
            f"{row['peak_rss_mb']:.0f} |"
        )
    if "full_rss_mb" in result:
        print(f"\nfull learner resident memory by records: {result['full_rss_mb']}")
    speed = {row["name"]: row["records_per_s"] for row in result["rows"]}
    baselines = [b for b in ("river_arf", "per_record_loop") if speed.get(b)]
    for row_name, value in speed.items():
        if row_name == "full" or row_name.startswith("full:"):
            ratios = ", ".join(f"{value / speed[b]:.1f}x {b}" for b in baselines)
            print(f"{row_name} throughput: {ratios}")


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of seeds: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every stream, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--more-seeds", type=_seed_list, default=[],
        help="comma-separated seeds of extra full-learner rows",
    )
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-river", action="store_true")
    parser.add_argument(
        "--warmup", type=int, default=1000,
        help="records of the untimed run before each row (0: none)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick and args.limit is None:
        args.limit = QUICK_RECORDS
    torch.set_num_threads(1)
    results = {}
    for name in args.streams.split(","):
        if name not in STREAMS:
            parser.error(f"unknown stream {name!r}; known: {', '.join(STREAMS)}")
        print(f"{name}:", file=sys.stderr)
        path = args.data / f"{name}.csv"
        results[name] = bench_stream(name, path, STREAMS[name], args)
        print_table(name, results[name])
    if args.json is not None:
        args.json.write_text(json.dumps({"streams": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
