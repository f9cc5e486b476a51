"""Gossip between client nodes: expert weights to the most similar peers.

:mod:`~sfhfe_node.gossip.protocol` is the wire format (and its written
specification), built from :mod:`.messages`, :mod:`.tensors` and
:mod:`.fields`; :mod:`.auth` holds the frame MAC and replay checks,
:mod:`.peers` the peer choice, :mod:`.merge` the checks and robust
combination of received weights, :mod:`.sendqueue` the bounded per-link
queue, :mod:`.penalties` the back-off of misbehaving peers and :mod:`.ledger`
the counters; all of them are free of I/O. :mod:`.node` runs them over
websockets, with :mod:`.links` (one link's state and writer),
:mod:`.handler` (what happens on each link), :mod:`.dialer` (dialling and
redialling) and :mod:`.exchange` (the rounds). :mod:`.discovery` asks the
coordinator for peers and :mod:`.metrics` renders a node's counters for
Prometheus.
"""

from __future__ import annotations

from sfhfe_node.gossip.auth import ReplayGuard, check_key
from sfhfe_node.gossip.discovery import Discovery, parse_peers
from sfhfe_node.gossip.merge import (
    RoundBuffer,
    Update,
    blend_params,
    check_weights,
    combine,
    update_weight,
)
from sfhfe_node.gossip.metrics import render_metrics
from sfhfe_node.gossip.node import GossipHost, GossipNode, NodeState, frame_cap
from sfhfe_node.gossip.peers import PeerEvent, PeerTable, cosine
from sfhfe_node.gossip.protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Ack,
    Error,
    Hello,
    Message,
    Peers,
    TensorError,
    Weights,
    decode,
    encode,
)
from sfhfe_node.gossip.sendqueue import SendQueue

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Ack",
    "Discovery",
    "Error",
    "GossipHost",
    "GossipNode",
    "Hello",
    "Message",
    "NodeState",
    "PeerEvent",
    "PeerTable",
    "Peers",
    "ReplayGuard",
    "RoundBuffer",
    "SendQueue",
    "TensorError",
    "Update",
    "Weights",
    "blend_params",
    "check_key",
    "check_weights",
    "combine",
    "cosine",
    "decode",
    "encode",
    "frame_cap",
    "parse_peers",
    "render_metrics",
    "update_weight",
]
