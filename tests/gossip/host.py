"""A small :class:`GossipHost` over numpy arrays, and helpers for node tests."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sfhfe_node.gossip.merge import blend_params, params_norm
from sfhfe_node.gossip.node import GossipNode
from sfhfe_node.gossip.protocol import Hello, Message, decode, encode
from tests.conftest import TIMEOUT

__all__ = [
    "SPEC",
    "ArrayHost",
    "closed_by_node",
    "make_node",
    "next_message",
    "raw_peer",
    "until",
]

EMBEDDING = [1.0, 0.5, 0.0]

SPEC: dict[str, dict[str, tuple[int, ...]]] = {
    name: {
        "0.weight": (48, 8),
        "0.bias": (48,),
        "2.weight": (32, 48),
        "2.bias": (32,),
        "4.weight": (2, 32),
        "4.bias": (2,),
    }
    for name in ("geometry", "temporal", "drift")
}


class ArrayHost:
    """Experts as dicts of float32 arrays; imports blend in place and are logged,
    peers' weights are kept by peer."""

    def __init__(self, seed: int, embedding: list[float], usage: float = 1.0) -> None:
        rng = np.random.default_rng(seed)
        self.weights = {
            expert: {
                name: rng.normal(0.0, 0.5, shape).astype(np.float32)
                for name, shape in shapes.items()
            }
            for expert, shapes in SPEC.items()
        }
        self.vector = np.asarray(embedding, dtype=np.float32)
        self.usage = {expert: usage / (i + 1) for i, expert in enumerate(SPEC)}
        self.imports: list[tuple[str, float]] = []
        self.peer_weights: dict[str, dict[str, dict[str, np.ndarray]]] = {}

    def embedding(self) -> np.ndarray:
        return self.vector

    def expert_usage(self) -> dict[str, float]:
        return dict(self.usage)

    def records(self) -> int:
        return 1000

    def weight_spec(self) -> dict[str, dict[str, tuple[int, ...]]]:
        return SPEC

    async def export_experts(
        self, names: list[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        return {
            name: {key: value.copy() for key, value in self.weights[name].items()}
            for name in names
        }

    async def import_expert(
        self, expert: str, params: dict[str, np.ndarray], factor: float
    ) -> None:
        self.weights[expert] = blend_params(self.weights[expert], params, factor)
        self.imports.append((expert, factor))

    async def keep_peer_weights(
        self, updates: dict[str, dict[str, dict[str, np.ndarray]]]
    ) -> int:
        for peer, experts in updates.items():
            kept = self.peer_weights.setdefault(peer, {})
            for expert, params in experts.items():
                kept[expert] = {key: value.copy() for key, value in params.items()}
        return sum(len(experts) for experts in updates.values())

    def own_norm(self, expert: str) -> float:
        return params_norm(self.weights[expert])


async def until(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``check()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def make_node(
    node_id: str, host: ArrayHost, peers: list[str] | None = None, **options: Any
) -> GossipNode:
    """A node on 127.0.0.1 with fast test timings; ``options`` override them."""
    settings: dict[str, Any] = {
        "interval": 0.1,
        "cooldown": 0.0,
        "backoff_initial": 0.05,
        "backoff_cap": 0.2,
        "hello_timeout": 2.0,
        "close_timeout": 0.5,
    }
    settings.update(options)
    if settings["backoff_cap"] < settings["backoff_initial"]:
        settings["backoff_cap"] = settings["backoff_initial"]
    return GossipNode(
        node_id, host, listen=("127.0.0.1", 0), advertise=None, peers=peers or [],
        **settings,
    )


async def raw_peer(
    node: GossipNode,
    key: bytes | None = None,
    sender: str = "raw",
    context: ssl.SSLContext | None = None,
    **options: Any,
) -> ClientConnection:
    """Connect a bare websocket client to ``node`` and send a hello by hand."""
    scheme = "wss" if context is not None else "ws"
    ws = await connect(
        f"{scheme}://127.0.0.1:{node.port}", proxy=None, compression=None,
        ssl=context, **options,
    )
    assert isinstance(await next_message(ws, Hello, key), Hello)
    vector = np.asarray(EMBEDDING, np.float32)
    await ws.send(encode(Hello(sender, None, vector, {"temporal": 1.0}, 1000), key))
    return ws


async def next_message(
    ws: ClientConnection, kind: type, key: bytes | None = None
) -> Message:
    """Skip the node's other messages and return its next one of ``kind``."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            message = decode(await ws.recv(), key=key)
            if isinstance(message, kind):
                return message


async def closed_by_node(
    ws: ClientConnection, key: bytes | None = None
) -> tuple[list[Message], int]:
    """Read until the node closes the link; return its messages and close code."""
    messages: list[Message] = []
    with pytest.raises(ConnectionClosed) as caught:
        async with asyncio.timeout(TIMEOUT):
            while True:
                messages.append(decode(await ws.recv(), key=key))
    assert caught.value.rcvd is not None
    return messages, caught.value.rcvd.code
