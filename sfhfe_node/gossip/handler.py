"""What a gossip node does on each link, from the first hello to the close.

:class:`LinkHandler` runs every :class:`~sfhfe_node.gossip.links.Link`: it
sends ``hello`` and ``peers``, waits for the peer's hello, registers the link
under the peer's id (refusing the node itself, backed-off peers and the
losing one of two duplicate links), then reads, authenticates and answers
every frame until the link ends. A protocol violation is answered with an
``error``, a close code and a back-off; a bad tensor or a rejected update
with a negative ``ack``. Dead links are found by websocket keepalive pings:
a link closed with 1011 for an unanswered ping evicts its peer and backs it
off like a misbehaving one. What each bad frame costs the peer is listed in
:mod:`sfhfe_node.gossip.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np
from websockets.exceptions import ConnectionClosed

from sfhfe_node.errors import ProtocolError
from sfhfe_node.gossip.auth import ReplayGuard
from sfhfe_node.gossip.ledger import Ledger
from sfhfe_node.gossip.links import (
    CLOSE_KEEPALIVE,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    Link,
    Outcome,
    prefer_new,
)
from sfhfe_node.gossip.merge import RoundBuffer, Update, check_weights, update_weight
from sfhfe_node.gossip.peers import PeerEvent, PeerTable
from sfhfe_node.gossip.penalties import Penalties
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
)
from sfhfe_node.logs import gossip_log

if TYPE_CHECKING:
    from sfhfe_node.gossip.node import GossipNode

__all__ = ["LinkHandler"]


class LinkHandler:
    """Runs the links of one gossip node and keeps them by peer id.

    Parameters
    ----------
    node
        The node served; its identity and settings are read as they are when
        needed (``advertise`` and ``max_frame`` are settled only at start).
    links
        Where the registered links are kept by peer id (usually empty at
        first); shared with the ledger, which never forgets a linked peer.
    ledger, penalties, table, buffer
        The node's counters, back-offs, peer choice and accepted updates,
        shared with the rest of the node.
    replay_window
        Seconds a frame's timestamp may differ from this node's clock.
    """

    def __init__(
        self,
        node: GossipNode,
        links: dict[str, Link],
        ledger: Ledger,
        penalties: Penalties,
        table: PeerTable,
        buffer: RoundBuffer,
        replay_window: float,
    ) -> None:
        self.node = node
        self.ledger = ledger
        self.penalties = penalties
        self.table = table
        self.buffer = buffer
        self.guard = ReplayGuard(replay_window)
        self.links = links
        self.open: set[Link] = set()

    async def run(self, link: Link) -> None:
        """Speak the protocol on ``link`` until it ends; never raises for it."""
        self.open.add(link)
        writer = asyncio.get_running_loop().create_task(
            link.write_forever(self._sent), name=f"write {link.label}"
        )
        try:
            self.queue(link, self.hello())
            hello = await asyncio.wait_for(
                self._first_hello(link), self.node.hello_timeout
            )
            if not await self._register(link, hello):
                return
            self.queue(link, self.peers_for(link.peer_id or ""))
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
            self.open.discard(link)
            self._unregister(link)
            link.ended.set()

    def queue(self, link: Link, message: Message) -> bool:
        """Put ``message`` on ``link``'s send queue; False if it is too big."""
        frame = encode(message, self.node.cluster_key)
        max_frame = self.node.max_frame
        assert max_frame is not None
        if len(frame) > max_frame:
            gossip_log.info(
                "not sending %s: %d bytes exceed %d", message.TYPE, len(frame),
                max_frame,
            )
            return False
        dropped = link.put(frame, droppable=isinstance(message, Weights))
        if dropped:
            self.ledger.count(link.peer_id, "dropped", dropped)
        return True

    def hello(self) -> Hello:
        """This node's hello, with its current embedding, usage and records."""
        host = self.node.host
        return Hello(
            self.node.node_id,
            self.node.advertise,
            np.asarray(host.embedding(), dtype=np.float32),
            dict(host.expert_usage()),
            int(host.records()),
        )

    def peers_for(self, peer: str) -> Peers:
        """The addresses of the other linked peers, for ``peer``."""
        addresses = [
            record.address
            for other, record in self.ledger.known.items()
            if other in self.links and other != peer and record.address
        ]
        return Peers(self.node.node_id, addresses[:MAX_ADDRESSES])

    def log_events(self, events: list[PeerEvent]) -> None:
        """Log the peer table's changes of selection."""
        for event in events:
            if event.kind == "joined":
                gossip_log.info("peer %s joined (%s)", event.peer_id, event.reason)
            elif event.kind == "replaced":
                gossip_log.info(
                    "peer %s replaced %s (%s)", event.peer_id, event.replaced,
                    event.reason,
                )
            else:
                gossip_log.info("peer %s left (%s)", event.peer_id, event.reason)

    def _sent(self, link: Link, size: int) -> None:
        self.ledger.count(link.peer_id, "bytes_sent", size)

    # Reading

    async def _first_hello(self, link: Link) -> Hello:
        while True:
            message = await self._read(link)
            if message is None:
                continue
            if not isinstance(message, Hello):
                raise ProtocolError("no_hello", f"first message is {message.TYPE}")
            return message

    async def _read(self, link: Link) -> Message | None:
        """Read, authenticate and decode one frame; ``None`` if it was dropped."""
        frame = await link.ws.recv()
        self.ledger.seen(link.peer_id, len(frame))
        max_frame = self.node.max_frame
        assert max_frame is not None
        try:
            message = decode(frame, max_frame, self.node.cluster_key)  # type: ignore
        except TensorError as error:
            if link.peer_id is None or error.sender != link.peer_id:
                raise
            await self._refuse(link, error.ref, error)
            return None
        try:
            self.guard.check(message.nonce, message.ts, time.time())
        except ProtocolError as error:
            gossip_log.debug("dropped a frame from %s: %s", link.label, error)
            self.ledger.reject(link.peer_id, error.reason)
            return None
        return message

    # Opening and closing

    async def _register(self, link: Link, hello: Hello) -> bool:
        peer = hello.sender
        if peer == self.node.node_id:
            link.outcome = Outcome.SELF
            await link.ws.close(CLOSE_NORMAL, "self")
            return False
        if self.penalties.active(peer, time.monotonic()):
            link.outcome = Outcome.VIOLATION
            self.ledger.reject(peer, "backed_off")
            await link.ws.close(CLOSE_POLICY, "backed_off")
            return False
        link.peer_id = peer
        existing = self.links.get(peer)
        if existing is not None:
            keep_new = prefer_new(self.node.node_id, link, existing)
            loser = existing if keep_new else link
            loser.outcome = Outcome.DUPLICATE
            if keep_new:
                self.links[peer] = link
            gossip_log.debug("duplicate link to %s closed", peer)
            await loser.ws.close(CLOSE_NORMAL, "duplicate")
            if not keep_new:
                return False
        self.links[peer] = link
        link.outcome = Outcome.ENDED
        self.ledger.record(peer, hello.address or link.address).last_seen = time.time()
        self._observe(link, hello)
        gossip_log.debug("link to %s open (%s)", peer, "out" if link.dialed else "in")
        return True

    def _unregister(self, link: Link) -> None:
        peer = link.peer_id
        if peer is None or self.links.get(peer) is not link:
            return
        del self.links[peer]
        self.buffer.drop_peer(peer)
        reason = {
            Outcome.VIOLATION: "violation",
            Outcome.DEAD: "keepalive",
        }.get(link.outcome, "disconnected")
        if link.outcome is Outcome.ENDED:
            self.penalties.forgive(peer)
        self.log_events(self.table.remove(peer, time.monotonic(), reason))

    def _closed_by_transport(self, link: Link, closed: ConnectionClosed) -> None:
        sent = closed.sent.code if closed.sent is not None else None
        if sent == CLOSE_TOO_BIG:
            self._penalise(link, "oversize")
        elif sent == CLOSE_KEEPALIVE and closed.rcvd is None:
            self._penalise(link, "keepalive")
            link.outcome = Outcome.DEAD

    async def _violation(self, link: Link, error: ProtocolError) -> None:
        self.ledger.reject(link.peer_id, error.reason)
        gossip_log.info("closing link to %s: %s", link.label, error)
        code = CLOSE_TOO_BIG if error.reason == "oversize" else CLOSE_POLICY
        # The peer may already be gone; the penalty applies either way.
        with contextlib.suppress(ConnectionClosed):
            detail = str(error)
            await link.ws.send(
                encode(
                    Error(self.node.node_id, error.reason, detail),
                    self.node.cluster_key,
                )
            )
            await link.ws.close(code, error.reason)
        self._penalise(link)

    def _penalise(self, link: Link, reason: str | None = None) -> None:
        """Mark ``link`` a violation and back its peer off; count ``reason``."""
        if reason is not None:
            self.ledger.reject(link.peer_id, reason)
        link.outcome = Outcome.VIOLATION
        peer = link.peer_id
        if peer is None:
            return
        delay = self.penalties.penalise(peer, time.monotonic())
        gossip_log.info("backing %s off for %.1f s", peer, delay)

    # Messages

    async def _handle(self, link: Link, message: Message) -> None:
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
                if address != self.node.advertise:
                    self.node.add_peer_address(address)
        elif isinstance(message, Error):
            gossip_log.info("%s reports %s: %s", peer, message.reason, message.detail)
        elif isinstance(message, Ack) and not message.accepted:
            gossip_log.debug("%s rejected an update: %s", peer, message.reason)

    def _observe(self, link: Link, hello: Hello) -> None:
        peer = hello.sender
        record = self.ledger.record(peer, hello.address or link.address)
        events = self.table.observe(
            peer, record.address, hello.embedding, self.node.host.embedding(),
            time.monotonic(),
        )
        record.similarity = self.table.similarity(peer)
        self.log_events(events)

    async def _receive_weights(self, link: Link, message: Weights) -> None:
        peer = link.peer_id or ""
        host = self.node.host
        spec = host.weight_spec()
        try:
            for expert, params in message.experts.items():
                own = host.own_norm(expert) if expert in spec else None
                check_weights(spec, expert, params, own, ratio=self.node.norm_ratio)
        except ProtocolError as error:
            await self._refuse(link, message.nonce, error)
            return
        self.table.record_exchange(peer, True)
        record = self.ledger.record(peer)
        record.trust = self.table.trust(peer)
        weight = update_weight(
            record.trust, self.table.similarity(peer), message.samples,
            int(host.records()),
        )
        for expert, params in message.experts.items():
            self.buffer.add(expert, Update(peer, params, weight))
        self.ledger.count(peer, "accepted")
        gossip_log.debug(
            "accepted %d expert(s) from %s with weight %.3f", len(message.experts),
            peer, weight,
        )
        self.queue(link, Ack(self.node.node_id, message.nonce, True, "ok"))

    async def _refuse(self, link: Link, ref: bytes, error: ProtocolError) -> None:
        peer = link.peer_id or ""
        gossip_log.debug("rejected weights from %s: %s", peer, error)
        self.ledger.reject(peer, error.reason)
        self.table.record_exchange(peer, False)
        self.ledger.record(peer).trust = self.table.trust(peer)
        self.queue(link, Ack(self.node.node_id, ref, False, error.reason))
