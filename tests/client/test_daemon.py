"""The client daemon, run as a real process on small CSV streams."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sfhfe_node.client.daemon import _insight_peer_models
from sfhfe_node.wire.insight import make_insight
from tests.conftest import TIMEOUT


def make_stream(path: Path, labels: np.ndarray, seed: int = 0) -> None:
    """Write a CSV with three features loosely tied to the labels."""
    rng = np.random.default_rng(seed)
    lines = ["a,b,c,y"]
    for label in labels:
        a, b, c = rng.normal(size=3) + label
        lines.append(f"{a:.5f},{b:.5f},{c:.5f},{int(label)}")
    path.write_text("\n".join(lines) + "\n")


def run_client(tmp: Path, stream: Path, name: str, *extra: str) -> list[dict]:
    """Run a client without coordinator or peers; return its prediction lines."""
    predictions = tmp / f"{name}.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "sfhfe_node", "--role", "client",
         "--stream", f"csv:{stream}", "--target", "y",
         "--listen", "127.0.0.1:0", "--state-dir", str(tmp / name),
         "--predictions", str(predictions), "--batch-size", "16", *extra],
        capture_output=True, text=True, timeout=TIMEOUT * 6,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in predictions.read_text().splitlines()]


def test_one_prediction_per_record(tmp_path: Path) -> None:
    """Every record of the stream gets exactly one prediction line, in order."""
    labels = np.random.default_rng(1).integers(0, 2, size=500)
    stream = tmp_path / "s.csv"
    make_stream(stream, labels)
    lines = run_client(tmp_path, stream, "run")
    assert [line["index"] for line in lines] == list(range(500))
    assert {line["prediction"] for line in lines} <= {0, 1, "0", "1"}
    assert all(len(line["experts"]) >= 1 for line in lines)


def test_prediction_is_made_before_learning_the_record(tmp_path: Path) -> None:
    """Changing record k's label changes no prediction for records up to k."""
    labels = np.random.default_rng(2).integers(0, 2, size=400)
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    make_stream(first, labels)
    flipped = labels.copy()
    k = 250
    flipped[k:] = 1 - flipped[k:]
    make_stream(second, flipped)
    before = run_client(tmp_path, first, "first")
    after = run_client(tmp_path, second, "second")
    same = [a["prediction"] == b["prediction"] for a, b in zip(before, after)]
    assert all(same[: k + 1])
    assert not all(same[k + 1 :])


def test_bad_rows_do_not_stop_the_node(tmp_path: Path) -> None:
    """Broken rows are skipped and the rest of the stream is still learned."""
    stream = tmp_path / "s.csv"
    stream.write_text(
        "a,b,y\n" + "1,2,0\n" * 40 + "1,2\n" + "x,NaN,1\n" + "3,4,1\n" * 40
    )
    summary = tmp_path / "summary.json"
    lines = run_client(tmp_path, stream, "bad", "--summary", str(summary))
    assert len(lines) == 81
    figures = json.loads(summary.read_text())
    assert figures["skipped_rows"] == 1
    assert figures["bad_cells"] == 2
    assert figures["records"] == 81


def test_jsonl_stream_is_learned(tmp_path: Path) -> None:
    """A client learns a JSON-lines stream end to end, one prediction per record."""
    rng = np.random.default_rng(5)
    stream = tmp_path / "s.jsonl"
    rows = [
        json.dumps({"a": float(a), "b": float(b), "y": int(a + b > 0)})
        for a, b in rng.normal(size=(200, 2))
    ]
    stream.write_text("\n".join(rows) + "\n")
    predictions = tmp_path / "p.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "sfhfe_node", "--role", "client",
         "--stream", f"jsonl:{stream}", "--target", "y",
         "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
         "--predictions", str(predictions)],
        capture_output=True, text=True, timeout=TIMEOUT * 6,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(200))
    assert "local API on http://127.0.0.1:" in result.stderr  # its port, logged


def test_young_learner_reads_smaller_batches(tmp_path: Path) -> None:
    """The first --early-records come in batches of --early-batch-size."""
    stream = tmp_path / "s.csv"
    make_stream(stream, np.random.default_rng(4).integers(0, 2, size=400))
    batches = {}
    for early in ("128", "0"):
        summary = tmp_path / f"summary-{early}.json"
        lines = run_client(
            tmp_path, stream, f"early-{early}", "--batch-size", "64",
            "--early-batch-size", "16", "--early-records", early,
            "--summary", str(summary),
        )
        assert len(lines) == 400
        batches[early] = json.loads(summary.read_text())["batches"]
    assert batches == {"128": 128 // 16 + 5, "0": 7}  # 272 and 400 rows by 64


def test_follow_learns_lines_appended_later(tmp_path: Path) -> None:
    """With --follow the node predicts new lines as they arrive and stops on SIGTERM."""
    stream = tmp_path / "grow.csv"
    stream.write_text("a,y\n" + "1,0\n2,1\n" * 10)
    predictions = tmp_path / "p.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "sfhfe_node", "--role", "client",
         "--stream", f"csv:{stream}", "--target", "y", "--follow",
         "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
         "--predictions", str(predictions)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def lines() -> int:
        return len(predictions.read_text().splitlines()) if predictions.exists() else 0

    try:
        deadline = time.monotonic() + TIMEOUT * 3
        while lines() < 20:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        with open(stream, "a") as file:
            file.write("3,0\n" * 5)
        while lines() < 25:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT * 3) == 0
    lines = predictions.read_text().splitlines()
    indices = [json.loads(line)["index"] for line in lines]
    assert indices == list(range(25))


@contextlib.contextmanager
def stdin_client(state: Path, predictions: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A client reading CSV on its standard input (a pipe the test writes);
    killed afterwards if the test did not end it, its input closed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sfhfe_node", "--role", "client",
         "--stream", "-", "--target", "y", "--listen", "127.0.0.1:0",
         "--state-dir", str(state), "--predictions", str(predictions)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()


def wait_for_predictions(
    process: subprocess.Popen[bytes], predictions: Path, count: int
) -> None:
    """Wait until ``predictions`` holds ``count`` lines (the process alive)."""
    deadline = time.monotonic() + TIMEOUT * 3
    while not predictions.exists() or (
        len(predictions.read_text().splitlines()) < count
    ):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)


def test_standard_input_records_are_predicted_as_they_arrive(tmp_path: Path) -> None:
    """A live pipe's records are predicted without waiting for a full batch;
    the node ends with its input."""
    predictions = tmp_path / "p.jsonl"
    with stdin_client(tmp_path / "state", predictions) as process:
        assert process.stdin is not None
        process.stdin.write(b"a,y\n" + b"1,0\n2,1\n" * 3)
        process.stdin.flush()
        wait_for_predictions(process, predictions, 6)
        process.stdin.write(b"3,0\n" * 4)
        process.stdin.close()
        assert process.wait(TIMEOUT * 3) == 0
    lines = predictions.read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(10))


def test_sigterm_stops_a_client_waiting_on_standard_input(tmp_path: Path) -> None:
    """A client whose open input brings nothing stops cleanly on SIGTERM."""
    predictions, state = tmp_path / "p.jsonl", tmp_path / "state"
    with stdin_client(state, predictions) as process:
        assert process.stdin is not None
        process.stdin.write(b"a,y\n" + b"1,0\n2,1\n" * 5)
        process.stdin.flush()
        wait_for_predictions(process, predictions, 10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT * 3) == 0
    assert (state / "checkpoint.bin").exists()


def test_second_node_on_one_state_directory_is_refused(tmp_path: Path) -> None:
    """A state directory in use by a running node refuses a second one (78)."""
    predictions, state = tmp_path / "p.jsonl", tmp_path / "state"
    with stdin_client(state, predictions) as first:
        assert first.stdin is not None
        first.stdin.write(b"a,y\n1,0\n")
        first.stdin.flush()
        wait_for_predictions(first, predictions, 1)  # started: it holds the lock
        second = subprocess.run(
            [sys.executable, "-m", "sfhfe_node", "--role", "client",
             "--stream", "-", "--target", "y", "--listen", "127.0.0.1:0",
             "--state-dir", str(state)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=TIMEOUT * 6,
        )
        assert second.returncode == 78
        assert f"process {first.pid}" in second.stderr
        assert "own --state-dir" in second.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(TIMEOUT * 3) == 0


def test_insight_carries_the_peer_models_totals() -> None:
    """The insight's ``peer_models`` sums up the host's figures, or is left out
    while the node holds no peer's model."""
    status = {
        "weight": 0.3, "helped": 7, "hurt": 2,
        "peers": {"n1": {"weight": 0.2}, "n2": {"weight": 0.1}},
    }
    field = _insight_peer_models(status)
    assert field == {"weight": 0.3, "peers": 2, "helped": 7, "hurt": 2}
    empty = {"weight": 0.0, "helped": 0, "hurt": 0, "peers": {}}
    assert _insight_peer_models(empty) is None
    insight = make_insight(
        node_id="n0", seq=0, task="classification", records=10,
        window={"records": 10, "loss": 0.5, "accuracy": 0.9, "experts": {},
                "drift": {"events": 0, "active": False}, "memory_bytes": 1},
        embedding=[0.0], gossip=None, now=1.0, peer_models=field,
    )
    assert insight["peer_models"] == field
