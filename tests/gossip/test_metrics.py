"""Prometheus rendering of a gossip node's counters."""

from __future__ import annotations

from sfhfe_node.gossip.metrics import render_metrics
from tests.gossip.host import ArrayHost, make_node, until

STATS = {
    "sent": 4, "accepted": 3, "rejected": 2, "dropped": 1, "bytes_sent": 100,
    "bytes_received": 90, "rounds": 5, "merges": 2, "peers": ["node-b"],
    "rejected_by_reason": {"not_finite": 1, "replay": 1},
    "known": {
        "node-b": {
            "sent": 4, "accepted": 3, "bytes_sent": 100, "bytes_received": 90,
            "dropped": 1, "similarity": 0.75, "trust": 1.0, "last_seen": 12.5,
            "rejected_by_reason": {"not_finite": 1},
        }
    },
}


def test_node_and_peer_series_are_rendered() -> None:
    """Totals, reasons and every per-peer figure appear as labelled series."""
    lines = render_metrics(STATS).splitlines()
    assert "sfhfe_gossip_weights_sent_total 4" in lines
    assert 'sfhfe_gossip_rejected_total{reason="replay"} 1' in lines
    assert 'sfhfe_gossip_peer_similarity{peer="node-b"} 0.75' in lines
    assert 'sfhfe_gossip_peer_trust{peer="node-b"} 1.0' in lines
    assert (
        'sfhfe_gossip_peer_rejected_total{peer="node-b",reason="not_finite"} 1'
        in lines
    )
    assert "sfhfe_gossip_peers_selected 1" in lines


def test_every_series_has_help_and_type() -> None:
    """Each metric name is introduced by HELP and TYPE lines."""
    lines = render_metrics(STATS).splitlines()
    names = {line.split("{")[0].split(" ")[0] for line in lines if line[0] != "#"}
    for name in names:
        assert f"# TYPE {name} counter" in lines or f"# TYPE {name} gauge" in lines


async def test_live_node_stats_render_per_peer_series() -> None:
    """After a real exchange every linked peer has its own labelled series."""
    node_b = make_node("node-b", ArrayHost(2, [1.0, 0.5, 0.0]))
    await node_b.start()
    node_a = make_node(
        "node-a", ArrayHost(1, [1.0, 0.5, 0.0]), [f"ws://127.0.0.1:{node_b.port}"]
    )
    await node_a.start()
    try:
        await until(lambda: node_a.stats()["accepted"] >= 2)
        text = render_metrics(node_a.stats())
    finally:
        await node_a.close()
        await node_b.close()
    assert 'sfhfe_gossip_peer_accepted_total{peer="node-b"}' in text
    assert "sfhfe_gossip_merges_total" in text
