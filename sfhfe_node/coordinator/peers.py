"""Peer discovery: which known nodes a node should gossip with.

Free of I/O: the application reads the nodes from the store and asks
:func:`rank_peers` for the answer to ``GET /v1/peers``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sfhfe_node.coordinator.store import NodeRecord

__all__ = ["cosine", "rank_peers"]


def cosine(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cosine similarity of two embeddings.

    ``None`` when they cannot be compared: different lengths, empty, or one
    of them all zeros.
    """
    if len(a) != len(b) or not a:
        return None
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0.0 or not math.isfinite(norm):
        return None
    value = sum(x * y for x, y in zip(a, b)) / norm
    return max(-1.0, min(1.0, value))


def rank_peers(
    nodes: Sequence[NodeRecord],
    node_id: str,
    k: int,
    now: float,
    stale_seconds: float,
) -> list[dict[str, Any]]:
    """The ``k`` best peers for ``node_id``, most similar first.

    Skips the node itself, nodes without a gossip address and nodes not heard
    from for more than ``stale_seconds``. Peers whose similarity cannot be
    computed (the asking node is unknown, or the embeddings differ in length)
    come after the others, most recently seen first.
    """
    own = next((node.embedding for node in nodes if node.node_id == node_id), None)
    candidates = []
    for node in nodes:
        if node.node_id == node_id or node.gossip is None:
            continue
        if now - node.last_seen > stale_seconds:
            continue
        similarity = None if own is None else cosine(own, node.embedding)
        candidates.append((similarity, node))
    candidates.sort(
        key=lambda item: (
            item[0] is None,
            -(item[0] or 0.0),
            -item[1].last_seen,
            item[1].node_id,
        )
    )
    return [
        {
            "node_id": node.node_id,
            "gossip": node.gossip,
            "embedding": node.embedding,
            "last_seen": node.last_seen,
            "similarity": similarity,
        }
        for similarity, node in candidates[:k]
    ]
