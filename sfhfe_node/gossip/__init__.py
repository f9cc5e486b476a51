"""Gossip between client nodes: expert weights to the most similar peers.

:mod:`~sfhfe_node.gossip.protocol` is the wire format, :mod:`.peers` the peer
choice, :mod:`.merge` the checks and blending of received weights; all three
are free of I/O. :mod:`.node` runs them over websockets.
"""

from __future__ import annotations

from sfhfe_node.gossip.merge import blend_factor, blend_params, check_weights
from sfhfe_node.gossip.node import GossipHost, GossipNode, NodeState
from sfhfe_node.gossip.peers import PeerEvent, PeerTable, cosine
from sfhfe_node.gossip.protocol import (
    PROTOCOL_VERSION,
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

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Error",
    "GossipHost",
    "GossipNode",
    "Hello",
    "Message",
    "NodeState",
    "PeerEvent",
    "PeerTable",
    "Peers",
    "TensorError",
    "Weights",
    "blend_factor",
    "blend_params",
    "check_weights",
    "cosine",
    "decode",
    "encode",
]
