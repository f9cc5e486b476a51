"""Peer discovery: ask the coordinator which nodes to gossip with.

The coordinator answers ``GET /v1/peers?node=ID&k=N`` with
``{"node": ID, "peers": [{"node_id", "gossip", "embedding", "last_seen",
"similarity"}, ...]}``, most similar first. :func:`parse_peers` checks that
answer without I/O; :class:`Discovery` polls it and hands every usable gossip
address to a callback, normally :meth:`GossipNode.add_peer_address`.
"""

from __future__ import annotations

import asyncio
import enum
import json
import ssl
from collections.abc import Callable, Iterator

import aiohttp

from sfhfe_node.errors import ConfigError, InvalidStateError, ProtocolError
from sfhfe_node.gossip.protocol import MAX_ADDRESSES, is_address
from sfhfe_node.logs import gossip_log
from sfhfe_node.retry import backoff_delays, is_retryable

__all__ = ["Discovery", "DiscoveryState", "parse_peers"]

MAX_BODY = 256 * 1024


def parse_peers(body: bytes, node_id: str) -> list[str]:
    """The gossip addresses in a ``/v1/peers`` answer, most similar first.

    Skips entries without an address and the node's own entry; raises
    :class:`ProtocolError` (``bad_peers``) when the body is not the documented
    shape. At most 64 addresses are returned.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_peers", f"peers answer is not JSON: {exc}") from None
    peers = document.get("peers") if isinstance(document, dict) else None
    if not isinstance(peers, list):
        raise ProtocolError("bad_peers", "peers answer lacks a 'peers' list")
    addresses: list[str] = []
    for entry in peers:
        if not isinstance(entry, dict):
            raise ProtocolError("bad_peers", "every peers entry must be an object")
        address = entry.get("gossip")
        if address is None or entry.get("node_id") == node_id:
            continue
        if not is_address(address):
            raise ProtocolError(
                "bad_peers", f"gossip address {str(address)[:80]!r} is not ws(s)://"
            )
        if address not in addresses:
            addresses.append(address)
    return addresses[:MAX_ADDRESSES]


class DiscoveryState(enum.Enum):
    """Lifecycle of a :class:`Discovery` poller."""

    CREATED = "created"
    RUNNING = "running"
    CLOSED = "closed"


class Discovery:
    """Poll the coordinator for peers and pass their addresses on.

    Parameters
    ----------
    server
        Coordinator base URL, ``http://`` or ``https://`` (no trailing path).
    node_id
        This node's id, sent as ``node`` so that the coordinator ranks peers
        by similarity to it and leaves it out.
    add_peer
        Called with every address found, each poll; it must tolerate
        addresses it already knows (``GossipNode.add_peer_address`` does).
    token
        Bearer token for the coordinator, or ``None``.
    k
        Peers asked for per poll (default 8). More finds better candidates
        for the peer table and opens more links.
    interval
        Seconds between polls after a success (default 60.0).
    ssl_context
        TLS context for an ``https://`` coordinator (``None``: the default).
    backoff_initial, backoff_cap
        Delays in seconds after a failed poll (defaults 1.0 and 300.0),
        jittered; reset by a success.
    """

    def __init__(
        self,
        server: str,
        node_id: str,
        add_peer: Callable[[str], None],
        *,
        token: str | None = None,
        k: int = 8,
        interval: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        backoff_initial: float = 1.0,
        backoff_cap: float = 300.0,
    ) -> None:
        if not server.startswith(("http://", "https://")):
            raise ConfigError(f"discovery needs an http(s) URL, got {server[:80]!r}")
        if not 1 <= k <= 256 or interval <= 0:
            raise ConfigError(
                f"discovery needs 1 <= k <= 256 and interval > 0; got {k}, {interval}"
            )
        self.server = server.rstrip("/")
        self.node_id = node_id
        self.add_peer = add_peer
        self.token = token
        self.k = k
        self.interval = interval
        self.ssl_context = ssl_context
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self.state = DiscoveryState.CREATED
        self.polls = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling in a background task."""
        if self.state is not DiscoveryState.CREATED:
            raise InvalidStateError(
                f"cannot start discovery that is {self.state.value}"
            )
        self.state = DiscoveryState.RUNNING
        self._task = asyncio.get_running_loop().create_task(
            self._poll_forever(), name="discovery"
        )

    async def close(self) -> None:
        """Stop polling; closing twice is harmless."""
        self.state = DiscoveryState.CLOSED
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def poll_once(self, session: aiohttp.ClientSession) -> list[str]:
        """Ask once, pass every address to ``add_peer`` and return them."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        params = {"node": self.node_id, "k": str(self.k)}
        async with session.get(
            self.server + "/v1/peers", params=params, headers=headers,
            ssl=self.ssl_context if self.ssl_context is not None else True,
        ) as response:
            response.raise_for_status()
            body = await response.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise ProtocolError("bad_peers", f"peers answer exceeds {MAX_BODY} bytes")
        addresses = parse_peers(body, self.node_id)
        for address in addresses:
            self.add_peer(address)
        self.polls += 1
        return addresses

    async def _poll_forever(self) -> None:
        delays = self._delays()
        timeout = aiohttp.ClientTimeout(total=30.0)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while self.state is DiscoveryState.RUNNING:
                try:
                    found = await self.poll_once(session)
                except Exception as exc:  # classified below; the loop must live on
                    self.failures += 1
                    delay = next(delays)
                    kind = "retry" if is_retryable(exc) else "bad answer, retry"
                    gossip_log.info(
                        "peer discovery failed (%s); %s in %.1f s",
                        str(exc)[:200] or type(exc).__name__, kind, delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                gossip_log.debug("discovery found %d peer address(es)", len(found))
                delays = self._delays()
                await asyncio.sleep(self.interval)

    def _delays(self) -> Iterator[float]:
        return backoff_delays(self.backoff_initial, 2.0, self.backoff_cap)
