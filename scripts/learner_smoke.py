"""Run the learner prequentially over a CSV stream and print its figures.

Usage::

    python scripts/learner_smoke.py PATH TARGET [--batch 32] [--limit N]
        [--task classification|regression] [--seed 0] [--threads 1]

Prints the prequential accuracy (or mean squared error for regression), the
accuracy of the "no-change" baseline that repeats the previous label, and the
learner's throughput in records per second (reading and parsing excluded).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sfhfe_node.learner import LabelEncoder, Learner

__all__ = ["main"]


def read_stream(
    path: Path, target: str, task: str, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Features and encoded targets of the first ``limit`` rows of a CSV file."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if target not in header:
            raise SystemExit(f"target column {target!r} is not in {header}")
        column = header.index(target)
        encoder = LabelEncoder(16)
        features, targets = [], []
        for row in reader:
            if limit is not None and len(targets) >= limit:
                break
            features.append([_number(c) for i, c in enumerate(row) if i != column])
            cell = row[column]
            if task == "classification":
                targets.append(encoder.encode(cell))
            else:
                targets.append(_number(cell))
    return np.array(features, dtype=np.float64), np.array(targets, dtype=np.float64)


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the stream, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("target")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--task", default="classification")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y = read_stream(args.path, args.target, args.task, args.limit)
    learner = Learner(X.shape[1], task=args.task, seed=args.seed)
    correct, loss_sum, learned = 0, 0.0, 0
    started = time.perf_counter()
    for start in range(0, len(X), args.batch):
        stop = start + args.batch
        _, report = learner.step(X[start:stop], y[start:stop])
        correct += report.correct
        loss_sum += report.loss * report.learned
        learned += report.learned
    elapsed = time.perf_counter() - started
    print(f"records        {len(X)}")
    if args.task == "classification":
        known = y >= 0
        no_change = np.mean(y[1:][known[1:]] == y[:-1][known[1:]])
        print(f"accuracy       {correct / max(learned, 1):.4f}")
        print(f"no-change      {no_change:.4f}")
    print(f"mean loss      {loss_sum / max(learned, 1):.4f}")
    print(f"records/s      {len(X) / elapsed:.0f}")
    print(f"usage          {learner.usage()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
