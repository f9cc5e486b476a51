"""Crash tests: kill -9 the coordinator process during a burst of uploads.

These run real processes on 127.0.0.1: a coordinator
(``python -m sfhfe_node --role server``) and the uploaders, which are either
small load processes that log each acknowledged ``(node_id, seq)``, or real
``--role client`` nodes learning from Elec2 shares.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sfhfe_node.coordinator import Store
from tests.conftest import ELEC2, PYTHON, ROOT, TIMEOUT, free_port
from tests.coordinator.helpers import make_insight


def start_server(port: int, state: Path) -> subprocess.Popen[bytes]:
    """Start a coordinator process and wait until /readyz answers."""
    server = subprocess.Popen(
        [
            PYTHON, "-m", "sfhfe_node", "--role", "server",
            "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
            "--log-level", "warning",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    wait_for(lambda: _ready(port) or server.poll() is not None, 3 * TIMEOUT)
    assert server.poll() is None, "the coordinator exited at start"
    return server


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
            return True
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM a process and return its exit status."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=3 * TIMEOUT)


def stored(database: Path) -> Counter[tuple[str, int]]:
    """How many times each (node_id, seq) is stored."""
    store = Store(database)
    try:
        return Counter((i["node_id"], i["seq"]) for i in store.insights())
    finally:
        store.close()


def count_lines(paths: list[Path]) -> int:
    """Lines written so far to the ack files."""
    return sum(len(p.read_text().splitlines()) for p in paths if p.exists())


def test_kill_during_burst_keeps_every_acknowledged_insight(tmp_path: Path) -> None:
    """Every insight acknowledged before a SIGKILL is stored once after restart."""
    port = free_port()
    server = start_server(port, tmp_path)
    acks = [tmp_path / f"acks{i}.txt" for i in range(3)]
    loads = [
        subprocess.Popen(
            [PYTHON, "-m", "tests.coordinator.crash_load", str(port), f"p{i}", "20",
             str(path)],
            cwd=ROOT,
        )
        for i, path in enumerate(acks)
    ]
    try:
        # Kill the coordinator in the middle of the burst.
        wait_for(lambda: count_lines(acks) >= 600, 6 * TIMEOUT)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=TIMEOUT)
        for load in loads:
            assert load.wait(timeout=3 * TIMEOUT) == 0
    finally:
        for process in [server, *loads]:
            if process.poll() is None:
                process.kill()
                process.wait()
    acknowledged = {
        (node, int(seq))
        for path in acks
        for node, seq in (line.split() for line in path.read_text().splitlines())
    }

    # Restart on the same file; a retry of an acknowledged insight is a duplicate.
    server = start_server(port, tmp_path)
    try:
        node, seq = max(acknowledged)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/insights",
            data=json.dumps(make_insight(node_id=node, seq=seq)).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            assert json.load(reply)["duplicate"] is True
    finally:
        assert stop(server) == 0
    counts = stored(tmp_path / "coordinator.sqlite3")
    assert len(acknowledged) >= 600
    assert acknowledged <= set(counts)
    assert set(counts.values()) == {1}


def client_process(
    port: int, index: int, folder: Path, api: int
) -> subprocess.Popen[bytes]:
    """A real client node learning from share ``index`` of 3 of a short Elec2."""
    return subprocess.Popen(
        [
            PYTHON, "-m", "sfhfe_node", "--role", "client",
            "--node-id", f"c{index}",
            "--server", f"http://127.0.0.1:{port}",
            "--listen", "127.0.0.1:0", "--api", f"127.0.0.1:{api}",
            "--stream", f"csv:{folder / 'elec2.csv'}", "--target", "class",
            "--share", f"{index + 1}/3", "--insight-every", "1",
            "--state-dir", str(folder / f"c{index}"),
            "--predictions", str(folder / f"p{index}.jsonl"),
            "--summary", str(folder / f"s{index}.json"),
            "--threads", "1", "--log-level", "warning",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def acked(api: int) -> int:
    """insights_acked from a client's status API, 0 while it does not answer."""
    try:
        url = f"http://127.0.0.1:{api}/v1/status"
        with urllib.request.urlopen(url, timeout=1) as reply:
            return int(json.load(reply)["insights_acked"])
    except OSError:
        return 0


@pytest.mark.slow
def test_kill_with_real_clients_loses_no_acknowledged_insight(
    tmp_path: Path,
) -> None:
    """Three real clients lose nothing acknowledged across a coordinator SIGKILL."""
    lines = ELEC2.read_text().splitlines()[:4801]
    (tmp_path / "elec2.csv").write_text("\n".join(lines) + "\n")
    port = free_port()
    server = start_server(port, tmp_path / "server")
    apis = [free_port() for _ in range(3)]
    clients = [client_process(port, i, tmp_path, api) for i, api in enumerate(apis)]
    try:
        # Kill once every client has had some insights acknowledged.
        wait_for(lambda: all(acked(api) >= 5 for api in apis), 12 * TIMEOUT)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=TIMEOUT)
        time.sleep(1.0)
        server = start_server(port, tmp_path / "server")
        for client in clients:
            assert client.wait(timeout=12 * TIMEOUT) == 0
        assert stop(server) == 0
    finally:
        for process in [server, *clients]:
            if process.poll() is None:
                process.kill()
                process.wait()
    counts = stored(tmp_path / "server" / "coordinator.sqlite3")
    for index in range(3):
        summary = json.loads((tmp_path / f"s{index}.json").read_text())
        assert summary["outbox"] == 0
        seqs = {seq for node, seq in counts if node == f"c{index}"}
        assert seqs == set(range(summary["insights_sent"]))
    assert set(counts.values()) == {1}


def test_sigterm_during_burst_exits_cleanly_and_keeps_acknowledged(
    tmp_path: Path,
) -> None:
    """SIGTERM in a burst exits 0 quickly with every acknowledged insight stored."""
    port = free_port()
    server = start_server(port, tmp_path)
    ack = tmp_path / "acks.txt"
    load = subprocess.Popen(
        [PYTHON, "-m", "tests.coordinator.crash_load", str(port), "t", "30", str(ack)],
        cwd=ROOT,
    )
    try:
        wait_for(lambda: count_lines([ack]) >= 300, 6 * TIMEOUT)
        started = time.monotonic()
        assert stop(server) == 0
        elapsed = time.monotonic() - started
        assert load.wait(timeout=3 * TIMEOUT) == 0
    finally:
        for process in (server, load):
            if process.poll() is None:
                process.kill()
                process.wait()
    acknowledged = {
        (node, int(seq))
        for node, seq in (line.split() for line in ack.read_text().splitlines())
    }
    counts = stored(tmp_path / "coordinator.sqlite3")
    assert elapsed < TIMEOUT
    assert acknowledged <= set(counts) and set(counts.values()) == {1}
