"""The gossip node: websocket links to peers, driven by the I/O-free pieces.

:class:`GossipNode` serves websockets (``wss://`` with a TLS context), dials
its peers, sends ``hello`` and ``peers`` on every link, lets a
:class:`~sfhfe_node.gossip.peers.PeerTable` choose the peers it gossips with,
sends them its most-used experts every ``interval`` seconds, and once per
round hands the experts it received to the learner as its peers' latest
models (``keep_peer_weights``) and, with ``blend`` above 0, combines them
(:func:`~sfhfe_node.gossip.merge.combine`) and blends the result into the
learner's own experts, through the :class:`GossipHost` interface. The wire
format, authentication and what a receiver does with each bad frame are
described in :mod:`sfhfe_node.gossip.protocol`.

This module holds the node's lifecycle and wiring; the work is done by
:mod:`.handler` (what happens on each link, from hello to close, over the
per-link state of :mod:`.links`), :mod:`.dialer` (dialling and redialling
with capped jittered back-off), :mod:`.exchange` (the rounds),
:mod:`.penalties` (back-off of misbehaving or dead peers) and :mod:`.ledger`
(counters and per-peer records).
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from collections.abc import Coroutine, Iterator
from typing import Any, Protocol

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve

from sfhfe_node.errors import ConfigError, InvalidStateError, ProtocolError
from sfhfe_node.gossip.auth import check_key
from sfhfe_node.gossip.dialer import Dialer
from sfhfe_node.gossip.exchange import ENVELOPE_BYTES, Exchange, frame_bytes, frame_cap
from sfhfe_node.gossip.handler import LinkHandler
from sfhfe_node.gossip.ledger import Ledger
from sfhfe_node.gossip.links import CLOSE_GOING_AWAY, CLOSE_TRY_LATER, Link
from sfhfe_node.gossip.merge import NORM_RATIO, RoundBuffer
from sfhfe_node.gossip.peers import PeerTable
from sfhfe_node.gossip.penalties import Penalties
from sfhfe_node.gossip.protocol import is_address, is_node_id
from sfhfe_node.logs import gossip_log
from sfhfe_node.retry import backoff_delays

__all__ = ["GossipHost", "GossipNode", "NodeState", "frame_cap"]

_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


class GossipHost(Protocol):
    """What a gossip node needs from the learner it serves.

    The synchronous methods run on the event loop and must be cheap; the two
    coroutines may move work to a thread. ``records()`` doubles as the
    sample count of every expert: it is sent in ``weights`` messages and
    weighs a peer's update against the node's own records.
    """

    def embedding(self) -> np.ndarray:
        """The node embedding, float32 of length D (at most 64)."""
        ...

    def expert_usage(self) -> dict[str, float]:
        """Share of use of each expert, by expert name."""
        ...

    def records(self) -> int:
        """Records the learner has learned from so far."""
        ...

    def weight_spec(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Every expert's parameter names and exact shapes."""
        ...

    async def export_experts(
        self, names: list[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        """Copies of the parameters of the named experts."""
        ...

    async def import_expert(
        self, expert: str, params: dict[str, np.ndarray], factor: float
    ) -> bool | None:
        """Blend ``params`` into ``expert``: ``own + factor * (params - own)``.

        A host may check the blend against its own data and undo it; it then
        returns False and the round counts the merge as ``undone``.
        """
        ...

    def own_norm(self, expert: str) -> float:
        """L2 norm of the node's own weights of ``expert`` (may be cached)."""
        ...

    async def keep_peer_weights(
        self, updates: dict[str, dict[str, dict[str, np.ndarray]]]
    ) -> int:
        """Keep checked weights (peer -> expert -> parameters) as each peer's
        latest model; return how many experts were kept.

        A host without peer models keeps none and returns 0.
        """
        ...


class NodeState(enum.Enum):
    """Lifecycle of a :class:`GossipNode`."""

    CREATED = "created"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class GossipNode:
    """Exchange expert weights with the most similar peers over websockets.

    Parameters
    ----------
    node_id
        This node's id, 1-64 of ``[A-Za-z0-9._-]``; the tie-breaker for
        duplicate links.
    host
        The learner side, see :class:`GossipHost`.
    listen
        ``(host, port)`` to serve on; port 0 picks a free one, read back from
        :attr:`port` after :meth:`start`.
    advertise
        The ``ws://`` or ``wss://`` address peers should dial, sent in
        ``hello``. ``None`` derives it from ``listen`` (``wss://`` with
        ``ssl_server``) unless that is a wildcard address, in which case no
        address is advertised.
    peers
        Addresses to dial and keep dialling, with capped jittered backoff.
        Addresses learned from discovery or ``peers`` messages are dialled
        the same way but forgotten after ``forget_after`` failed dials in a
        row.
    cluster_key
        Shared secret of at least 16 bytes; every frame is then signed and
        unsigned or wrongly signed frames are refused. ``None`` (the default)
        runs unauthenticated and says so in a warning at start.
    ssl_server, ssl_client
        TLS contexts for serving ``wss://`` and for dialling ``wss://``
        addresses (``None``: plain ``ws://`` server; for dialling, the
        default context with the system's certificate authorities).
    replay_window
        Seconds a frame's timestamp may differ from this node's clock
        (default 120.0); see :class:`~sfhfe_node.gossip.auth.ReplayGuard`.
    k, margin, cooldown, ema, trust_after, explore_period
        Peer selection, see :class:`~sfhfe_node.gossip.peers.PeerTable`.
    interval
        Seconds between exchange rounds (default 5.0). Shorter spreads
        knowledge faster and costs bandwidth and learner time.
    experts_per_exchange
        How many of the most-used experts are sent per round; ``None`` (the
        default) sends every expert. All of a round's experts travel in one
        frame when the cap allows, so sending more costs bandwidth but little
        per-frame overhead.
    max_frame
        Largest frame accepted, in bytes; larger frames close the link with
        1009. ``None`` (the default) derives it from the host's largest
        expert with :func:`frame_cap`; a value too small for that expert is
        refused at :meth:`start`.
    blend
        Largest share of the way toward its peers' combined weights a node
        moves per round, in [0, 1] (default 0.2); see
        :func:`~sfhfe_node.gossip.merge.combine`. Higher learns faster from
        peers and forgets the node's own fit faster; 0 keeps the own experts
        local and leaves peers' weights to the host's peer models.
    clip_ratio
        Largest norm of one peer's delta, as a multiple of the node's own
        weights' norm (default 1.0).
    norm_ratio
        An update is rejected when its L2 norm exceeds this many times the
        node's own norm plus 1 (default 10.0).
    hello_timeout
        Seconds a new link may take to send its ``hello`` (default 10.0).
    ping_interval, ping_timeout
        Websocket keepalive, in seconds (defaults 20.0 and 20.0): a link whose
        ping is not answered in time is closed with 1011, its peer evicted and
        backed off. Training runs off the event loop, so a long training step
        does not delay the pong.
    close_timeout
        Seconds the closing handshake may take before the connection is
        dropped (default 5.0); a dead peer is evicted only then.
    send_queue
        Frames queued per link before the oldest ``weights`` frame is dropped
        (default 16).
    max_links
        Links accepted at once (default 32); more are refused with 1013.
    max_addresses
        Addresses dialled at most (default 64), configured ones included.
    forget_after
        Failed dials in a row after which a learned address is forgotten
        (default 5).
    backoff_initial, backoff_cap
        First and largest redial and penalty delay in seconds (defaults 0.5
        and 30.0).
    """

    def __init__(
        self,
        node_id: str,
        host: GossipHost,
        *,
        listen: tuple[str, int],
        advertise: str | None,
        peers: list[str],
        cluster_key: bytes | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        replay_window: float = 120.0,
        k: int = 3,
        margin: float = 0.05,
        cooldown: float = 60.0,
        ema: float = 0.3,
        trust_after: int = 3,
        explore_period: float | None = 300.0,
        interval: float = 5.0,
        experts_per_exchange: int | None = None,
        max_frame: int | None = None,
        blend: float = 0.2,
        clip_ratio: float = 1.0,
        norm_ratio: float = NORM_RATIO,
        hello_timeout: float = 10.0,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        close_timeout: float = 5.0,
        send_queue: int = 16,
        max_links: int = 32,
        max_addresses: int = 64,
        forget_after: int = 5,
        backoff_initial: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        if not is_node_id(node_id):
            raise ConfigError(f"node id {node_id[:80]!r} is not 1-64 of A-Za-z0-9._-")
        for address in [*peers, *([advertise] if advertise else [])]:
            if not is_address(address):
                raise ConfigError(f"{address[:80]!r} is not a ws:// or wss:// address")
        if interval <= 0 or (experts_per_exchange or 0) < 0 or send_queue < 1:
            raise ConfigError(
                f"gossip needs interval > 0, experts_per_exchange >= 0 and "
                f"send_queue >= 1; got {interval}, {experts_per_exchange}, "
                f"{send_queue}"
            )
        if max_frame is not None and max_frame < 1024:
            raise ConfigError(f"max_frame must be >= 1024 bytes, got {max_frame}")
        if not 0.0 <= blend <= 1.0 or not clip_ratio > 0:
            raise ConfigError(
                f"gossip needs blend in [0, 1] and clip_ratio > 0; got {blend}, "
                f"{clip_ratio}"
            )
        if min(ping_interval, ping_timeout, close_timeout) <= 0:
            raise ConfigError(
                f"gossip needs ping_interval, ping_timeout and close_timeout > 0; "
                f"got {ping_interval}, {ping_timeout} and {close_timeout}"
            )
        self.node_id = node_id
        self.host = host
        self.listen = listen
        self.advertise = advertise
        self.cluster_key = None if cluster_key is None else check_key(cluster_key)
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.interval = interval
        self.experts_per_exchange = experts_per_exchange
        self.max_frame = max_frame
        self.blend = blend
        self.clip_ratio = clip_ratio
        self.norm_ratio = norm_ratio
        self.hello_timeout = hello_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.send_queue = send_queue
        self.max_links = max_links
        self.max_addresses = max_addresses
        self.forget_after = forget_after
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self.port: int | None = None
        self.state = NodeState.CREATED
        self._table = PeerTable(
            k, margin, cooldown, ema, trust_after, explore_period=explore_period
        )
        self._buffer = RoundBuffer()
        self._penalties = Penalties(self._new_delays)
        linked: dict[str, Link] = {}
        self._ledger = Ledger(linked)
        self._links = LinkHandler(
            self, linked, self._ledger, self._penalties, self._table,
            self._buffer, replay_window,
        )
        self._dialer = Dialer(self, self._links, peers, self._running, self._new_delays)
        self._exchange = Exchange(
            self, self._links, self._ledger, self._table, self._buffer
        )
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()

    # Lifecycle

    async def start(self) -> None:
        """Start serving, dialling and exchanging; the bound port is in ``port``."""
        if self.state is not NodeState.CREATED:
            raise InvalidStateError(
                f"cannot start a gossip node that is {self.state.value}"
            )
        spec = self.host.weight_spec()
        largest = ENVELOPE_BYTES + max(
            (frame_bytes(p) for p in spec.values()), default=0
        )
        if self.max_frame is None:
            self.max_frame = frame_cap(spec)
        elif self.max_frame < largest:
            raise ConfigError(
                f"max_frame={self.max_frame} is too small for the largest expert "
                f"({largest} bytes in a frame)"
            )
        host, port = self.listen
        self._server = await serve(
            self._serve, host, port, max_size=self.max_frame, compression=None,
            close_timeout=self.close_timeout, ssl=self.ssl_server,
            ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.advertise is None and host not in _WILDCARD_HOSTS:
            bracketed = f"[{host}]" if ":" in host else host
            scheme = "wss" if self.ssl_server is not None else "ws"
            self.advertise = f"{scheme}://{bracketed}:{self.port}"
        self.state = NodeState.RUNNING
        gossip_log.info(
            "listening on %s:%d as %s (%s, frame cap %d bytes)", host, self.port,
            self.node_id, "tls" if self.ssl_server else "plain", self.max_frame,
        )
        if self.cluster_key is None:
            gossip_log.warning(
                "no cluster key: gossip frames are not authenticated and any "
                "host that reaches the port can join"
            )
        for address in self._dialer.addresses:
            self._spawn(self._dialer.dial_forever(address), f"dial {address}")
        self._spawn(self._exchange.run_forever(), "exchange")

    async def close(self) -> None:
        """Close every link with 1001 and stop every task; closing twice is harmless."""
        if self.state in (NodeState.CLOSING, NodeState.CLOSED):
            await self._closed.wait()
            return
        if self.state is NodeState.CREATED:
            self.state = NodeState.CLOSED
            self._closed.set()
            return
        self.state = NodeState.CLOSING

        # Stop accepting; the server closes its own links with 1001.
        assert self._server is not None
        self._server.close(close_connections=True)

        # Close the links this node dialled.
        dialled = [link.ws for link in self._links.open if link.dialed]
        await asyncio.gather(
            *(ws.close(CLOSE_GOING_AWAY, "shutting down") for ws in dialled),
            return_exceptions=True,
        )

        # Stop the dial loops, the writers and the exchange loop.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

        await self._server.wait_closed()
        self.state = NodeState.CLOSED
        self._closed.set()
        gossip_log.info("closed %s", self.node_id)

    def add_peer_address(self, address: str) -> None:
        """Dial ``address`` from now on (for example one found by discovery).

        A learned address is forgotten after ``forget_after`` failed dials in
        a row; at most ``max_addresses`` are dialled.
        """
        if self.state in (NodeState.CLOSING, NodeState.CLOSED):
            raise InvalidStateError(
                f"cannot add a peer to a gossip node that is {self.state.value}"
            )
        if not is_address(address):
            raise ProtocolError(
                "bad_address", f"{str(address)[:80]!r} is not a ws:// or wss:// address"
            )
        if self._dialer.add(address) and self.state is NodeState.RUNNING:
            self._spawn(self._dialer.dial_forever(address), f"dial {address}")

    def stats(self) -> dict[str, Any]:
        """Counters and the peer view, as plain data (JSON-ready)."""
        linked = set(self._links.links)
        roles = {peer: "similar" for peer in self._table.similar}
        if self._table.explorer is not None:
            roles[self._table.explorer] = "explore"
        totals = self._ledger.totals
        rejected = self._ledger.rejected
        return {
            "sent": totals["sent"],
            "accepted": totals["accepted"],
            "rejected": sum(rejected.values()),
            "rejected_by_reason": dict(rejected),
            "dropped": totals["dropped"],
            "bytes_sent": totals["bytes_sent"],
            "bytes_received": totals["bytes_received"],
            "rounds": self._exchange.round,
            "merges": totals["merges"],
            "undone": totals["undone"],
            "peer_updates": totals["peer_updates"],
            "authenticated": self.cluster_key is not None,
            "peers": [peer for peer in self._table.selected if peer in linked],
            "known": self._ledger.view(roles),
        }

    def _running(self) -> bool:
        return self.state is NodeState.RUNNING

    def _new_delays(self) -> Iterator[float]:
        return backoff_delays(self.backoff_initial, 2.0, self.backoff_cap)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            gossip_log.error(
                "task %s failed", task.get_name(), exc_info=task.exception()
            )

    async def _serve(self, ws: ServerConnection) -> None:
        full = len(self._links.open) >= self.max_links
        if self.state is not NodeState.RUNNING or full:
            await ws.close(CLOSE_TRY_LATER, "try later")
            return
        await self._links.run(Link(ws, False, None, self.send_queue))
