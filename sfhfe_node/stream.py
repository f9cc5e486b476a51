"""Record streams: CSV or JSON-lines files, standard input, the built-in data.

A stream yields mini-batches of records. Each record keeps its *index*, its
0-based position among the data rows of the source, so that predictions,
checkpoints and shares refer to the same records whatever was skipped.

Every row is untrusted. A row with the wrong number of cells, a line longer
than :data:`MAX_LINE` bytes or a JSON line that is not an object is skipped and
counted (``skipped``); a cell that is not a finite number becomes NaN, which
the learner imputes, and is counted (``bad_cells``). Neither stops the stream.

A batch never waits for records that have not arrived once it holds one:
with ``follow`` a file's partial batch goes out when the file stops growing,
and on standard input (a pipe from a live source) when no whole line is
waiting (:class:`PipeLines`).

Limitation: a CSV field quoted across a line break is read as a broken row and
skipped, since lines are bounded one at a time before parsing.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import select
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

import numpy as np

from sfhfe_node.errors import StreamError

__all__ = [
    "BUILTIN",
    "Batch",
    "PipeLines",
    "RecordStream",
    "count_rows",
    "parse_share",
]

MAX_LINE = 1 << 20
PEEK_LINES = 1000  # lines a JSON-lines stream may take to show a first record
BUILTIN = {"elec2": ("elec2.csv.gz", "class")}


@dataclass
class Batch:
    """Records read together: their indices, features and raw targets."""

    index: np.ndarray  # int64 [n]
    features: np.ndarray  # float64 [n, d], NaN where a cell was missing or bad
    targets: list[str | None]  # raw target cell per record, None when absent

    def __len__(self) -> int:
        return len(self.index)


def parse_share(text: str | None) -> tuple[int, int] | None:
    """Parse ``I/N`` (1 <= I <= N) into a tuple, or None for no share."""
    if text is None:
        return None
    try:
        part, total = (int(item) for item in text.split("/"))
    except ValueError:
        raise StreamError(f"share={text!r} is not I/N, e.g. 2/3") from None
    if not 1 <= part <= total:
        raise StreamError(f"share={text!r} needs 1 <= I <= N")
    return part, total


def count_rows(spec: str) -> int:
    """Count the data rows of a file stream (lines after the header)."""
    with _open(spec) as file:
        lines = sum(1 for _ in file)
    return max(lines - (0 if spec.startswith("jsonl:") else 1), 0)


class PipeLines:
    """Lines of a pipe (standard input), and whether one is ready now.

    Reads the file descriptor itself, so that :meth:`ready` knows whether a
    line can be had without blocking: buffered text readers hide what they
    hold from ``select``. Bytes that are not UTF-8 are replaced.
    """

    def __init__(self, fd: int, poll: float = 0.2) -> None:
        self.fd = fd
        self.poll = poll
        self._buffer = bytearray()
        self._eof = False
        self._stopped = False

    def stop(self) -> None:
        """Make a waiting :meth:`readline` return what it has (within ``poll``
        seconds), and every later one at once."""
        self._stopped = True

    def readline(self, limit: int = -1) -> str:
        """The next line with its newline, at most ``limit`` bytes of it;
        ``""`` at end of input or after :meth:`stop`. Waits until a line (or
        the end) arrives."""
        while not self._eof and b"\n" not in self._buffer and (
            limit < 0 or len(self._buffer) < limit
        ):
            if not select.select([self.fd], [], [], self.poll)[0]:
                if self._stopped:
                    return ""
                continue
            chunk = os.read(self.fd, 65536)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if limit >= 0:
            end = min(end, limit)
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line.decode("utf-8", errors="replace")

    def ready(self) -> bool:
        """Whether :meth:`readline` would return without waiting: a whole
        line (or the end of input) has arrived. Takes in what is waiting on
        the descriptor without blocking."""
        while not self._eof and b"\n" not in self._buffer:
            if not select.select([self.fd], [], [], 0)[0]:
                return False
            chunk = os.read(self.fd, 65536)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
        return True

    def close(self) -> None:
        """Nothing to release: the descriptor belongs to the process."""


def _open(spec: str) -> IO[str] | PipeLines:
    if spec == "-":
        return PipeLines(sys.stdin.fileno())
    kind, _, location = spec.partition(":")
    if kind == "builtin":
        if location not in BUILTIN:
            raise StreamError(
                f"builtin stream {location!r} is unknown; known: {', '.join(BUILTIN)}"
            )
        data = resources.files("sfhfe_node") / "data" / BUILTIN[location][0]
        return io.TextIOWrapper(gzip.open(str(data), "rb"), encoding="utf-8")
    if kind not in ("csv", "jsonl") or not location:
        raise StreamError(
            f"stream {spec!r} is not csv:PATH, jsonl:PATH, - or builtin:NAME"
        )
    path = Path(location)
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(
                gzip.open(path, "rb"), encoding="utf-8", errors="replace"
            )
        return open(path, encoding="utf-8", errors="replace", newline="")
    except OSError as exc:
        raise StreamError(f"cannot open stream {location}: {exc.strerror}") from None


class RecordStream:
    """Read records from ``spec`` in mini-batches.

    Parameters
    ----------
    spec
        ``csv:PATH`` (``.gz`` allowed), ``jsonl:PATH``, ``-`` for CSV on
        standard input, or ``builtin:elec2`` for the data shipped with the
        package.
    target
        Column holding the target. None: every column is a feature, records
        carry no target. For ``builtin:`` streams None means the built-in
        target.
    share
        ``(I, N)``: read only the I-th of N contiguous blocks of a file's rows,
        as one of N sites observing the same process would. None reads all.
    start
        Index of the first record to return; earlier ones are skipped
        unparsed (used to resume after a restart).
    follow
        At the end of a file, wait for more lines instead of ending (a file
        that another program appends to). Ignored for standard input, which
        ends at end of file.
    """

    def __init__(
        self,
        spec: str,
        target: str | None = None,
        *,
        share: tuple[int, int] | None = None,
        start: int = 0,
        follow: bool = False,
        poll: float = 0.5,
    ) -> None:
        self.spec = spec
        if spec.startswith("builtin:") and target is None:
            target = BUILTIN.get(spec.partition(":")[2], (None, None))[1]
        self.target = target
        self.follow = follow and spec != "-"
        self.poll = poll
        self.skipped = 0
        self.bad_cells = 0
        self.closed = False
        self._stop = False
        self._pending = ""
        self._held: list[str] = []  # lines read ahead, returned first
        self._end = None
        self._first = 0
        if share is not None:
            if spec == "-":
                raise StreamError("a share of standard input cannot be taken")
            total = count_rows(spec)
            part, parts = share
            self._first = (part - 1) * total // parts
            self._end = part * total // parts
        self._file = _open(spec)
        self._jsonl = spec.startswith("jsonl:")
        self.features: list[str] = []
        self._target_at: int | None = None
        self._columns: list[str] = []
        self.position = 0
        try:
            if self._jsonl:
                self._peek_columns()
            else:
                self._read_header()
            self._skip_to(max(start, self._first))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RecordStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_header(self) -> None:
        line = self._file.readline(MAX_LINE)
        if not line.strip():
            raise StreamError(f"stream {self.spec} has no header row")
        self._columns = [name.strip() for name in next(csv.reader([line]))]
        if len(set(self._columns)) != len(self._columns):
            raise StreamError(f"stream {self.spec} repeats a column name in its header")
        self._set_columns(self._columns)

    def _peek_columns(self) -> None:
        """Name the columns after the first JSON object of the stream.

        The lines read to find it are held and read again as records (a bad
        one before it is skipped and counted like any other).
        """
        seen: list[str] = []
        while len(seen) < PEEK_LINES:
            line = self._next_line(wait=False)
            if line is None:
                break
            seen.append(line)
            try:
                record = json.loads(line) if line != "\x00" else None
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and record:
                self._set_columns([str(name) for name in record])
                self._held = seen
                return
        raise StreamError(
            f"stream {self.spec} has no JSON object in its first "
            f"{len(seen)} lines; the first record names the columns"
        )

    def _set_columns(self, columns: list[str]) -> None:
        if self.target is not None:
            if self.target not in columns:
                raise StreamError(
                    f"target column {self.target!r} is not in the header of "
                    f"{self.spec}; columns: {', '.join(columns[:20])}"
                )
            self._target_at = columns.index(self.target)
        self.features = [name for name in columns if name != self.target]
        if not self.features:
            raise StreamError(f"stream {self.spec} has no feature column")

    def _skip_to(self, start: int) -> None:
        while self.position < start:
            if self._next_line() is None:
                return
            self.position += 1

    def stop(self) -> None:
        """Make a blocked ``read_batch`` (follow mode, standard input) return
        what it has."""
        self._stop = True
        if isinstance(self._file, PipeLines):
            self._file.stop()

    def close(self) -> None:
        """Close the source; closing twice is harmless."""
        if not self.closed:
            self.closed = True
            if not isinstance(self._file, PipeLines):
                self._file.close()

    def read_batch(self, size: int) -> Batch | None:
        """Return up to ``size`` records, or None at the end of the stream."""
        indices: list[int] = []
        rows: list[list[float]] = []
        targets: list[str | None] = []
        pipe = self._file if isinstance(self._file, PipeLines) else None
        while len(indices) < size:
            if self._end is not None and self.position >= self._end:
                break
            if indices and pipe is not None and not pipe.ready():
                break  # a live pipe: predict what has arrived
            line = self._next_line(wait=not indices)
            if line is None:
                break
            index = self.position
            self.position += 1
            parsed = self._parse(line)
            if parsed is None:
                self.skipped += 1
                continue
            indices.append(index)
            rows.append(parsed[0])
            targets.append(parsed[1])
        if not indices:
            return None
        features = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        return Batch(np.asarray(indices, dtype=np.int64), features, targets)

    def _next_line(self, wait: bool = True) -> str | None:
        """Return the next complete line, or None at the end (or on stop).

        In follow mode the end of the file is not the end of the stream:
        with ``wait`` the call sleeps until a line arrives or :meth:`stop`;
        without it, it returns None so that a partial batch goes out now.
        """
        if self._held:
            return self._held.pop(0)
        while True:
            chunk = self._file.readline(MAX_LINE + 1)
            if chunk:
                line = self._pending + chunk
                if not line.endswith("\n") and len(line) <= MAX_LINE:
                    if self.follow:
                        self._pending = line
                        continue
                    self._pending = ""
                    return line
                self._pending = ""
                if len(line) > MAX_LINE:
                    self._discard_rest(line)
                    return "\x00"
                if not line.strip():
                    continue
                return line
            if not self.follow or self._stop:
                if self._pending:
                    line, self._pending = self._pending, ""
                    return line
                return None
            if not wait:
                return None
            time.sleep(self.poll)

    def _discard_rest(self, line: str) -> None:
        while not line.endswith("\n"):
            line = self._file.readline(MAX_LINE)
            if not line:
                return

    def _parse(self, line: str) -> tuple[list[float], str | None] | None:
        if line == "\x00":
            return None
        if self._jsonl:
            return self._parse_json(line)
        try:
            cells = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            return None
        if len(cells) != len(self._columns):
            return None
        target = None
        if self._target_at is not None:
            target = cells.pop(self._target_at).strip() or None
        return [self._number(cell) for cell in cells], target

    def _parse_json(self, line: str) -> tuple[list[float], str | None] | None:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(record, dict):
            return None
        if not self.features:
            self._set_columns([str(name) for name in record])
        target = None
        if self.target is not None and record.get(self.target) is not None:
            value = record[self.target]
            target = value if isinstance(value, str) else json.dumps(value)
        return [self._number(record.get(name)) for name in self.features], target

    def _number(self, cell: object) -> float:
        if isinstance(cell, bool):
            cell = None
        try:
            value = float(cell)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            self.bad_cells += 1
            return math.nan
        return value
