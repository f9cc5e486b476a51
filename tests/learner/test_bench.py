"""A smoke run of the learner benchmark script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_learner.py"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "elec2.csv").exists(), reason="shared data missing")
def test_quick_benchmark_writes_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short run writes the documented JSON shape with every learner row."""
    spec = importlib.util.spec_from_file_location("bench_learner", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    argv = ["--quick", "--limit", "160", "--no-river", "--streams", "elec2"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    stream = json.loads(out.read_text())["streams"]["elec2"]
    names = [row["name"] for row in stream["rows"]]
    assert stream["records"] == 160
    assert names[:3] == ["full", "uniform", "no_replay_no_ewc"]
    assert sum(name.startswith("expert:") for name in names) == 10
    assert {"no_change", "majority", "per_record_loop"} <= set(names)
    for row in stream["rows"]:
        assert set(row) == {
            "name", "accuracy", "balanced_accuracy", "records_per_s", "peak_rss_mb",
        }
    printed = capsys.readouterr().out
    assert "| full |" in printed
    assert "full throughput:" in printed and "x per_record_loop" in printed
