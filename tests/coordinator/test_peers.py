"""Tests of peer ranking (no I/O)."""

from __future__ import annotations

import pytest

from sfhfe_node.coordinator.peers import cosine, rank_peers
from sfhfe_node.coordinator.store import NodeRecord


def node(
    node_id: str,
    embedding: list[float],
    last_seen: float = 100.0,
    gossip: str | None = "ws://127.0.0.1:1",
) -> NodeRecord:
    """A node record seen at ``last_seen``."""
    return NodeRecord(node_id, gossip, embedding, 0, 0.0, last_seen, 0)


def test_cosine_of_parallel_vectors_is_one() -> None:
    """Parallel embeddings have similarity 1."""
    assert cosine([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)


def test_cosine_refuses_incomparable_vectors() -> None:
    """Different lengths or a zero vector give None."""
    assert cosine([1.0], [1.0, 0.0]) is None
    assert cosine([0.0, 0.0], [1.0, 0.0]) is None


def test_most_similar_first_without_self() -> None:
    """Peers come most similar first and exclude the asking node."""
    nodes = [node("me", [1.0, 0.0]), node("far", [0.0, 1.0]), node("near", [1.0, 0.1])]
    ranked = rank_peers(nodes, "me", 5, now=100.0, stale_seconds=60.0)
    assert [p["node_id"] for p in ranked] == ["near", "far"]


def test_stale_and_unreachable_nodes_are_skipped() -> None:
    """Nodes unseen for stale_seconds or without an address are left out."""
    nodes = [
        node("me", [1.0]),
        node("old", [1.0], last_seen=0.0),
        node("mute", [1.0], gossip=None),
        node("ok", [1.0]),
    ]
    ranked = rank_peers(nodes, "me", 5, now=100.0, stale_seconds=60.0)
    assert [p["node_id"] for p in ranked] == ["ok"]


def test_unknown_node_gets_recent_peers_first() -> None:
    """For an unknown node similarity is None and recency orders peers."""
    nodes = [node("a", [1.0], last_seen=90.0), node("b", [1.0], last_seen=99.0)]
    ranked = rank_peers(nodes, "new", 5, now=100.0, stale_seconds=60.0)
    answer = [(p["node_id"], p["similarity"]) for p in ranked]
    assert answer == [("b", None), ("a", None)]


def test_k_limits_the_answer() -> None:
    """At most k peers are returned."""
    nodes = [node(f"n{i}", [1.0]) for i in range(10)]
    assert len(rank_peers(nodes, "n0", 3, now=100.0, stale_seconds=60.0)) == 3
