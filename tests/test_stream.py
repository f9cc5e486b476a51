"""Record streams read files as they are, skipping and counting bad rows."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sfhfe_node.errors import StreamError
from sfhfe_node.stream import (
    MAX_LINE,
    PipeLines,
    RecordStream,
    count_rows,
    parse_share,
)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return f"csv:{path}"


def test_batches_keep_source_indices(tmp_path: Path) -> None:
    """Records carry their row number, and the target is split from the features."""
    spec = write(tmp_path / "s.csv", "a,b,y\n1,2,x\n3,4,y\n5,6,x\n")
    with RecordStream(spec, "y") as stream:
        batch = stream.read_batch(2)
        assert stream.features == ["a", "b"]
        assert stream.read_batch(2).index.tolist() == [2]
        assert stream.read_batch(2) is None
    assert batch.index.tolist() == [0, 1]
    assert batch.features.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert batch.targets == ["x", "y"]


def test_bad_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    """Wrong cell counts and oversize lines are skipped; bad cells become NaN."""
    long_line = "9," * (MAX_LINE // 2) + "9\n"
    spec = write(
        tmp_path / "s.csv",
        "a,b,y\n1,2,0\n1,2\n" + long_line + "abc,inf,1\n,7,\n4,5,1\n",
    )
    with RecordStream(spec, "y") as stream:
        batch = stream.read_batch(10)
    assert batch.index.tolist() == [0, 3, 4, 5]
    assert stream.skipped == 2
    assert math.isnan(batch.features[1, 0]) and math.isnan(batch.features[1, 1])
    assert stream.bad_cells == 3
    assert batch.targets == ["0", "1", None, "1"]


def test_share_takes_a_contiguous_block(tmp_path: Path) -> None:
    """Share 2/3 of nine rows reads rows 3, 4 and 5."""
    rows = "".join(f"{i},{i % 2}\n" for i in range(9))
    spec = write(tmp_path / "s.csv", "a,y\n" + rows)
    assert count_rows(spec) == 9
    with RecordStream(spec, "y", share=parse_share("2/3")) as stream:
        assert stream.read_batch(100).index.tolist() == [3, 4, 5]
        assert stream.read_batch(100) is None


def test_start_resumes_after_learned_records(tmp_path: Path) -> None:
    """A stream started at record 2 returns records 2 onward."""
    spec = write(tmp_path / "s.csv", "a,y\n0,0\n1,1\n2,0\n3,1\n")
    with RecordStream(spec, "y", start=2) as stream:
        assert stream.read_batch(10).index.tolist() == [2, 3]


def test_jsonl_stream_reads_objects(tmp_path: Path) -> None:
    """JSON lines give features by key; non-objects are skipped."""
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1, "y": "u"}\n[1]\n{"a": "x", "y": 2}\nnot json\n')
    with RecordStream(f"jsonl:{path}", "y") as stream:
        batch = stream.read_batch(10)
    assert batch.index.tolist() == [0, 2]
    assert batch.targets == ["u", "2"]
    assert stream.skipped == 2


def test_jsonl_columns_are_known_once_opened(tmp_path: Path) -> None:
    """A JSON-lines stream names its features before the first batch (a
    learner is sized from them), from its first object; earlier bad lines
    are still read as skipped records."""
    path = tmp_path / "s.jsonl"
    path.write_text(
        'not json\n{"a": 1, "b": 2, "y": 0}\n{"a": 3, "b": 4, "y": 1}\n'
    )
    with RecordStream(f"jsonl:{path}", "y") as stream:
        assert stream.features == ["a", "b"]
        batch = stream.read_batch(10)
    assert batch.index.tolist() == [1, 2] and stream.skipped == 1


def test_jsonl_without_an_object_is_a_stream_error(tmp_path: Path) -> None:
    """A JSON-lines stream with no object to name its columns is refused at once."""
    path = tmp_path / "s.jsonl"
    path.write_text("[1]\nnot json\n")
    with pytest.raises(StreamError, match="no JSON object"):
        RecordStream(f"jsonl:{path}", "y")


def test_builtin_elec2_is_shipped() -> None:
    """The package carries the Elec2 stream with its target."""
    with RecordStream("builtin:elec2") as stream:
        assert stream.target == "class"
        assert len(stream.features) == 6
        assert len(stream.read_batch(5)) == 5


@pytest.mark.parametrize(
    "spec", ["csv:/nonexistent/x.csv", "tcp:1.2.3.4", "builtin:nope"]
)
def test_unopenable_stream_is_a_stream_error(spec: str) -> None:
    """A stream that cannot be opened raises StreamError with the reason."""
    with pytest.raises(StreamError):
        RecordStream(spec, None)


def test_missing_target_column_is_named(tmp_path: Path) -> None:
    """A target absent from the header is reported with the columns present."""
    spec = write(tmp_path / "s.csv", "a,b\n1,2\n")
    with pytest.raises(StreamError, match="'y' is not in the header"):
        RecordStream(spec, "y")


def test_bad_share_is_refused() -> None:
    """Shares outside 1..N are refused."""
    for text in ("0/3", "4/3", "x"):
        with pytest.raises(StreamError):
            parse_share(text)


def test_follow_returns_partial_batches_and_waits_for_more(tmp_path: Path) -> None:
    """Following a growing file: what is there comes out now, later lines later."""
    path = tmp_path / "grow.csv"
    path.write_text("a,y\n1,0\n2,1\n")
    with RecordStream(f"csv:{path}", "y", follow=True, poll=0.01) as stream:
        assert stream.read_batch(32).index.tolist() == [0, 1]
        with open(path, "a") as file:
            file.write("3,0\n4,")
        assert stream.read_batch(32).index.tolist() == [2]
        with open(path, "a") as file:
            file.write("1\n")
        batch = stream.read_batch(32)
        assert batch.index.tolist() == [3] and batch.targets == ["1"]
        stream.stop()
        assert stream.read_batch(32) is None


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A real OS pipe (read end, write end); both closed afterwards."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(fd)


def test_pipe_lines_know_when_a_line_is_ready(pipe: tuple[int, int]) -> None:
    """A line is ready only once its newline arrived; the end is ready too."""
    read_end, write_end = pipe
    lines = PipeLines(read_end)
    assert not lines.ready()
    os.write(write_end, b"1,2")
    assert not lines.ready()  # half a line is not a line
    os.write(write_end, b",3\n4,5")
    assert lines.ready()
    assert lines.readline() == "1,2,3\n"
    assert not lines.ready()
    os.write(write_end, b",6\n\xff\n")
    assert lines.readline() == "4,5,6\n"
    assert lines.readline() == "\ufffd\n"  # not UTF-8: replaced
    os.close(write_end)
    assert lines.ready()
    assert lines.readline() == ""


def test_pipe_lines_bound_a_long_line(pipe: tuple[int, int]) -> None:
    """readline returns at most ``limit`` bytes; the rest follows."""
    read_end, write_end = pipe
    os.write(write_end, b"x" * 100 + b"\n")
    lines = PipeLines(read_end)
    assert lines.readline(30) == "x" * 30
    assert lines.readline() == "x" * 70 + "\n"


def test_standard_input_batches_hold_what_has_arrived(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live pipe gives a partial batch at once instead of waiting for a full one."""
    read_end, write_end = pipe

    class _Stdin:
        def fileno(self) -> int:
            return read_end

    monkeypatch.setattr(sys, "stdin", _Stdin())
    os.write(write_end, b"a,b,y\n1,2,0\n3,4,1\n5,6,0\n")
    stream = RecordStream("-", target="y")
    batch = stream.read_batch(64)
    assert batch is not None and batch.index.tolist() == [0, 1, 2]
    later = threading.Timer(0.2, os.write, (write_end, b"7,8,1\n"))
    later.start()
    began = time.monotonic()
    batch = stream.read_batch(64)  # waits for the first record only
    later.join()
    assert batch is not None and batch.index.tolist() == [3]
    assert time.monotonic() - began < 5.0
    os.close(write_end)
    assert stream.read_batch(64) is None


def test_stop_ends_a_wait_on_a_silent_pipe(pipe: tuple[int, int]) -> None:
    """stop() makes a readline waiting on an open, silent pipe return."""
    read_end, _ = pipe
    lines = PipeLines(read_end, poll=0.05)
    stopper = threading.Timer(0.2, lines.stop)
    stopper.start()
    began = time.monotonic()
    assert lines.readline() == ""
    stopper.join()
    assert time.monotonic() - began < 5.0
