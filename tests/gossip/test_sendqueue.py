"""The bounded per-link send queue."""

from __future__ import annotations

import pytest

from sfhfe_node.gossip.sendqueue import SendQueue


def test_frames_come_out_in_order() -> None:
    """Frames are taken oldest first; an empty queue gives None."""
    queue = SendQueue(4)
    queue.put(b"a", droppable=False)
    queue.put(b"bb", droppable=True)
    assert queue.queued_bytes == 3
    assert [queue.pop(), queue.pop(), queue.pop()] == [b"a", b"bb", None]


def test_full_queue_drops_the_oldest_weights_first() -> None:
    """When full, the oldest droppable frame goes, not the control frames."""
    queue = SendQueue(3)
    queue.put(b"hello", droppable=False)
    queue.put(b"w1", droppable=True)
    queue.put(b"w2", droppable=True)
    assert queue.put(b"w3", droppable=True) == 1
    assert [queue.pop() for _ in range(3)] == [b"hello", b"w2", b"w3"]
    assert queue.dropped == 1


def test_queue_never_exceeds_its_limit() -> None:
    """However many frames are put, at most limit are held."""
    queue = SendQueue(2)
    for i in range(50):
        queue.put(bytes([i]), droppable=i % 2 == 0)
    assert len(queue) == 2 and queue.dropped == 48


def test_limit_below_one_is_refused() -> None:
    """A queue must hold at least one frame."""
    with pytest.raises(ValueError):
        SendQueue(0)
