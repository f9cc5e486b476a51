"""A gossip node's counters in Prometheus text format.

:func:`render_metrics` turns :meth:`GossipNode.stats` into exposition lines
that the client's ``/metrics`` endpoint appends to its own. Per-peer series
carry a ``peer`` label (node ids are ``[A-Za-z0-9._-]``, safe as label
values); the node keeps at most 1024 peers, which bounds the series count.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_metrics"]

_NODE = (
    ("sent", "sfhfe_gossip_weights_sent_total", "counter", "weights frames queued"),
    ("accepted", "sfhfe_gossip_weights_accepted_total", "counter",
     "weights frames accepted"),
    ("dropped", "sfhfe_gossip_frames_dropped_total", "counter",
     "frames dropped from full send queues"),
    ("bytes_sent", "sfhfe_gossip_bytes_sent_total", "counter", "bytes written"),
    ("bytes_received", "sfhfe_gossip_bytes_received_total", "counter",
     "bytes read"),
    ("rounds", "sfhfe_gossip_rounds_total", "counter", "exchange rounds"),
    ("merges", "sfhfe_gossip_merges_total", "counter",
     "experts blended from combined peer updates"),
    ("undone", "sfhfe_gossip_merges_undone_total", "counter",
     "merges undone because they raised the loss on local records"),
    ("peer_updates", "sfhfe_gossip_peer_updates_total", "counter",
     "experts kept as peers' latest models"),
)

_PEER = (
    ("sent", "sfhfe_gossip_peer_sent_total", "counter", "weights frames to the peer"),
    ("accepted", "sfhfe_gossip_peer_accepted_total", "counter",
     "weights frames accepted from the peer"),
    ("bytes_sent", "sfhfe_gossip_peer_bytes_sent_total", "counter",
     "bytes written to the peer"),
    ("bytes_received", "sfhfe_gossip_peer_bytes_received_total", "counter",
     "bytes read from the peer"),
    ("dropped", "sfhfe_gossip_peer_dropped_total", "counter",
     "frames to the peer dropped from its full send queue"),
    ("similarity", "sfhfe_gossip_peer_similarity", "gauge",
     "smoothed cosine similarity of the peer's embedding"),
    ("trust", "sfhfe_gossip_peer_trust", "gauge", "trust in the peer, 0 to 1"),
    ("last_seen", "sfhfe_gossip_peer_last_seen_seconds", "gauge",
     "unix time of the peer's last frame"),
)


def render_metrics(stats: dict[str, Any]) -> str:
    """Prometheus text lines for one node's ``stats()``, newline-terminated."""
    lines: list[str] = []
    for key, name, kind, text in _NODE:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines.append(f"{name} {stats.get(key, 0)}")
    name = "sfhfe_gossip_rejected_total"
    lines += [f"# HELP {name} frames rejected, by reason", f"# TYPE {name} counter"]
    for reason, count in sorted(stats.get("rejected_by_reason", {}).items()):
        lines.append(f'{name}{{reason="{reason}"}} {count}')
    known: dict[str, dict[str, Any]] = stats.get("known", {})
    name = "sfhfe_gossip_peers_selected"
    lines += [f"# HELP {name} peers gossiped with", f"# TYPE {name} gauge"]
    lines.append(f"{name} {len(stats.get('peers', []))}")
    for key, name, kind, text in _PEER:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for peer, record in sorted(known.items()):
            lines.append(f'{name}{{peer="{peer}"}} {record.get(key, 0)}')
    name = "sfhfe_gossip_peer_rejected_total"
    lines += [f"# HELP {name} frames from the peer rejected, by reason",
              f"# TYPE {name} counter"]
    for peer, record in sorted(known.items()):
        for reason, count in sorted(record.get("rejected_by_reason", {}).items()):
            lines.append(f'{name}{{peer="{peer}",reason="{reason}"}} {count}')
    return "\n".join(lines) + "\n"
