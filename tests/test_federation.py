"""A coordinator and two clients as real processes on a few thousand records."""

from __future__ import annotations

import json
import signal
import sqlite3
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT, free_port
from tests.processes import elec2_head, get_json, start_node, wait_for


@pytest.fixture
def elec2_4000(tmp_path: Path) -> Path:
    """The first 4,000 records of Elec2."""
    return elec2_head(tmp_path, 4000)


def test_federation_end_to_end(tmp_path: Path, elec2_4000: Path) -> None:
    """Both clients' insights reach the coordinator and both accept gossip."""
    server_port = free_port()
    gossip = [free_port(), free_port()]
    api = [free_port(), free_port()]
    processes = []
    try:
        server = start_node(
            ["--role", "server", "--listen", f"127.0.0.1:{server_port}",
             "--state-dir", str(tmp_path / "server")],
            tmp_path / "server.log",
        )
        processes.append(server)
        wait_for(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{server_port}/healthz", timeout=1).status == 200,
            TIMEOUT * 3, "the coordinator")
        for i in range(2):
            processes.append(start_node(
                ["--role", "client", "--node-id", f"n{i}",
                 "--server", f"http://127.0.0.1:{server_port}",
                 "--listen", f"127.0.0.1:{gossip[i]}",
                 "--advertise", f"ws://127.0.0.1:{gossip[i]}",
                 "--peers", f"ws://127.0.0.1:{gossip[1 - i]}",
                 "--api", f"127.0.0.1:{api[i]}",
                 "--stream", f"csv:{elec2_4000}", "--share", f"{i + 1}/2",
                 "--state-dir", str(tmp_path / f"n{i}"),
                 "--predictions", str(tmp_path / f"n{i}.jsonl"),
                 "--gossip-interval", "0.3", "--insight-every", "5",
                 "--rate", "1000", "--stay"],
                tmp_path / f"n{i}.log",
            ))
        for port in api:
            wait_for(
                lambda port=port: (s := get_json(f"http://127.0.0.1:{port}/v1/status"))
                and s["stream_done"] and s["gossip_accepted"] > 0 and s["outbox"] == 0
                and s["peer_models"],
                TIMEOUT * 6, f"client on {port} to finish and accept gossip",
            )
        statuses = [get_json(f"http://127.0.0.1:{port}/v1/status") for port in api]
        metrics = [
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            .read().decode()
            for port in api
        ]
        for process in processes[1:]:
            process.send_signal(signal.SIGTERM)
        for process in processes[1:]:
            assert process.wait(TIMEOUT * 3) == 0
        server.send_signal(signal.SIGTERM)
        assert server.wait(TIMEOUT * 3) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    for i, status in enumerate(statuses):
        other = f"n{1 - i}"
        assert list(status["peer_models"]) == [other]
        assert status["peer_models"][other]["complete"] is True
        assert 0.0 <= status["peer_weight"] <= 0.5
        assert "sfhfe_client_peer_weight " in metrics[i]
        assert f'sfhfe_client_peer_model_weight{{peer="{other}"}}' in metrics[i]
    for status in statuses:
        assert status["records"] == 2000
        assert status["insights_acked"] == status["insights_sent"] > 0
        assert status["gossip_accepted"] > 0
    with sqlite3.connect(tmp_path / "server" / "coordinator.sqlite3") as db:
        stored = dict(db.execute("SELECT node_id, COUNT(*) FROM insights GROUP BY node_id"))
    assert stored == {f"n{i}": statuses[i]["insights_sent"] for i in range(2)}
    for i in range(2):
        lines = (tmp_path / f"n{i}.jsonl").read_text().splitlines()
        assert [json.loads(x)["index"] for x in lines] == list(range(i * 2000, (i + 1) * 2000))
