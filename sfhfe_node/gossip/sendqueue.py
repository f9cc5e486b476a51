"""The bounded queue of frames waiting for one link's writer.

Free of I/O: the node puts encoded frames in and its writer task takes them
out. A peer that reads slowly must cost the node neither memory nor its
other links, so the queue never holds more than ``limit`` frames: when it is
full, the oldest droppable frame (a ``weights`` frame, superseded by a newer
one anyway) makes room; only when none is queued does the oldest frame of any
kind go. The connection itself is never dropped for being slow.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SendQueue"]


class SendQueue:
    """Frames for one peer, oldest first, at most ``limit`` of them.

    Parameters
    ----------
    limit
        Most frames queued (default 16). A round queues one frame per expert
        sent plus a hello, so a few rounds' worth; a larger limit rides out
        longer stalls and holds more memory per slow peer.
    """

    def __init__(self, limit: int = 16) -> None:
        if limit < 1:
            raise ValueError(f"send queue limit must be >= 1, got {limit}")
        self.limit = limit
        self.dropped = 0
        self.queued_bytes = 0
        self._frames: deque[tuple[bytes, bool]] = deque()

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: bytes, droppable: bool) -> int:
        """Queue ``frame``; return how many older frames were dropped for it."""
        dropped = 0
        while len(self._frames) >= self.limit:
            self._drop_one()
            dropped += 1
        self._frames.append((frame, droppable))
        self.queued_bytes += len(frame)
        return dropped

    def pop(self) -> bytes | None:
        """Take the oldest frame, or ``None`` when the queue is empty."""
        if not self._frames:
            return None
        frame, _ = self._frames.popleft()
        self.queued_bytes -= len(frame)
        return frame

    def clear(self) -> None:
        """Forget every queued frame (the link closed)."""
        self._frames.clear()
        self.queued_bytes = 0

    def _drop_one(self) -> None:
        victim = next(
            (index for index, (_, droppable) in enumerate(self._frames) if droppable),
            0,
        )
        frame, _ = self._frames[victim]
        del self._frames[victim]
        self.queued_bytes -= len(frame)
        self.dropped += 1
