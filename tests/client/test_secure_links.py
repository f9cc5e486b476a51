"""Clients wired with a cluster key and TLS gossip only with their own kind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from sfhfe_node.client.daemon import ClientNode
from sfhfe_node.config import settings_for
from tests.client.test_daemon import make_stream
from tests.conftest import TIMEOUT, free_port


def node_settings(tmp: Path, name: str, port: int, peer: int, **extra: str):
    stream = tmp / f"{name}.csv"
    if not stream.exists():
        make_stream(stream, np.random.default_rng(len(name)).integers(0, 2, size=4000))
    scheme = "wss" if "tls_cert" in extra else "ws"
    return settings_for(
        "client",
        node_id=name,
        stream=f"csv:{stream}",
        target="y",
        listen=f"127.0.0.1:{port}",
        advertise=f"{scheme}://127.0.0.1:{port}",
        peers=f"{scheme}://127.0.0.1:{peer}",
        api="127.0.0.1:0",
        state_dir=str(tmp / name),
        gossip_interval="0.2",
        rate="2000",
        stay="true",
        **extra,
    )


async def run_pair(first, second) -> tuple[ClientNode, ClientNode]:
    """Run two nodes until both streams are done; return them stopped."""
    nodes = [ClientNode(first), ClientNode(second)]
    tasks = [asyncio.create_task(node.run()) for node in nodes]
    async with asyncio.timeout(TIMEOUT * 4):
        while not all(node.stream_done for node in nodes):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    for node in nodes:
        node.request_stop()
    assert await asyncio.gather(*tasks) == [0, 0]
    return nodes[0], nodes[1]


async def test_shared_cluster_key_gossips(tmp_path: Path) -> None:
    """Two nodes holding the same key accept each other's weights."""
    key = tmp_path / "cluster.key"
    key.write_text("a-cluster-key-of-enough-length\n")
    a, b = free_port(), free_port()
    first, second = await run_pair(
        node_settings(tmp_path, "alpha", a, b, cluster_key_file=str(key)),
        node_settings(tmp_path, "beta", b, a, cluster_key_file=str(key)),
    )
    assert first.gossip.stats()["accepted"] > 0
    assert second.gossip.stats()["accepted"] > 0


async def test_wrong_cluster_key_is_refused(tmp_path: Path) -> None:
    """A node with another key gets nothing accepted and is counted as rejected."""
    good, bad = tmp_path / "good.key", tmp_path / "bad.key"
    good.write_text("the-right-cluster-key-0123456789")
    bad.write_text("a-wrong-cluster-key-9876543210")
    a, b = free_port(), free_port()
    first, second = await run_pair(
        node_settings(tmp_path, "alpha", a, b, cluster_key_file=str(good)),
        node_settings(tmp_path, "mallory", b, a, cluster_key_file=str(bad)),
    )
    assert first.gossip.stats()["accepted"] == 0
    assert second.gossip.stats()["accepted"] == 0
    assert first.gossip.stats()["rejected"] + second.gossip.stats()["rejected"] > 0


async def test_tls_gossip_between_clients(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    """Clients given a certificate gossip over wss:// and verify each other."""
    cert, key = certificate
    tls = {"tls_cert": str(cert), "tls_key": str(key), "tls_ca": str(cert)}
    a, b = free_port(), free_port()
    first, second = await run_pair(
        node_settings(tmp_path, "alpha", a, b, **tls),
        node_settings(tmp_path, "beta", b, a, **tls),
    )
    assert first.advertise.startswith("wss://")
    assert first.gossip.stats()["accepted"] > 0
    assert second.gossip.stats()["accepted"] > 0
