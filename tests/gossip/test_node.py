"""Gossip nodes over real websocket connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sfhfe_node.errors import InvalidStateError
from sfhfe_node.gossip.node import GossipNode
from sfhfe_node.gossip.protocol import Ack, Error, Hello, Weights, decode, encode
from tests.conftest import TIMEOUT
from tests.gossip.host import SPEC, ArrayHost, until

EMBEDDING = [1.0, 0.5, 0.0]


def _node(
    node_id: str, host: ArrayHost, peers: list[str] | None = None, **options: float
) -> GossipNode:
    settings: dict[str, float] = {
        "interval": 0.1,
        "cooldown": 0.0,
        "backoff_initial": 0.05,
        "backoff_cap": 0.2,
        "hello_timeout": 2.0,
    }
    settings.update(options)
    if settings["backoff_cap"] < settings["backoff_initial"]:
        settings["backoff_cap"] = settings["backoff_initial"]
    return GossipNode(
        node_id,
        host,
        listen=("127.0.0.1", 0),
        advertise=None,
        peers=peers or [],
        **settings,  # type: ignore[arg-type]
    )


@pytest.fixture
async def node() -> AsyncIterator[GossipNode]:
    """A running node with one array host and no peers of its own."""
    gossip = _node("node-b", ArrayHost(2, EMBEDDING), max_frame=64 * 1024)
    await gossip.start()
    yield gossip
    await gossip.close()


async def _raw_peer(node: GossipNode) -> ClientConnection:
    """Connect a bare websocket client and do the hello exchange by hand."""
    ws = await connect(f"ws://127.0.0.1:{node.port}", proxy=None, compression=None)
    assert isinstance(decode(await ws.recv()), Hello)
    vector = np.asarray(EMBEDDING, np.float32)
    await ws.send(encode(Hello("raw", None, vector, {"temporal": 1.0}, 10)))
    return ws


async def _next(ws: ClientConnection, kind: type) -> object:
    """Skip the node's periodic hellos and return its next message of ``kind``."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            message = decode(await ws.recv())
            if isinstance(message, kind):
                return message


def _good_params() -> dict[str, np.ndarray]:
    shapes = SPEC["temporal"]
    return {name: np.full(shape, 0.1, np.float32) for name, shape in shapes.items()}


async def test_listens_on_a_free_port(node: GossipNode) -> None:
    """Port 0 binds a real port and the node advertises it."""
    assert node.port and node.port > 0
    assert node.advertise == f"ws://127.0.0.1:{node.port}"


async def test_two_nodes_exchange_and_converge() -> None:
    """Two peers accept each other's experts and their weights move closer."""
    host_a, host_b = ArrayHost(1, EMBEDDING), ArrayHost(2, [1.0, 0.4, 0.1])
    node_b = _node("node-b", host_b)
    await node_b.start()
    node_a = _node("node-a", host_a, [f"ws://127.0.0.1:{node_b.port}"])
    await node_a.start()
    gap_before = _gap(host_a, host_b)
    try:
        await until(lambda: _both_accepted(node_a, node_b, 6))
    finally:
        await node_a.close()
        await node_b.close()
    assert _gap(host_a, host_b) < 0.9 * gap_before
    stats_a, stats_b = node_a.stats(), node_b.stats()
    assert stats_a["rejected"] == stats_b["rejected"] == 0
    assert stats_a["known"]["node-b"]["trust"] == 1.0
    assert stats_b["known"]["node-a"]["accepted"] >= 6
    assert stats_a["sent"] >= 6 and stats_a["known"]["node-b"]["sent"] >= 6


async def test_peers_weights_are_kept_as_their_models_without_blending() -> None:
    """With blend 0 each node keeps its peer's latest weights, exactly, and
    its own experts do not move."""
    host_a, host_b = ArrayHost(1, EMBEDDING), ArrayHost(2, [1.0, 0.4, 0.1])
    own_a = {e: {n: v.copy() for n, v in p.items()} for e, p in host_a.weights.items()}
    node_b = _node("node-b", host_b, blend=0.0)
    await node_b.start()
    node_a = _node("node-a", host_a, [f"ws://127.0.0.1:{node_b.port}"], blend=0.0)
    await node_a.start()
    try:
        await until(lambda: node_a.stats()["peer_updates"] >= 2 * len(SPEC))
    finally:
        await node_a.close()
        await node_b.close()
    assert host_a.imports == [] and host_b.imports == []
    assert set(host_a.peer_weights) == {"node-b"}
    kept = host_a.peer_weights["node-b"]
    for expert, params in host_b.weights.items():
        for name, value in params.items():
            np.testing.assert_array_equal(kept[expert][name], value)
            np.testing.assert_array_equal(host_a.weights[expert][name], own_a[expert][name])
    assert node_a.stats()["merges"] == 0


def _both_accepted(a: GossipNode, b: GossipNode, count: int) -> bool:
    return a.stats()["accepted"] >= count and b.stats()["accepted"] >= count


def _gap(a: ArrayHost, b: ArrayHost) -> float:
    return sum(
        float(np.linalg.norm(a.weights[e][n] - b.weights[e][n]))
        for e in SPEC for n in SPEC[e]
    )


async def test_nodes_dialling_each_other_keep_one_link() -> None:
    """Two nodes that dial each other settle on a single link between them."""
    node_a = _node("node-a", ArrayHost(1, EMBEDDING))
    node_b = _node("node-b", ArrayHost(2, EMBEDDING))
    await node_a.start()
    await node_b.start()
    node_a.add_peer_address(f"ws://127.0.0.1:{node_b.port}")
    node_b.add_peer_address(f"ws://127.0.0.1:{node_a.port}")
    try:
        await until(lambda: _both_accepted(node_a, node_b, 3))
        assert len(node_a._links.open) == len(node_b._links.open) == 1
        assert node_a.stats()["peers"] == ["node-b"]
    finally:
        await node_a.close()
        await node_b.close()


async def test_nan_tensor_gets_negative_ack_and_link_stays(node: GossipNode) -> None:
    """A NaN weight is counted, answered with accepted=false, and the link lives."""
    ws = await _raw_peer(node)
    params = _good_params()
    params["0.bias"][3] = np.nan
    await ws.send(encode(Weights("raw", {"temporal": params}, 1, 1)))
    ack = await _next(ws, Ack)
    assert isinstance(ack, Ack) and not ack.accepted and ack.reason == "not_finite"
    await ws.send(encode(Weights("raw", {"temporal": _good_params()}, 1, 2)))
    ack = await _next(ws, Ack)
    assert isinstance(ack, Ack) and ack.accepted
    stats = node.stats()
    assert stats["rejected_by_reason"] == {"not_finite": 1}
    assert stats["accepted"] == 1 and stats["known"]["raw"]["rejected"] == 1
    await ws.close()


async def test_wrong_shape_gets_negative_ack(node: GossipNode) -> None:
    """A tensor of another shape than the node's own is rejected as bad_shape."""
    ws = await _raw_peer(node)
    params = _good_params()
    params["0.weight"] = np.zeros((8, 48), np.float32)
    weights = Weights("raw", {"temporal": params}, 1, 1)
    await ws.send(encode(weights))
    ack = await _next(ws, Ack)
    assert isinstance(ack, Ack) and ack.ref == weights.nonce
    assert (ack.accepted, ack.reason) == (False, "bad_shape")
    assert node.stats()["rejected_by_reason"] == {"bad_shape": 1}
    await ws.close()


async def test_inconsistent_tensor_gets_negative_ack(node: GossipNode) -> None:
    """A shape that disagrees with its data is answered with an ack, not a close."""
    ws = await _raw_peer(node)
    message = Weights("raw", {"temporal": _good_params()}, 1, 1)
    body = msgpack.unpackb(encode(message))
    body["experts"][0][1][0][1] = [7, 7]
    await ws.send(msgpack.packb(body))
    ack = await _next(ws, Ack)
    assert isinstance(ack, Ack) and ack.reason == "bad_tensor"
    await ws.close()


async def _closed_by_node(ws: ClientConnection) -> tuple[list[object], int]:
    """Read until the node closes the link; return its messages and close code."""
    messages: list[object] = []
    with pytest.raises(ConnectionClosed) as caught:
        async with asyncio.timeout(TIMEOUT):
            while True:
                messages.append(decode(await ws.recv()))
    assert caught.value.rcvd is not None
    return messages, caught.value.rcvd.code


async def test_garbage_closes_with_policy_violation(node: GossipNode) -> None:
    """Bytes that are not msgpack get an error message and close code 1008."""
    ws = await _raw_peer(node)
    await ws.send(b"\xc1\xc1 not msgpack")
    messages, code = await _closed_by_node(ws)
    assert code == 1008
    assert any(isinstance(m, Error) and m.reason == "not_msgpack" for m in messages)
    await until(lambda: node.stats()["rejected_by_reason"] == {"not_msgpack": 1})


async def test_unknown_type_closes_with_policy_violation(node: GossipNode) -> None:
    """A message of an unknown type is an error and closes the link with 1008."""
    ws = await _raw_peer(node)
    body = msgpack.unpackb(encode(Error("raw", "x", "")))
    body.update(type="gimme")
    del body["reason"], body["detail"]
    await ws.send(msgpack.packb(body))
    messages, code = await _closed_by_node(ws)
    assert code == 1008
    assert any(isinstance(m, Error) and m.reason == "unknown_type" for m in messages)
    await until(lambda: node.stats()["rejected_by_reason"] == {"unknown_type": 1})


async def test_oversize_frame_closes_with_message_too_big(node: GossipNode) -> None:
    """A frame over max_frame closes the link with 1009 and is counted."""
    ws = await _raw_peer(node)
    await ws.send(b"\0" * (65 * 1024))
    _, code = await _closed_by_node(ws)
    assert code == 1009
    await until(lambda: node.stats()["rejected_by_reason"] == {"oversize": 1})


async def test_missing_hello_closes_the_link(node: GossipNode) -> None:
    """A link whose first message is not a hello is closed with 1008."""
    ws = await connect(f"ws://127.0.0.1:{node.port}", proxy=None, compression=None)
    await ws.send(encode(Ack("raw", b"\0" * 12, True, "ok")))
    _, code = await _closed_by_node(ws)
    assert code == 1008
    await until(lambda: node.stats()["rejected_by_reason"] == {"no_hello": 1})


async def test_violating_peer_is_backed_off() -> None:
    """A peer that just broke the protocol is refused when it reconnects at once."""
    gossip = _node("node-b", ArrayHost(2, EMBEDDING), backoff_initial=TIMEOUT * 4)
    await gossip.start()
    try:
        ws = await _raw_peer(gossip)
        await ws.send(b"\xc1")
        await _closed_by_node(ws)
        await until(lambda: "raw" not in gossip.stats()["peers"])
        ws = await _raw_peer(gossip)
        _, code = await _closed_by_node(ws)
        assert code == 1008
    finally:
        await gossip.close()


async def test_close_says_going_away_and_is_idempotent() -> None:
    """Closing a node closes its links with 1001; a second close does nothing."""
    gossip = _node("node-b", ArrayHost(2, EMBEDDING))
    await gossip.start()
    ws = await _raw_peer(gossip)
    await gossip.close()
    _, code = await _closed_by_node(ws)
    assert code == 1001
    await gossip.close()
    with pytest.raises(InvalidStateError):
        await gossip.start()


async def test_node_stops_dialling_itself() -> None:
    """An address that turns out to be the node itself is dialled once only."""
    gossip = _node("node-a", ArrayHost(1, EMBEDDING))
    await gossip.start()
    gossip.add_peer_address(f"ws://localhost:{gossip.port}")
    try:
        await until(lambda: len(gossip._tasks) == 1, timeout=TIMEOUT)
        assert gossip.stats()["known"] == {}
    finally:
        await gossip.close()


class RefusingHost(ArrayHost):
    """A host whose local check turns every blend down."""

    async def import_expert(
        self, expert: str, params: dict[str, np.ndarray], factor: float
    ) -> bool:
        return False


async def test_blend_refused_by_host_is_counted_not_applied() -> None:
    """A host that finds a blend worse locally keeps its weights; it is counted."""
    refusing = RefusingHost(1, EMBEDDING)
    node_b = _node("node-b", ArrayHost(2, [1.0, 0.4, 0.1]))
    await node_b.start()
    node_a = _node("node-a", refusing, [f"ws://127.0.0.1:{node_b.port}"])
    await node_a.start()
    before = {name: dict(params) for name, params in refusing.weights.items()}
    try:
        await until(
            lambda: node_a.stats()["undone"] > 0
        )
    finally:
        await node_a.close()
        await node_b.close()
    for name, params in before.items():
        for key, value in params.items():
            np.testing.assert_array_equal(refusing.weights[name][key], value)
