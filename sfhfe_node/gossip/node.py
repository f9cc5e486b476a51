"""The gossip node: websocket links to peers, driven by the I/O-free pieces.

:class:`GossipNode` serves websockets, dials its peers, sends ``hello`` on
every link, lets a :class:`~sfhfe_node.gossip.peers.PeerTable` choose the
peers it gossips with, sends them its most-used experts every ``interval``
seconds and blends the experts it receives into the learner, through the
:class:`GossipHost` interface. The wire format and what a receiver does with
each bad frame are described in :mod:`sfhfe_node.gossip.protocol`.

Two nodes that dial each other end up with two links; each side keeps the
link dialled by the smaller node id and closes the other with reason
``duplicate`` (the dialler then waits until the kept link ends).
"""

from __future__ import annotations

import asyncio
import enum
import math
import re
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException

from sfhfe_node.errors import ConfigError, InvalidStateError, ProtocolError
from sfhfe_node.gossip.merge import NORM_RATIO, blend_factor, check_weights
from sfhfe_node.gossip.peers import PeerEvent, PeerTable
from sfhfe_node.gossip.protocol import (
    MAX_FRAME,
    Ack,
    Error,
    Hello,
    Message,
    TensorError,
    Weights,
    decode,
    encode,
    is_address,
)
from sfhfe_node.logs import gossip_log
from sfhfe_node.retry import backoff_delays

__all__ = ["GossipHost", "GossipNode", "NodeState"]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
MAX_KNOWN = 1024

_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


class GossipHost(Protocol):
    """What a gossip node needs from the learner it serves.

    The synchronous methods run on the event loop and must be cheap; the two
    coroutines may move work to a thread.
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
    SELF = "self"  # the other end is this node
    DUPLICATE = "duplicate"  # another link to the same peer was kept


@dataclass
class _PeerRecord:
    address: str | None
    similarity: float = 0.0
    trust: float = 0.0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    last_seen: float = 0.0


class _Link:
    """One websocket connection to one peer, in either direction."""

    def __init__(
        self, ws: ServerConnection | ClientConnection, dialed: bool, address: str | None
    ) -> None:
        self.ws = ws
        self.dialed = dialed
        self.address = address
        self.peer_id: str | None = None
        self.outcome = _Outcome.FAILED
        self.ended = asyncio.Event()

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
        The ``ws://`` address peers should dial, sent in ``hello``. ``None``
        derives it from ``listen`` unless that is a wildcard address, in which
        case no address is advertised.
    peers
        Addresses to dial and keep dialling, with capped jittered backoff.
    k, margin, cooldown, ema, trust_after
        Peer selection, see :class:`~sfhfe_node.gossip.peers.PeerTable`.
    interval
        Seconds between exchange rounds (default 5.0). Shorter spreads
        knowledge faster and costs bandwidth and learner time.
    experts_per_exchange
        How many of the most-used experts are sent per round (default 3).
    max_frame
        Largest frame accepted, in bytes (default 4 MiB); larger frames close
        the link with 1009. Experts bigger than this are never sent.
    blend
        Base blend factor in [0, 1] (default 0.3), scaled by the sender's
        trust and similarity. Higher learns faster from peers and forgets the
        node's own fit faster.
    norm_ratio
        An update is rejected when its L2 norm exceeds this many times the
        node's own norm plus 1 (default 10.0).
    hello_timeout
        Seconds a new link may take to send its ``hello`` (default 10.0).
    max_links
        Links accepted at once (default 32); more are refused with 1013.
    backoff_initial, backoff_cap
        First and largest redial delay in seconds (defaults 0.5 and 30.0).

    Limitations: no frame authentication and no TLS yet; received ``peers``
    messages are validated and otherwise ignored.
    """

    def __init__(
        self,
        node_id: str,
        host: GossipHost,
        *,
        listen: tuple[str, int],
        advertise: str | None,
        peers: list[str],
        k: int = 3,
        margin: float = 0.05,
        cooldown: float = 60.0,
        interval: float = 5.0,
        experts_per_exchange: int = 3,
        max_frame: int = MAX_FRAME,
        blend: float = 0.3,
        ema: float = 0.3,
        trust_after: int = 3,
        norm_ratio: float = NORM_RATIO,
        hello_timeout: float = 10.0,
        max_links: int = 32,
        backoff_initial: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        if _NODE_ID.fullmatch(node_id) is None:
            raise ConfigError(f"node id {node_id[:80]!r} is not 1-64 of A-Za-z0-9._-")
        for address in [*peers, *([advertise] if advertise else [])]:
            if not is_address(address):
                raise ConfigError(f"{address[:80]!r} is not a ws:// or wss:// address")
        if interval <= 0 or experts_per_exchange < 0 or max_frame < 1024:
            raise ConfigError(
                f"gossip needs interval > 0, experts_per_exchange >= 0, "
                f"max_frame >= 1024; got {interval}, {experts_per_exchange}, "
                f"{max_frame}"
            )
        if not 0.0 <= blend <= 1.0:
            raise ConfigError(f"blend must be in [0, 1], got {blend}")
        self.node_id = node_id
        self.host = host
        self.listen = listen
        self.advertise = advertise
        self.interval = interval
        self.experts_per_exchange = experts_per_exchange
        self.max_frame = max_frame
        self.blend = blend
        self.norm_ratio = norm_ratio
        self.hello_timeout = hello_timeout
        self.max_links = max_links
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self.port: int | None = None
        self.state = NodeState.CREATED
        self._table = PeerTable(k, margin, cooldown, ema, trust_after)
        self._addresses: list[str] = list(dict.fromkeys(peers))
        self._server: Server | None = None
        self._links: dict[str, _Link] = {}
        self._open: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._known: dict[str, _PeerRecord] = {}
        self._penalties: dict[str, tuple[float, Iterator[float]]] = {}
        self._sent = 0
        self._accepted = 0
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
        host, port = self.listen
        self._server = await serve(
            self._serve, host, port, max_size=self.max_frame, compression=None,
            close_timeout=5.0,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.advertise is None and host not in _WILDCARD_HOSTS:
            bracketed = f"[{host}]" if ":" in host else host
            self.advertise = f"ws://{bracketed}:{self.port}"
        self.state = NodeState.RUNNING
        gossip_log.info("listening on %s:%d as %s", host, self.port, self.node_id)
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

        # Stop the dial loops and the exchange loop.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

        await self._server.wait_closed()
        self.state = NodeState.CLOSED
        self._closed.set()
        gossip_log.info("closed %s", self.node_id)

    def add_peer_address(self, address: str) -> None:
        """Dial ``address`` from now on (for example one found by discovery)."""
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
        if len(self._addresses) >= self.max_links:
            gossip_log.info(
                "not dialling %s: already %d addresses", address, self.max_links
            )
            return
        self._addresses.append(address)
        if self.state is NodeState.RUNNING:
            self._spawn(self._dial_forever(address), f"dial {address}")

    def stats(self) -> dict[str, Any]:
        """Counters and the peer view, as plain data."""
        return {
            "sent": self._sent,
            "accepted": self._accepted,
            "rejected": sum(self._rejected.values()),
            "rejected_by_reason": dict(self._rejected),
            "peers": [peer for peer in self._table.selected if peer in self._links],
            "known": {
                peer: {
                    "address": record.address,
                    "similarity": record.similarity,
                    "trust": record.trust,
                    "sent": record.sent,
                    "accepted": record.accepted,
                    "rejected": record.rejected,
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
        await self._run_link(_Link(ws, dialed=False, address=None))

    async def _dial_forever(self, address: str) -> None:
        delays = self._new_delays()
        while self.state is NodeState.RUNNING:
            link: _Link | None = None
            cause = "link ended"
            try:
                async with connect(
                    address, max_size=self.max_frame, compression=None, proxy=None,
                    open_timeout=self.hello_timeout, close_timeout=5.0,
                ) as ws:
                    link = _Link(ws, dialed=True, address=address)
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
                delays = self._new_delays()
            cause = outcome.value if outcome is not _Outcome.FAILED else cause
            delay = next(delays)
            gossip_log.info("redial %s in %.1f s after %s", address, delay, cause)
            await asyncio.sleep(delay)

    def _new_delays(self) -> Iterator[float]:
        return backoff_delays(self.backoff_initial, 2.0, self.backoff_cap)

    async def _run_link(self, link: _Link) -> None:
        self._open.add(link)
        try:
            await self._send(link, self._hello())
            first = await asyncio.wait_for(link.ws.recv(), self.hello_timeout)
            message = decode(first, self.max_frame)
            if not isinstance(message, Hello):
                raise ProtocolError("no_hello", f"first message is {message.TYPE}")
            if not await self._register(link, message):
                return
            while True:
                await self._handle(link, await link.ws.recv())
        except TimeoutError:
            await self._violation(link, ProtocolError("no_hello", "no hello in time"))
        except ProtocolError as error:
            await self._violation(link, error)
        except ConnectionClosed as closed:
            if closed.sent is not None and closed.sent.code == CLOSE_TOO_BIG:
                self._reject(link.peer_id, "oversize")
                self._penalise(link)
        finally:
            self._open.discard(link)
            self._unregister(link)
            link.ended.set()

    async def _register(self, link: _Link, hello: Hello) -> bool:
        peer = hello.sender
        if peer == self.node_id:
            link.outcome = _Outcome.SELF
            await link.ws.close(CLOSE_NORMAL, "self")
            return False
        penalty = self._penalties.get(peer)
        if penalty is not None and penalty[0] > time.monotonic():
            link.outcome = _Outcome.VIOLATION
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
        reason = "violation" if link.outcome is _Outcome.VIOLATION else "disconnected"
        if link.outcome is _Outcome.ENDED:
            self._penalties.pop(peer, None)
        self._log_events(self._table.remove(peer, time.monotonic(), reason))

    async def _violation(self, link: _Link, error: ProtocolError) -> None:
        self._reject(link.peer_id, error.reason)
        gossip_log.info("closing link to %s: %s", link.label, error)
        code = CLOSE_TOO_BIG if error.reason == "oversize" else CLOSE_POLICY
        try:
            await link.ws.send(encode(Error(self.node_id, error.reason, str(error))))
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
        self._penalties[peer] = (now + next(delays), delays)

    # Messages

    def _hello(self) -> Hello:
        return Hello(
            self.node_id,
            self.advertise,
            np.asarray(self.host.embedding(), dtype=np.float32),
            dict(self.host.expert_usage()),
            int(self.host.records()),
        )

    async def _send(self, link: _Link, message: Message) -> None:
        await link.ws.send(encode(message))

    async def _handle(self, link: _Link, frame: bytes | str) -> None:
        peer = link.peer_id or ""
        self._record(peer, None).last_seen = time.time()
        try:
            message = decode(frame, self.max_frame)
        except TensorError as error:
            if error.sender != peer:
                raise ProtocolError(
                    "bad_sender", f"frame from {error.sender!r} on the link of {peer!r}"
                ) from None
            gossip_log.debug("rejected weights from %s: %s", peer, error)
            self._reject(peer, error.reason)
            self._table.record_exchange(peer, False)
            await self._send(link, Ack(self.node_id, error.ref, False, error.reason))
            return
        if message.sender != peer:
            raise ProtocolError(
                "bad_sender", f"{message.sender!r} wrote on the link of {peer!r}"
            )
        gossip_log.debug("received %s from %s", message.TYPE, peer)
        if isinstance(message, Hello):
            self._observe(link, message)
        elif isinstance(message, Weights):
            await self._receive_weights(link, message)
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
        own = self.host.own_norm(message.expert) if message.expert in spec else None
        try:
            check_weights(
                spec, message.expert, message.params, own, ratio=self.norm_ratio
            )
        except ProtocolError as error:
            gossip_log.debug("rejected %s from %s: %s", message.expert, peer, error)
            self._reject(peer, error.reason)
            self._table.record_exchange(peer, False)
            self._record(peer, None).trust = self._table.trust(peer)
            ack = Ack(self.node_id, message.nonce, False, error.reason)
            await self._send(link, ack)
            return
        self._table.record_exchange(peer, True)
        record = self._record(peer, None)
        record.trust = self._table.trust(peer)
        factor = blend_factor(self.blend, record.trust, self._table.similarity(peer))
        try:
            if factor > 0.0:
                params = dict(message.params)
                await self.host.import_expert(message.expert, params, factor)
        except Exception:
            gossip_log.warning("import of %s failed", message.expert, exc_info=True)
            self._reject(peer, "import_failed")
            ack = Ack(self.node_id, message.nonce, False, "import_failed")
            await self._send(link, ack)
            return
        self._accepted += 1
        record.accepted += 1
        gossip_log.debug("blended %s from %s by %.3f", message.expert, peer, factor)
        await self._send(link, Ack(self.node_id, message.nonce, True, "ok"))

    def _reject(self, peer: str | None, reason: str) -> None:
        self._rejected[reason] += 1
        if peer:
            self._record(peer, None).rejected += 1

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
        links = list(self._links.values())
        hellos = [self._send_quietly(link, [self._hello()]) for link in links]
        await asyncio.gather(*hellos)
        selected = [peer for peer in self._table.selected if peer in self._links]
        names = self._top_experts()
        if not selected or not names:
            return
        experts = await self.host.export_experts(names)
        records = int(self.host.records())
        await asyncio.gather(
            *(
                self._send_quietly(
                    self._links[peer],
                    [
                        Weights(self.node_id, name, params, records, self._round)
                        for name, params in experts.items()
                    ],
                )
                for peer in selected
                if peer in self._links
            )
        )

    def _top_experts(self) -> list[str]:
        spec = self.host.weight_spec()
        usage = self.host.expert_usage()
        ranked = sorted(
            (name for name in spec if math.isfinite(usage.get(name, 0.0))),
            key=lambda name: -usage.get(name, 0.0),
        )
        return ranked[: self.experts_per_exchange]

    async def _send_quietly(self, link: _Link, messages: list[Message]) -> None:
        peer = link.peer_id or ""
        for message in messages:
            frame = encode(message)
            if len(frame) > self.max_frame:
                gossip_log.info(
                    "not sending %s: %d bytes exceed %d", message.TYPE, len(frame),
                    self.max_frame,
                )
                continue
            try:
                await link.ws.send(frame)
            except ConnectionClosed:
                return
            if isinstance(message, Weights):
                self._sent += 1
                self._record(peer, None).sent += 1
