"""Node counters and per-peer records, without a loop."""

from __future__ import annotations

import pytest

from sfhfe_node.gossip import ledger
from sfhfe_node.gossip.ledger import Ledger


def test_count_adds_to_the_total_and_to_the_peer() -> None:
    """A counted event goes into the totals and, when named, the peer's record."""
    book = Ledger(linked=())
    book.count("peer", "sent", 2)
    book.count(None, "sent")
    assert book.totals["sent"] == 3
    assert book.view({})["peer"]["sent"] == 2


def test_reject_counts_by_reason() -> None:
    """Rejections are counted by reason, globally and per peer."""
    book = Ledger(linked=())
    book.reject("peer", "bad_shape")
    book.reject(None, "import_failed")
    assert book.rejected == {"bad_shape": 1, "import_failed": 1}
    assert book.view({})["peer"]["rejected_by_reason"] == {"bad_shape": 1}


def test_view_names_roles_of_linked_and_away_peers() -> None:
    """Linked peers without a role are candidates; unlinked ones are away."""
    book = Ledger(linked={"b", "c"})
    for peer in "abc":
        book.record(peer, f"ws://{peer}:1")
    roles = {peer: view["role"] for peer, view in book.view({"c": "similar"}).items()}
    assert roles == {"a": "away", "b": "candidate", "c": "similar"}


def test_full_ledger_forgets_the_idle_peer_seen_longest_ago(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the limit, the unlinked peer with the oldest last_seen makes room."""
    monkeypatch.setattr(ledger, "MAX_KNOWN", 3)
    book = Ledger(linked={"old"})
    for peer, seen in [("old", 1.0), ("older", 2.0), ("recent", 3.0)]:
        book.record(peer).last_seen = seen
    book.record("new")
    assert set(book.known) == {"old", "recent", "new"}
