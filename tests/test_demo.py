"""The demo federation runs to the end and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TIMEOUT


def processes_mentioning(text: str) -> list[int]:
    """Process ids whose command line contains ``text``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(int(entry.name))
    return found


def test_demo_reports_every_node(tmp_path: Path) -> None:
    """The demo exits 0 with a table and a JSON report of three learning nodes."""
    report = tmp_path / "report.json"
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "sfhfe_node", "demo", "--report", str(report),
         "--state-dir", str(state)],
        capture_output=True, text=True, timeout=TIMEOUT * 30,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "no-change" in result.stdout and "peer share" in result.stdout
    summary = json.loads(report.read_text())
    assert summary["wall_seconds"] < 300
    assert [node["node_id"] for node in summary["nodes"]] == ["node-1", "node-2", "node-3"]
    assert sum(node["records"] for node in summary["nodes"]) == 45312
    for node in summary["nodes"]:
        assert node["accuracy"] > 0.8
        assert node["insights_acked"] > 0
        assert node["gossip_accepted"] > 0
        assert node["gossip_rejected"] == 0
        assert node["peers"]
        assert 0.0 <= node["peer_weight"] <= 0.5
        assert node["peer_helped"] >= 0 and node["peer_hurt"] >= 0
    assert processes_mentioning(str(state)) == []
