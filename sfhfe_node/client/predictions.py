"""The predictions file: one JSON line per record, resumable at a byte offset.

Lines are appended a batch at a time and flushed, so a reader tailing the file
sees whole batches. A checkpoint records the file's length after the batches
it covers (:attr:`PredictionWriter.offset`, made durable by :meth:`sync`); a
node resumed from that checkpoint cuts the file back to that length before it
predicts the following records again, so no record is written twice or lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["PredictionWriter"]


class PredictionWriter:
    """Append prediction lines to ``path``.

    ``resume_offset`` None starts a new file; an integer keeps the first
    ``resume_offset`` bytes of an existing file and appends after them.
    """

    def __init__(self, path: Path, resume_offset: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_offset is None:
            self._file = open(path, "wb")
        else:
            self._file = open(path, "ab")
            size = self._file.seek(0, os.SEEK_END)
            if size < resume_offset:
                self._file.close()
                raise OSError(
                    f"predictions file {path} has {size} bytes, fewer than the "
                    f"{resume_offset} the checkpoint recorded"
                )
            self._file.truncate(resume_offset)
            self._file.seek(resume_offset)
        self.offset = self._file.tell()

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append one line per record and flush."""
        data = "".join(json.dumps(record) + "\n" for record in records).encode()
        self._file.write(data)
        self._file.flush()
        self.offset += len(data)

    def sync(self) -> None:
        """Make what was written durable (before a checkpoint records it)."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
