"""Peer discovery against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sfhfe_node.errors import ProtocolError
from sfhfe_node.gossip.discovery import Discovery, parse_peers
from tests.gossip.host import until

TOKEN = "discovery-token-0123456789"


def _answer(*entries: dict) -> bytes:
    return json.dumps({"node": "node-a", "peers": list(entries)}).encode()


def _entry(node_id: str, gossip: str | None) -> dict:
    return {
        "node_id": node_id, "gossip": gossip, "embedding": [1.0, 0.0],
        "last_seen": 1.0, "similarity": 0.9,
    }


def test_addresses_come_in_order_without_self_or_blanks() -> None:
    """The node's own entry and entries without an address are skipped."""
    body = _answer(
        _entry("node-b", "ws://10.0.0.2:7070"),
        _entry("node-a", "ws://10.0.0.1:7070"),
        _entry("node-c", None),
        _entry("node-d", "wss://10.0.0.4:7070"),
    )
    assert parse_peers(body, "node-a") == ["ws://10.0.0.2:7070", "wss://10.0.0.4:7070"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"peers": 3}', b'{"peers": [7]}',
     _answer(_entry("node-b", "http://10.0.0.2"))],
)
def test_malformed_answer_is_refused(body: bytes) -> None:
    """An answer that is not the documented shape is a bad_peers error."""
    with pytest.raises(ProtocolError) as caught:
        parse_peers(body, "node-a")
    assert caught.value.reason == "bad_peers"


@pytest.fixture
async def coordinator(port: int) -> AsyncIterator[list[dict]]:
    """A minimal /v1/peers server; yields the list of requests it saw."""
    seen: list[dict] = []

    async def peers(request: web.Request) -> web.Response:
        seen.append(
            {"query": dict(request.query), "auth": request.headers.get("Authorization")}
        )
        if len(seen) == 1:
            return web.Response(status=503)
        return web.Response(
            body=_answer(_entry("node-b", "ws://127.0.0.1:7071")),
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/v1/peers", peers)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield seen
    await runner.cleanup()


async def test_poller_retries_then_passes_addresses_on(
    coordinator: list[dict], port: int
) -> None:
    """After a 503 the poller retries and hands the found address to add_peer."""
    found: list[str] = []
    discovery = Discovery(
        f"http://127.0.0.1:{port}", "node-a", found.append, token=TOKEN, k=5,
        interval=30.0, backoff_initial=0.05, backoff_cap=0.1,
    )
    discovery.start()
    try:
        await until(lambda: found == ["ws://127.0.0.1:7071"])
    finally:
        await discovery.close()
        await discovery.close()
    assert discovery.failures == 1 and discovery.polls == 1
    assert coordinator[0]["query"] == {"node": "node-a", "k": "5"}
    assert coordinator[1]["auth"] == f"Bearer {TOKEN}"


async def test_poll_once_raises_for_an_http_error(port: int) -> None:
    """A refused connection surfaces as an aiohttp error for the caller."""
    discovery = Discovery(f"http://127.0.0.1:{port}", "node-a", print)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await discovery.poll_once(session)
