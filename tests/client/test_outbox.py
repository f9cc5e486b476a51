"""The outbox keeps insights on disk until they are acknowledged."""

from __future__ import annotations

from pathlib import Path

from sfhfe_node.client.outbox import Outbox


def test_insights_survive_reopening(tmp_path: Path) -> None:
    """What was put is still there, in order, after reopening the folder."""
    outbox = Outbox(tmp_path / "outbox")
    outbox.put(2, b"two")
    outbox.put(1, b"one")
    again = Outbox(tmp_path / "outbox")
    assert again.pending() == [1, 2]
    assert again.read(1) == b"one"


def test_acknowledged_and_rejected_leave_the_queue(tmp_path: Path) -> None:
    """Removed insights are gone; rejected ones move aside for inspection."""
    outbox = Outbox(tmp_path)
    for seq in range(3):
        outbox.put(seq, b"x")
    outbox.remove(0)
    outbox.reject(1)
    assert outbox.pending() == [2]
    assert (tmp_path / "rejected").exists()


def test_torn_temporary_files_are_cleared(tmp_path: Path) -> None:
    """A temporary file left by a crash is not mistaken for an insight."""
    (tmp_path / "0000000000000007.tmp").write_bytes(b"half")
    assert Outbox(tmp_path).pending() == []
    assert not list(tmp_path.glob("*.tmp"))
