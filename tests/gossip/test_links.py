"""Link hygiene over real sockets: keepalive, eviction, re-admission, peer
exchange, bounded send queues and the frame cap."""

from __future__ import annotations

import asyncio
import math

import pytest

from sfhfe_node.errors import ConfigError
from sfhfe_node.gossip.node import GossipNode, frame_cap
from tests.gossip.host import (
    SPEC,
    ArrayHost,
    closed_by_node,
    make_node,
    raw_peer,
    until,
)

EMBEDDING = [1.0, 0.5, 0.0]


def _role(node: GossipNode, peer: str) -> str | None:
    record = node.stats()["known"].get(peer)
    return None if record is None else record["role"]


async def test_hung_peer_is_evicted_by_keepalive_and_backed_off() -> None:
    """A peer that stops answering pings is evicted, refused, then re-admitted."""
    gossip = make_node(
        "node-b", ArrayHost(2, EMBEDDING), ping_interval=0.1, ping_timeout=0.2,
        backoff_initial=0.8, backoff_cap=0.8,
    )
    await gossip.start()
    try:
        hung = await raw_peer(gossip, ping_interval=None)
        await until(lambda: "raw" in gossip.stats()["peers"])
        hung.transport.pause_reading()
        await until(lambda: "raw" not in gossip.stats()["peers"])
        assert gossip.stats()["known"]["raw"]["rejected_by_reason"] == {
            "keepalive": 1
        }
        hung.transport.abort()

        # Back at once: refused while the back-off lasts.
        early = await raw_peer(gossip, ping_interval=None)
        _, code = await closed_by_node(early)
        assert code == 1008

        # After the back-off (at most 0.8 s) the restarted peer is welcome.
        await asyncio.sleep(0.9)
        later = await raw_peer(gossip, ping_interval=None)
        await until(lambda: "raw" in gossip.stats()["peers"])
        await later.close()
    finally:
        await gossip.close()


async def test_stopped_peer_is_evicted_and_readmitted_when_restarted() -> None:
    """A dialled peer that goes away leaves the peer set and rejoins on restart."""
    node_b = make_node("node-b", ArrayHost(2, EMBEDDING))
    await node_b.start()
    port = node_b.port
    assert port is not None
    node_a = make_node("node-a", ArrayHost(1, EMBEDDING), [f"ws://127.0.0.1:{port}"])
    await node_a.start()
    try:
        await until(lambda: node_a.stats()["peers"] == ["node-b"])
        await node_b.close()
        await until(lambda: _role(node_a, "node-b") == "away")
        assert node_a.stats()["peers"] == []
        restarted = GossipNode(
            "node-b", ArrayHost(2, EMBEDDING), listen=("127.0.0.1", port),
            advertise=None, peers=[], interval=0.1,
        )
        await restarted.start()
        try:
            await until(lambda: node_a.stats()["peers"] == ["node-b"])
        finally:
            await restarted.close()
    finally:
        await node_a.close()


async def test_peers_learn_each_other_through_peer_exchange() -> None:
    """Two nodes that only know a third one find each other through it."""
    hub = make_node("node-a", ArrayHost(1, EMBEDDING))
    await hub.start()
    address = [f"ws://127.0.0.1:{hub.port}"]
    node_b = make_node("node-b", ArrayHost(2, EMBEDDING), address)
    node_c = make_node("node-c", ArrayHost(3, EMBEDDING), address)
    await node_b.start()
    await node_c.start()
    try:
        await until(lambda: _role(node_b, "node-c") in ("similar", "explore"))
        await until(lambda: _role(node_c, "node-b") in ("similar", "explore"))
    finally:
        for node in (node_b, node_c, hub):
            await node.close()


async def test_slow_reader_loses_old_weights_not_its_link() -> None:
    """A peer that stops reading gets its oldest weights dropped; the link stays."""
    gossip = make_node(
        "node-b", ArrayHost(2, EMBEDDING, usage=1.0), interval=0.005, send_queue=4,
    )
    await gossip.start()
    try:
        slow = await raw_peer(gossip, ping_interval=None)
        await until(lambda: "raw" in gossip.stats()["peers"])
        slow.transport.pause_reading()
        await until(lambda: gossip.stats()["known"]["raw"]["dropped"] > 0)
        assert "raw" in gossip.stats()["peers"]
        slow.transport.abort()
    finally:
        await gossip.close()


async def test_frame_cap_is_derived_from_the_largest_expert() -> None:
    """Without max_frame the cap fits all the host's experts twice over."""
    gossip = make_node("node-a", ArrayHost(1, EMBEDDING))
    await gossip.start()
    await gossip.close()
    total = sum(
        4 * math.prod(shape) for params in SPEC.values() for shape in params.values()
    )
    assert gossip.max_frame == frame_cap(SPEC) >= 2 * total


async def test_frame_cap_below_the_largest_expert_is_refused() -> None:
    """A configured cap too small for the node's largest expert fails at start."""
    gossip = make_node("node-a", ArrayHost(1, EMBEDDING), max_frame=2048)
    with pytest.raises(ConfigError):
        await gossip.start()
