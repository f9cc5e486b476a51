"""The coordinator's live dashboard: its static files and its JSON document.

The page (``GET /``) is plain HTML, one stylesheet and one script shipped in
``sfhfe_node/coordinator/static/``; the script polls ``GET /v1/dashboard``
every few seconds and draws with SVG. This module is free of I/O:
:func:`load_assets` reads the shipped files once, and :func:`build_document`
turns a bounded :class:`~sfhfe_node.coordinator.service.Snapshot` of the store
into the JSON document.

Document shape (every list bounded by the query's limits)::

    {
      "generated": float,          coordinator time of the read, unix seconds
      "stale_seconds": float,      nodes silent longer than this are "stale"
      "meta_version": int,         version served to clients now
      "totals": {"nodes": int, "active": int, "shown": int},
      "nodes": [                   most recently seen first
        {"node_id", "state" ("active" | "drifting" | "stale"), "task",
         "records", "first_seen", "last_seen", "last_seq", "loss",
         "accuracy", "drift_active", "memory_bytes", "gossip",
         "series": {"time": [float], "seq": [int], "loss": [float],
                    "accuracy": [float | null]}}
      ],
      "experts": {"names": [str], "usage": [[float | null]]},
      "drift": [{"node_id", "seq", "received", "events", "active"}],
      "topology": {"edges": [{"source", "target", "similarity"}]},
      "meta": [{"version", "created", "trigger", "learning_rates",
                "router_priors"}]
    }

``experts.usage[e][n]`` is the share of node ``n``'s records (in ``nodes``
order) that its router sent to expert ``names[e]`` in the node's last window,
``null`` where the node has no such expert. ``series`` times are the
coordinator's arrival times, so the curves of all nodes share one clock.

The topology is the coordinator's peer discovery: an edge joins two shown
nodes when one is among the other's ``k`` most similar live peers
(:func:`~sfhfe_node.coordinator.peers.rank_peers`, ranked among the shown
nodes). Insights do not say which peers a node actually exchanged weights
with, so this is the graph the coordinator suggests, not a measured one.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from sfhfe_node.coordinator.peers import rank_peers
from sfhfe_node.coordinator.service import Snapshot
from sfhfe_node.coordinator.store import NodeRecord, unpack

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "Asset",
    "DashboardLimits",
    "build_document",
    "load_assets",
]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_ASSET_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    """One shipped file of the page: its bytes and its Content-Type."""

    body: bytes
    content_type: str


@dataclass(frozen=True)
class DashboardLimits:
    """Bounds of one dashboard document.

    Parameters:
        nodes: nodes shown, the most recently seen first (default 50, at
            most ``max_nodes``). The peer graph is ranked among them, so its
            cost grows with the square of this number.
        points: insights per node in the loss and accuracy curves, the
            latest (default 120, at most ``max_points``). Each insight is one
            window of the node's records, so 120 points cover 120 uploads.
        drift_events: latest drift reports on the timeline (default 200).
        meta_versions: latest meta versions in the history (default 100).
    """

    nodes: int = 50
    points: int = 120
    drift_events: int = 200
    meta_versions: int = 100

    max_nodes = 200
    max_points = 300


def load_assets() -> dict[str, Asset]:
    """The page's files, read once from the package; keyed by file name."""
    folder = resources.files("sfhfe_node.coordinator") / "static"
    return {
        name: Asset((folder / name).read_bytes(), content_type)
        for name, content_type in _ASSET_TYPES.items()
    }


def build_document(
    snapshot: Snapshot,
    *,
    meta_version: int,
    stale_seconds: float,
    peers_k: int,
) -> dict[str, Any]:
    """The dashboard document of a store snapshot (shape in the module doc)."""
    nodes, now = snapshot.nodes, snapshot.taken
    return {
        "generated": now,
        "stale_seconds": stale_seconds,
        "meta_version": meta_version,
        "totals": {
            "nodes": snapshot.known,
            "active": snapshot.active,
            "shown": len(nodes),
        },
        "nodes": [
            _node(node, snapshot.history.get(node.node_id, []), now, stale_seconds)
            for node in nodes
        ],
        "experts": _usage(nodes),
        "drift": snapshot.drift,
        "topology": {
            "edges": _edges(nodes, now, stale_seconds, peers_k)
        },
        "meta": [
            {
                "version": record.version,
                "created": record.created,
                "trigger": record.trigger,
                "learning_rates": record.params.get("learning_rates", {}),
                "router_priors": record.params.get("router_priors", {}),
            }
            for record in snapshot.meta
        ],
    }


def _node(
    node: NodeRecord,
    history: list[tuple[int, float, bytes | str]],
    now: float,
    stale_seconds: float,
) -> dict[str, Any]:
    windows = [unpack(body).get("window", {}) for _, _, body in history]
    last = node.last or {}
    window = last.get("window", {})
    drift = last.get("drift", {})
    if now - node.last_seen > stale_seconds:
        state = "stale"
    elif drift.get("active"):
        state = "drifting"
    else:
        state = "active"
    return {
        "node_id": node.node_id,
        "state": state,
        "task": last.get("task"),
        "records": node.records,
        "first_seen": node.first_seen,
        "last_seen": node.last_seen,
        "last_seq": node.last_seq,
        "loss": window.get("loss"),
        "accuracy": window.get("accuracy"),
        "drift_active": bool(drift.get("active", False)),
        "memory_bytes": last.get("memory_bytes"),
        "gossip": node.gossip,
        "series": {
            "time": [received for _, received, _ in history],
            "seq": [seq for seq, _, _ in history],
            "loss": [window.get("loss") for window in windows],
            "accuracy": [window.get("accuracy") for window in windows],
        },
    }


def _usage(nodes: list[NodeRecord]) -> dict[str, Any]:
    experts = [(node.last or {}).get("experts", {}) for node in nodes]
    names = sorted({name for found in experts for name in found})
    usage = [
        [found[name].get("usage") if name in found else None for found in experts]
        for name in names
    ]
    return {"names": names, "usage": usage}


def _edges(
    nodes: list[NodeRecord], now: float, stale_seconds: float, k: int
) -> list[dict[str, Any]]:
    edges: dict[tuple[str, ...], float | None] = {}
    for node in nodes:
        if now - node.last_seen > stale_seconds:
            continue
        for peer in rank_peers(nodes, node.node_id, k, now, stale_seconds):
            pair = tuple(sorted((node.node_id, peer["node_id"])))
            edges[pair] = peer["similarity"]
    return [
        {"source": source, "target": target, "similarity": similarity}
        for (source, target), similarity in sorted(edges.items())
    ]
