"""A durable outbox: insights wait on disk until the coordinator has them.

Each insight is one file named by its sequence number, written atomically
(temporary file, fsync, rename, fsync of the directory), so that a crash leaves
either the whole insight or nothing. A file is removed only once the
coordinator has acknowledged it; the coordinator deduplicates on
``(node_id, seq)``, so a file sent twice across a crash is stored once.
"""

from __future__ import annotations

import os
from pathlib import Path

from sfhfe_node.client.files import write_atomic

__all__ = ["Outbox"]

_SUFFIX = ".msgpack"


class Outbox:
    """Insights not yet acknowledged, under ``directory``, oldest first.

    Files the coordinator refused as invalid are moved to ``rejected/`` beside
    them rather than deleted, so an operator can see what was wrong.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        for stray in self.directory.glob("*.tmp"):
            stray.unlink(missing_ok=True)

    def put(self, seq: int, body: bytes) -> None:
        """Store ``body`` under ``seq`` durably before returning."""
        write_atomic(self.directory / f"{seq:016d}{_SUFFIX}", body)

    def pending(self) -> list[int]:
        """Sequence numbers waiting for an acknowledgement, oldest first."""
        return sorted(int(path.stem) for path in self.directory.glob("*" + _SUFFIX))

    def read(self, seq: int) -> bytes:
        return (self.directory / f"{seq:016d}{_SUFFIX}").read_bytes()

    def remove(self, seq: int) -> None:
        """Forget ``seq`` after its acknowledgement."""
        (self.directory / f"{seq:016d}{_SUFFIX}").unlink(missing_ok=True)

    def reject(self, seq: int) -> None:
        """Move ``seq`` aside after the coordinator refused it as invalid."""
        rejected = self.directory / "rejected"
        rejected.mkdir(exist_ok=True)
        name = f"{seq:016d}{_SUFFIX}"
        os.replace(self.directory / name, rejected / name)

    def __len__(self) -> int:
        return len(self.pending())
