"""The gossip node: websocket links to peers, driven by the I/O-free pieces.

:class:`GossipNode` serves websockets (``wss://`` with a TLS context), dials
its peers, sends ``hello`` and ``peers`` on every link, lets a
:class:`~sfhfe_node.gossip.peers.PeerTable` choose the peers it gossips with,
sends them its most-used experts every ``interval`` seconds, and once per
round combines the experts it received (:func:`~sfhfe_node.gossip.merge.combine`)
and blends the result into the learner, through the :class:`GossipHost`
interface. The wire format, authentication and what a receiver does with each
bad frame are described in :mod:`sfhfe_node.gossip.protocol`.

Every link has a writer task fed by a bounded
:class:`~sfhfe_node.gossip.sendqueue.SendQueue`, so a slow peer delays only
its own frames. Dead links are found by websocket keepalive pings; the peer
is evicted and backed off like a misbehaving one, and a redial waits for a
capped, jittered delay that resets after a link that worked.

Two nodes that dial each other end up with two links; each side keeps the
link dialled by the smaller node id and closes the other with reason
``duplicate`` (the dialler then waits until the kept link ends).
"""

from __future__ import annotations

import asyncio
import enum
import math
import re
import ssl
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException

from sfhfe_node.errors import ConfigError, InvalidStateError, ProtocolError
from sfhfe_node.gossip.auth import ReplayGuard, check_key
from sfhfe_node.gossip.merge import (
    NORM_RATIO,
    RoundBuffer,
    Update,
    check_weights,
    combine,
    update_weight,
)
from sfhfe_node.gossip.peers import PeerEvent, PeerTable
from sfhfe_node.gossip.protocol import (
    MAX_ADDRESSES,
    Ack,
    Error,
    Hello,
    Message,
    Peers,
    TensorError,
    Weights,
    decode,
    encode,
    is_address,
)
from sfhfe_node.gossip.sendqueue import SendQueue
from sfhfe_node.logs import gossip_log
from sfhfe_node.retry import backoff_delays

__all__ = ["GossipHost", "GossipNode", "NodeState", "frame_cap"]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_KEEPALIVE = 1011
CLOSE_TRY_LATER = 1013
MAX_KNOWN = 1024
MIN_FRAME = 64 * 1024
PEERS_EVERY = 10

_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_DROPPED_SILENTLY = ("stale", "replay")


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
    ) -> None:
        """Blend ``params`` into ``expert``: ``own + factor * (params - own)``."""
        ...

    def own_norm(self, expert: str) -> float:
        """L2 norm of the node's own weights of ``expert`` (may be cached)."""
        ...


def frame_cap(spec: dict[str, dict[str, tuple[int, ...]]]) -> int:
    """A frame cap that fits every expert of ``spec`` in one frame, twice over.

    A ``weights`` frame holds 4 bytes per value, about 12 bytes per parameter,
    about 40 per expert and under 200 bytes of envelope; doubling leaves room
    for experts that grow. Never below 64 KiB.
    """
    return max(MIN_FRAME, 2 * (256 + sum(_frame_bytes(p) for p in spec.values())))


def _frame_bytes(params: dict[str, tuple[int, ...]]) -> int:
    """Bytes one expert takes in a ``weights`` frame, slightly overestimated."""
    return 40 + sum(4 * math.prod(shape) + 64 for shape in params.values())


class NodeState(enum.Enum):
    """Lifecycle of a :class:`GossipNode`."""

    CREATED = "created"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class _Outcome(enum.Enum):
    FAILED = "failed"  # never got past the hello
    ENDED = "ended"  # was established, ended without fault of the peer
    VIOLATION = "violation"  # closed for a protocol violation
    DEAD = "dead"  # keepalive pings went unanswered
    SELF = "self"  # the other end is this node
    DUPLICATE = "duplicate"  # another link to the same peer was kept


@dataclass
class _PeerRecord:
    address: str | None
    similarity: float = 0.0
    trust: float = 0.0
    sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    bytes_received: int = 0
    dropped: int = 0
    last_seen: float = 0.0


class _Link:
    """One websocket connection to one peer, in either direction."""

    def __init__(
        self,
        ws: ServerConnection | ClientConnection,
        dialed: bool,
        address: str | None,
        queue_limit: int,
    ) -> None:
        self.ws = ws
        self.dialed = dialed
        self.address = address
        self.peer_id: str | None = None
        self.outcome = _Outcome.FAILED
        self.ended = asyncio.Event()
        self.queue = SendQueue(queue_limit)
        self.wake = asyncio.Event()

    @property
    def label(self) -> str:
        return self.peer_id or self.address or "unidentified peer"


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
        peers and forgets the node's own fit faster.
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
        if _NODE_ID.fullmatch(node_id) is None:
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
        self._guard = ReplayGuard(replay_window)
        self._buffer = RoundBuffer()
        self._configured: set[str] = set(peers)
        self._addresses: list[str] = list(dict.fromkeys(peers))
        self._server: Server | None = None
        self._links: dict[str, _Link] = {}
        self._open: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._known: dict[str, _PeerRecord] = {}
        self._penalties: dict[str, tuple[float, Iterator[float]]] = {}
        self._totals: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._round = 0
        self._closed = asyncio.Event()

    # Lifecycle

    async def start(self) -> None:
        """Start serving, dialling and exchanging; the bound port is in ``port``."""
        if self.state is not NodeState.CREATED:
            raise InvalidStateError(
                f"cannot start a gossip node that is {self.state.value}"
            )
        spec = self.host.weight_spec()
        largest = 256 + max((_frame_bytes(p) for p in spec.values()), default=0)
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
        for address in self._addresses:
            self._spawn(self._dial_forever(address), f"dial {address}")
        self._spawn(self._exchange_forever(), "exchange")

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
        dialled = [link.ws for link in self._open if link.dialed]
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
        if address in self._addresses or address == self.advertise:
            return
        if len(self._addresses) >= self.max_addresses:
            gossip_log.debug(
                "not dialling %s: already %d addresses", address, self.max_addresses
            )
            return
        self._addresses.append(address)
        gossip_log.info("new peer address %s", address)
        if self.state is NodeState.RUNNING:
            self._spawn(self._dial_forever(address), f"dial {address}")

    def stats(self) -> dict[str, Any]:
        """Counters and the peer view, as plain data (JSON-ready)."""
        linked = set(self._links)
        roles = {peer: "similar" for peer in self._table.similar}
        if self._table.explorer is not None:
            roles[self._table.explorer] = "explore"
        return {
            "sent": self._totals["sent"],
            "accepted": self._totals["accepted"],
            "rejected": sum(self._rejected.values()),
            "rejected_by_reason": dict(self._rejected),
            "dropped": self._totals["dropped"],
            "bytes_sent": self._totals["bytes_sent"],
            "bytes_received": self._totals["bytes_received"],
            "rounds": self._round,
            "merges": self._totals["merges"],
            "authenticated": self.cluster_key is not None,
            "peers": [peer for peer in self._table.selected if peer in linked],
            "known": {
                peer: {
                    "address": record.address,
                    "role": roles.get(peer, "candidate" if peer in linked else "away"),
                    "similarity": record.similarity,
                    "trust": record.trust,
                    "sent": record.sent,
                    "accepted": record.accepted,
                    "rejected": sum(record.rejected.values()),
                    "rejected_by_reason": dict(record.rejected),
                    "bytes_sent": record.bytes_sent,
                    "bytes_received": record.bytes_received,
                    "dropped": record.dropped,
                    "last_seen": record.last_seen,
                }
                for peer, record in self._known.items()
            },
        }

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

    # Links

    async def _serve(self, ws: ServerConnection) -> None:
        if self.state is not NodeState.RUNNING or len(self._open) >= self.max_links:
            await ws.close(CLOSE_TRY_LATER, "try later")
            return
        await self._run_link(_Link(ws, False, None, self.send_queue))

    async def _dial_forever(self, address: str) -> None:
        delays = self._new_delays()
        failures = 0
        secure = address.startswith("wss://")
        while self.state is NodeState.RUNNING:
            link: _Link | None = None
            cause = "link ended"
            try:
                async with connect(
                    address, max_size=self.max_frame, compression=None, proxy=None,
                    open_timeout=self.hello_timeout, close_timeout=self.close_timeout,
                    ssl=self.ssl_client if secure else None,
                    ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                ) as ws:
                    link = _Link(ws, True, address, self.send_queue)
                    await self._run_link(link)
            except InvalidURI as exc:
                gossip_log.info("not dialling %s: %s", address, exc)
                return
            except (OSError, TimeoutError, WebSocketException) as exc:
                cause = str(exc) or type(exc).__name__
            if self.state is not NodeState.RUNNING:
                return
            outcome = link.outcome if link is not None else _Outcome.FAILED
            if outcome is _Outcome.SELF:
                gossip_log.info("not dialling %s again: it is this node", address)
                return
            if outcome is _Outcome.DUPLICATE and link is not None:
                kept = self._links.get(link.peer_id or "")
                if kept is not None:
                    await kept.ended.wait()
            if outcome in (_Outcome.ENDED, _Outcome.DUPLICATE):
                delays, failures = self._new_delays(), 0
            else:
                failures += 1
            if address not in self._configured and failures >= self.forget_after:
                gossip_log.info(
                    "forgetting %s after %d failed dials", address, failures
                )
                self._addresses.remove(address)
                return
            cause = outcome.value if outcome is not _Outcome.FAILED else cause
            delay = next(delays)
            gossip_log.info("redial %s in %.1f s after %s", address, delay, cause)
            await asyncio.sleep(delay)

    def _new_delays(self) -> Iterator[float]:
        return backoff_delays(self.backoff_initial, 2.0, self.backoff_cap)

    async def _run_link(self, link: _Link) -> None:
        self._open.add(link)
        writer = asyncio.get_running_loop().create_task(
            self._write_forever(link), name=f"write {link.label}"
        )
        try:
            self._queue(link, self._hello())
            hello = await asyncio.wait_for(self._first_hello(link), self.hello_timeout)
            if not await self._register(link, hello):
                return
            self._queue(link, self._peers_for(link.peer_id or ""))
            while True:
                message = await self._read(link)
                if message is not None:
                    await self._handle(link, message)
        except TimeoutError:
            await self._violation(link, ProtocolError("no_hello", "no hello in time"))
        except ProtocolError as error:
            await self._violation(link, error)
        except ConnectionClosed as closed:
            self._closed_by_transport(link, closed)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            link.queue.clear()
            self._open.discard(link)
            self._unregister(link)
            link.ended.set()

    async def _first_hello(self, link: _Link) -> Hello:
        while True:
            message = await self._read(link)
            if message is None:
                continue
            if not isinstance(message, Hello):
                raise ProtocolError("no_hello", f"first message is {message.TYPE}")
            return message

    async def _read(self, link: _Link) -> Message | None:
        """Read, authenticate and decode one frame; ``None`` if it was dropped."""
        frame = await link.ws.recv()
        size = len(frame)
        self._totals["bytes_received"] += size
        if link.peer_id is not None:
            record = self._record(link.peer_id, None)
            record.bytes_received += size
            record.last_seen = time.time()
        assert self.max_frame is not None
        try:
            message = decode(frame, self.max_frame, self.cluster_key)  # type: ignore
        except TensorError as error:
            if link.peer_id is None or error.sender != link.peer_id:
                raise
            await self._refuse(link, error.ref, error)
            return None
        try:
            self._guard.check(message.nonce, message.ts, time.time())
        except ProtocolError as error:
            gossip_log.debug("dropped a frame from %s: %s", link.label, error)
            self._reject(link.peer_id, error.reason)
            return None
        return message

    def _closed_by_transport(self, link: _Link, closed: ConnectionClosed) -> None:
        sent = closed.sent.code if closed.sent is not None else None
        if sent == CLOSE_TOO_BIG:
            self._reject(link.peer_id, "oversize")
            self._penalise(link)
        elif sent == CLOSE_KEEPALIVE and closed.rcvd is None:
            self._reject(link.peer_id, "keepalive")
            self._penalise(link)
            link.outcome = _Outcome.DEAD

    async def _write_forever(self, link: _Link) -> None:
        while True:
            frame = link.queue.pop()
            if frame is None:
                link.wake.clear()
                await link.wake.wait()
                continue
            try:
                await link.ws.send(frame)
            except ConnectionClosed:
                return
            self._totals["bytes_sent"] += len(frame)
            if link.peer_id is not None:
                self._record(link.peer_id, None).bytes_sent += len(frame)

    def _queue(self, link: _Link, message: Message) -> bool:
        """Put ``message`` on ``link``'s send queue; False if it is too big."""
        frame = encode(message, self.cluster_key)
        assert self.max_frame is not None
        if len(frame) > self.max_frame:
            gossip_log.info(
                "not sending %s: %d bytes exceed %d", message.TYPE, len(frame),
                self.max_frame,
            )
            return False
        dropped = link.queue.put(frame, droppable=isinstance(message, Weights))
        if dropped:
            self._totals["dropped"] += dropped
            if link.peer_id is not None:
                self._record(link.peer_id, None).dropped += dropped
        link.wake.set()
        return True

    async def _register(self, link: _Link, hello: Hello) -> bool:
        peer = hello.sender
        if peer == self.node_id:
            link.outcome = _Outcome.SELF
            await link.ws.close(CLOSE_NORMAL, "self")
            return False
        penalty = self._penalties.get(peer)
        if penalty is not None and penalty[0] > time.monotonic():
            link.outcome = _Outcome.VIOLATION
            self._reject(peer, "backed_off")
            await link.ws.close(CLOSE_POLICY, "backed_off")
            return False
        link.peer_id = peer
        existing = self._links.get(peer)
        if existing is not None:
            keep_new = self._prefer_new(link, existing)
            loser = existing if keep_new else link
            loser.outcome = _Outcome.DUPLICATE
            if keep_new:
                self._links[peer] = link
            gossip_log.debug("duplicate link to %s closed", peer)
            await loser.ws.close(CLOSE_NORMAL, "duplicate")
            if not keep_new:
                return False
        self._links[peer] = link
        link.outcome = _Outcome.ENDED
        record = self._record(peer, hello.address or link.address)
        record.last_seen = time.time()
        self._observe(link, hello)
        gossip_log.debug("link to %s open (%s)", peer, "out" if link.dialed else "in")
        return True

    def _prefer_new(self, new: _Link, old: _Link) -> bool:
        peer = new.peer_id or ""
        preferred = min(self.node_id, peer)

        def dialler(link: _Link) -> str:
            return self.node_id if link.dialed else peer

        if dialler(new) == dialler(old):
            return True
        return dialler(new) == preferred

    def _unregister(self, link: _Link) -> None:
        peer = link.peer_id
        if peer is None or self._links.get(peer) is not link:
            return
        del self._links[peer]
        self._buffer.drop_peer(peer)
        reason = {
            _Outcome.VIOLATION: "violation",
            _Outcome.DEAD: "keepalive",
        }.get(link.outcome, "disconnected")
        if link.outcome is _Outcome.ENDED:
            self._penalties.pop(peer, None)
        self._log_events(self._table.remove(peer, time.monotonic(), reason))

    async def _violation(self, link: _Link, error: ProtocolError) -> None:
        self._reject(link.peer_id, error.reason)
        gossip_log.info("closing link to %s: %s", link.label, error)
        code = CLOSE_TOO_BIG if error.reason == "oversize" else CLOSE_POLICY
        try:
            detail = str(error)
            await link.ws.send(
                encode(Error(self.node_id, error.reason, detail), self.cluster_key)
            )
            await link.ws.close(code, error.reason)
        except ConnectionClosed:
            pass
        self._penalise(link)

    def _penalise(self, link: _Link) -> None:
        link.outcome = _Outcome.VIOLATION
        peer = link.peer_id
        if peer is None:
            return
        now = time.monotonic()
        if len(self._penalties) >= MAX_KNOWN:
            self._penalties = {
                key: value for key, value in self._penalties.items() if value[0] > now
            }
        penalty = self._penalties.get(peer)
        delays = penalty[1] if penalty is not None else self._new_delays()
        delay = next(delays)
        self._penalties[peer] = (now + delay, delays)
        gossip_log.info("backing %s off for %.1f s", peer, delay)

    # Messages

    def _hello(self) -> Hello:
        return Hello(
            self.node_id,
            self.advertise,
            np.asarray(self.host.embedding(), dtype=np.float32),
            dict(self.host.expert_usage()),
            int(self.host.records()),
        )

    def _peers_for(self, peer: str) -> Peers:
        addresses = [
            record.address
            for other, record in self._known.items()
            if other in self._links and other != peer and record.address
        ]
        return Peers(self.node_id, addresses[:MAX_ADDRESSES])

    async def _handle(self, link: _Link, message: Message) -> None:
        peer = link.peer_id or ""
        if message.sender != peer:
            raise ProtocolError(
                "bad_sender", f"{message.sender!r} wrote on the link of {peer!r}"
            )
        gossip_log.debug("received %s from %s", message.TYPE, peer)
        if isinstance(message, Hello):
            self._observe(link, message)
        elif isinstance(message, Weights):
            await self._receive_weights(link, message)
        elif isinstance(message, Peers):
            for address in message.addresses:
                if address != self.advertise:
                    self.add_peer_address(address)
        elif isinstance(message, Error):
            gossip_log.info("%s reports %s: %s", peer, message.reason, message.detail)
        elif isinstance(message, Ack) and not message.accepted:
            gossip_log.debug("%s rejected an update: %s", peer, message.reason)

    def _observe(self, link: _Link, hello: Hello) -> None:
        peer = hello.sender
        record = self._record(peer, hello.address or link.address)
        events = self._table.observe(
            peer, record.address, hello.embedding, self.host.embedding(),
            time.monotonic(),
        )
        record.similarity = self._table.similarity(peer)
        self._log_events(events)

    async def _receive_weights(self, link: _Link, message: Weights) -> None:
        peer = link.peer_id or ""
        spec = self.host.weight_spec()
        try:
            for expert, params in message.experts.items():
                own = self.host.own_norm(expert) if expert in spec else None
                check_weights(spec, expert, params, own, ratio=self.norm_ratio)
        except ProtocolError as error:
            await self._refuse(link, message.nonce, error)
            return
        self._table.record_exchange(peer, True)
        record = self._record(peer, None)
        record.trust = self._table.trust(peer)
        weight = update_weight(
            record.trust, self._table.similarity(peer), message.samples,
            int(self.host.records()),
        )
        for expert, params in message.experts.items():
            self._buffer.add(expert, Update(peer, params, weight))
        self._totals["accepted"] += 1
        record.accepted += 1
        gossip_log.debug(
            "accepted %d expert(s) from %s with weight %.3f", len(message.experts),
            peer, weight,
        )
        self._queue(link, Ack(self.node_id, message.nonce, True, "ok"))

    async def _refuse(self, link: _Link, ref: bytes, error: ProtocolError) -> None:
        peer = link.peer_id or ""
        gossip_log.debug("rejected weights from %s: %s", peer, error)
        self._reject(peer, error.reason)
        self._table.record_exchange(peer, False)
        self._record(peer, None).trust = self._table.trust(peer)
        self._queue(link, Ack(self.node_id, ref, False, error.reason))

    def _reject(self, peer: str | None, reason: str) -> None:
        self._rejected[reason] += 1
        if peer:
            self._record(peer, None).rejected[reason] += 1

    def _record(self, peer: str, address: str | None) -> _PeerRecord:
        record = self._known.get(peer)
        if record is None:
            if len(self._known) >= MAX_KNOWN:
                self._forget_oldest()
            record = self._known[peer] = _PeerRecord(address)
        elif address is not None:
            record.address = address
        return record

    def _forget_oldest(self) -> None:
        idle = [peer for peer in self._known if peer not in self._links]
        if idle:
            del self._known[min(idle, key=lambda peer: self._known[peer].last_seen)]

    def _log_events(self, events: list[PeerEvent]) -> None:
        for event in events:
            if event.kind == "joined":
                gossip_log.info("peer %s joined (%s)", event.peer_id, event.reason)
            elif event.kind == "replaced":
                gossip_log.info(
                    "peer %s replaced %s (%s)",
                    event.peer_id,
                    event.replaced,
                    event.reason,
                )
            else:
                gossip_log.info("peer %s left (%s)", event.peer_id, event.reason)

    # Exchange

    async def _exchange_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._exchange_round()
            except Exception:
                gossip_log.warning(
                    "exchange round %d failed", self._round, exc_info=True
                )

    async def _exchange_round(self) -> None:
        self._round += 1
        await self._merge_round()
        for peer, link in list(self._links.items()):
            self._queue(link, self._hello())
            if self._round % PEERS_EVERY == 0:
                self._queue(link, self._peers_for(peer))
        selected = [peer for peer in self._table.selected if peer in self._links]
        names = self._top_experts()
        if not selected or not names:
            return
        experts = await self.host.export_experts(names)
        records = int(self.host.records())
        messages = [
            Weights(self.node_id, group, records, self._round)
            for group in self._pack(experts)
        ]
        for peer in selected:
            link = self._links.get(peer)
            if link is None:
                continue
            for message in messages:
                if self._queue(link, message):
                    self._totals["sent"] += 1
                    self._record(peer, None).sent += 1

    async def _merge_round(self) -> None:
        """Combine the updates accepted since the last round and blend them in."""
        pending = self._buffer.take()
        if not pending:
            return
        own = await self.host.export_experts(sorted(pending))
        for expert, updates in pending.items():
            target, factor = combine(own[expert], updates, self.blend, self.clip_ratio)
            if factor <= 0.0:
                continue
            try:
                await self.host.import_expert(expert, target, factor)
            except Exception:
                gossip_log.warning("import of %s failed", expert, exc_info=True)
                self._rejected["import_failed"] += 1
                continue
            self._totals["merges"] += 1
            gossip_log.debug(
                "merged %d update(s) of %s by %.3f", len(updates), expert, factor
            )

    def _pack(
        self, experts: dict[str, dict[str, np.ndarray]]
    ) -> list[dict[str, dict[str, np.ndarray]]]:
        """Group ``experts`` into as few frames as the frame cap allows."""
        assert self.max_frame is not None
        groups: list[dict[str, dict[str, np.ndarray]]] = [{}]
        size = 256
        for name, params in experts.items():
            needed = _frame_bytes({key: value.shape for key, value in params.items()})
            if groups[-1] and size + needed > self.max_frame:
                groups.append({})
                size = 256
            groups[-1][name] = params
            size += needed
        return [group for group in groups if group]

    def _top_experts(self) -> list[str]:
        spec = self.host.weight_spec()
        usage = self.host.expert_usage()
        ranked = sorted(
            (name for name in spec if math.isfinite(usage.get(name, 0.0))),
            key=lambda name: -usage.get(name, 0.0),
        )
        return ranked if self.experts_per_exchange is None else ranked[
            : self.experts_per_exchange
        ]
