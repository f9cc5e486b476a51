"""Crashes, restarts and stops of real client processes lose and repeat nothing."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT, free_port
from tests.processes import coordinator_process, elec2_head

RECORDS = 10_000


def client_args(state: Path, stream: Path, server: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "sfhfe_node", "--role", "client", "--node-id", "crashy",
        "--server", server, "--listen", "127.0.0.1:0", "--stream", f"csv:{stream}",
        "--target", "class", "--state-dir", str(state),
        "--predictions", str(state / "predictions.jsonl"),
        "--checkpoint-every", "400", "--insight-every", "4", "--drain-timeout", "20",
        *extra,
    ]


@pytest.fixture
def elec2_part(tmp_path: Path) -> Path:
    """The first RECORDS records of Elec2."""
    return elec2_head(tmp_path, RECORDS)


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real coordinator process; yields its URL and database path."""
    state = tmp_path / "server"
    with coordinator_process(state) as url:
        yield url, state / "coordinator.sqlite3"


def stored_seqs(database: Path, node: str = "crashy") -> list[int]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT seq FROM insights WHERE node_id = ? ORDER BY rowid", (node,)
        )
        return [seq for (seq,) in rows]


def prediction_indices(state: Path) -> list[int]:
    lines = (state / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line)["index"] for line in lines]


def accuracy_of(state: Path, stream: Path) -> float:
    labels = [line.rsplit(",", 1)[1].strip() for line in stream.read_text().splitlines()[1:]]
    lines = [json.loads(x) for x in (state / "predictions.jsonl").read_text().splitlines()]
    return sum(str(p["prediction"]) == labels[p["index"]] for p in lines) / len(lines)


def test_kill_nine_at_random_moments(
    tmp_path: Path, elec2_part: Path, coordinator: tuple[str, Path]
) -> None:
    """Ten SIGKILLs later: one prediction per record, every insight stored once."""
    url, database = coordinator
    rng = random.Random(7)
    state = tmp_path / "killed"
    kills = 0
    while kills < 10:
        process = subprocess.Popen(
            client_args(state, elec2_part, url, "--rate", "400"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.5, 2.5))
        if process.poll() is not None:
            break
        process.kill()
        process.wait()
        kills += 1
    final = subprocess.run(
        client_args(state, elec2_part, url), capture_output=True, text=True,
        timeout=TIMEOUT * 12,
    )
    assert final.returncode == 0, final.stderr[-2000:]
    assert kills == 10
    assert prediction_indices(state) == list(range(RECORDS))
    summary_seq = int((state / "seq").read_text())
    assert sorted(stored_seqs(database)) == list(range(summary_seq))

    reference = tmp_path / "uninterrupted"
    plain = subprocess.run(
        [*client_args(reference, elec2_part, url), "--node-id", "steady"],
        capture_output=True, text=True, timeout=TIMEOUT * 12,
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert abs(accuracy_of(state, elec2_part) - accuracy_of(reference, elec2_part)) < 0.015


def test_backlog_arrives_once_after_coordinator_returns(
    tmp_path: Path, elec2_part: Path
) -> None:
    """Insights made while the coordinator was down arrive later, in order, once."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = tmp_path / "offline"
    first = subprocess.run(
        [*client_args(state, elec2_part, url), "--drain-timeout", "1"],
        capture_output=True, text=True, timeout=TIMEOUT * 12,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    waiting = sorted(int(p.stem) for p in (state / "outbox").glob("*.msgpack"))
    assert len(waiting) > 10

    server_state = tmp_path / "server"
    with coordinator_process(server_state, port):
        second = subprocess.run(
            client_args(state, elec2_part, url), capture_output=True, text=True,
            timeout=TIMEOUT * 12,
        )
        assert second.returncode == 0, second.stderr[-2000:]
    assert stored_seqs(server_state / "coordinator.sqlite3") == waiting
    assert not list((state / "outbox").glob("*.msgpack"))
    assert prediction_indices(state) == list(range(RECORDS))


def test_sigterm_stops_cleanly_with_fresh_checkpoint(
    tmp_path: Path, elec2_part: Path, coordinator: tuple[str, Path]
) -> None:
    """SIGTERM mid-stream: exit 0 in time, a checkpoint of the last batch, no loss."""
    url, database = coordinator
    state = tmp_path / "stopped"
    process = subprocess.Popen(
        client_args(state, elec2_part, url, "--rate", "1000", "--stop-timeout", "10"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + TIMEOUT * 3
    while not (state / "predictions.jsonl").exists() or not prediction_indices(state):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    time.sleep(0.5)
    signalled = time.time()
    process.send_signal(signal.SIGTERM)
    assert process.wait(12) == 0
    assert time.time() - signalled < 10
    checkpoint = state / "checkpoint.bin"
    assert checkpoint.stat().st_mtime >= signalled - 0.01
    indices = prediction_indices(state)
    assert 0 < len(indices) < RECORDS
    assert indices == list(range(len(indices)))
    pending = list((state / "outbox").glob("*.msgpack"))
    assert sorted(stored_seqs(database)) + sorted(int(p.stem) for p in pending) == list(
        range(int((state / "seq").read_text()))
    )
