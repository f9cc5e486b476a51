"""Authenticated and encrypted gossip over real sockets on 127.0.0.1."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from sfhfe_node.gossip.node import GossipNode
from sfhfe_node.gossip.protocol import Ack, Error, Hello, Weights, encode
from tests.gossip.host import (
    SPEC,
    ArrayHost,
    closed_by_node,
    make_node,
    next_message,
    raw_peer,
    until,
)

KEY = b"cluster-key-for-tests-0123456789"
WRONG = b"another-key-for-tests-0123456789"
EMBEDDING = [1.0, 0.5, 0.0]


@pytest.fixture
async def keyed() -> AsyncIterator[GossipNode]:
    """A running node with a cluster key and a long back-off."""
    gossip = make_node(
        "node-b", ArrayHost(2, EMBEDDING), cluster_key=KEY, backoff_initial=30.0
    )
    await gossip.start()
    yield gossip
    await gossip.close()


def _weights(sender: str = "raw", **changes: float) -> Weights:
    params = {n: np.full(s, 0.1, np.float32) for n, s in SPEC["temporal"].items()}
    return Weights(sender, {"temporal": params}, 1000, 1, **changes)


async def test_keyed_nodes_exchange() -> None:
    """Two nodes sharing a cluster key accept each other's signed weights."""
    node_b = make_node("node-b", ArrayHost(2, EMBEDDING), cluster_key=KEY)
    await node_b.start()
    node_a = make_node(
        "node-a", ArrayHost(1, EMBEDDING), [f"ws://127.0.0.1:{node_b.port}"],
        cluster_key=KEY,
    )
    await node_a.start()
    try:
        await until(lambda: node_a.stats()["accepted"] >= 3)
        await until(lambda: node_b.stats()["accepted"] >= 3)
    finally:
        await node_a.close()
        await node_b.close()
    assert node_a.stats()["rejected"] == node_b.stats()["rejected"] == 0
    assert node_b.stats()["authenticated"]


async def test_wrong_key_closes_and_backs_off(keyed: GossipNode) -> None:
    """A hello signed under another key is counted, closed with 1008, backed off."""
    ws = await raw_peer(keyed, key=KEY)
    await ws.send(encode(_weights(), WRONG))
    messages, code = await closed_by_node(ws, KEY)
    assert code == 1008
    assert any(isinstance(m, Error) and m.reason == "bad_mac" for m in messages)
    assert keyed.stats()["rejected_by_reason"] == {"bad_mac": 1}
    await until(lambda: "raw" not in keyed.stats()["peers"])
    ws = await raw_peer(keyed, key=KEY)
    _, code = await closed_by_node(ws, KEY)
    assert code == 1008
    assert keyed.stats()["known"]["raw"]["rejected_by_reason"]["backed_off"] == 1


async def test_unsigned_peer_is_refused(keyed: GossipNode) -> None:
    """A peer without the key is closed with 1008 at its unsigned hello."""
    ws = await connect(f"ws://127.0.0.1:{keyed.port}", proxy=None)
    vector = np.asarray(EMBEDDING, np.float32)
    await ws.send(encode(Hello("raw", None, vector, {}, 0)))
    _, code = await closed_by_node(ws, KEY)
    assert code == 1008
    assert keyed.stats()["rejected_by_reason"] == {"bad_mac": 1}


async def test_replayed_frame_is_dropped_and_counted(keyed: GossipNode) -> None:
    """A frame sent twice is answered once; the copy is counted as a replay."""
    ws = await raw_peer(keyed, key=KEY)
    frame = encode(_weights(), KEY)
    await ws.send(frame)
    await ws.send(frame)
    fresh = _weights()
    await ws.send(encode(fresh, KEY))
    first = await next_message(ws, Ack, KEY)
    second = await next_message(ws, Ack, KEY)
    assert isinstance(second, Ack) and second.ref == fresh.nonce
    assert isinstance(first, Ack) and first.accepted
    stats = keyed.stats()
    assert stats["rejected_by_reason"] == {"replay": 1}
    assert stats["known"]["raw"]["rejected_by_reason"] == {"replay": 1}
    assert "raw" in keyed.stats()["peers"]
    await ws.close()


async def test_stale_frame_is_dropped_and_counted(keyed: GossipNode) -> None:
    """A signed frame stamped ten minutes ago is dropped; the link stays."""
    ws = await raw_peer(keyed, key=KEY)
    await ws.send(encode(_weights(ts=time.time() - 600.0), KEY))
    fresh = _weights()
    await ws.send(encode(fresh, KEY))
    ack = await next_message(ws, Ack, KEY)
    assert isinstance(ack, Ack) and ack.ref == fresh.nonce
    assert keyed.stats()["rejected_by_reason"] == {"stale": 1}
    await ws.close()


async def test_missing_key_is_announced(caplog: pytest.LogCaptureFixture) -> None:
    """A node started without a cluster key logs a warning saying so."""
    gossip = make_node("node-a", ArrayHost(1, EMBEDDING))
    with caplog.at_level(logging.WARNING, logger="sfhfe_node.gossip"):
        await gossip.start()
    await gossip.close()
    assert any("no cluster key" in record.getMessage() for record in caplog.records)
    assert not gossip.stats()["authenticated"]


async def test_nodes_exchange_over_tls(certificate: tuple[Path, Path]) -> None:
    """With a certificate the node serves wss:// and a verifying peer exchanges."""
    cert, key = certificate
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    node_b = make_node(
        "node-b", ArrayHost(2, EMBEDDING), ssl_server=server, ssl_client=client,
        cluster_key=KEY,
    )
    await node_b.start()
    assert node_b.advertise == f"wss://127.0.0.1:{node_b.port}"
    node_a = make_node(
        "node-a", ArrayHost(1, EMBEDDING), [node_b.advertise], ssl_client=client,
        cluster_key=KEY,
    )
    await node_a.start()
    try:
        await until(lambda: node_b.stats()["accepted"] >= 3)
    finally:
        await node_a.close()
        await node_b.close()
