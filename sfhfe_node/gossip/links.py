"""One websocket link to one peer: its state, its send queue and its writer.

A :class:`Link` is created for every connection, accepted or dialled, before
the peer has said who it is. Its :class:`Outcome` starts as ``FAILED`` and is
updated as the link progresses, so that whoever waits on :attr:`Link.ended`
(the dialler) knows how the link finished and how long to wait before trying
again. Frames go out through a bounded
:class:`~sfhfe_node.gossip.sendqueue.SendQueue` drained by
:meth:`Link.write_forever`, so a slow peer delays only its own frames.

Two nodes that dial each other end up with two links; :func:`prefer_new`
decides which one both sides keep.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from sfhfe_node.gossip.sendqueue import SendQueue

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_KEEPALIVE",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_LATER",
    "Link",
    "Outcome",
    "prefer_new",
]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_KEEPALIVE = 1011
CLOSE_TRY_LATER = 1013


class Outcome(enum.Enum):
    """How a link ended, as far as redialling and penalties are concerned."""

    FAILED = "failed"  # never got past the hello
    ENDED = "ended"  # was established, ended without fault of the peer
    VIOLATION = "violation"  # closed for a protocol violation
    DEAD = "dead"  # keepalive pings went unanswered
    SELF = "self"  # the other end is this node
    DUPLICATE = "duplicate"  # another link to the same peer was kept


class Link:
    """One websocket connection to one peer, in either direction.

    Parameters
    ----------
    ws
        The open websocket connection.
    dialed
        True when this node dialled the peer, False when it accepted the link.
    address
        The address dialled, or ``None`` for an accepted link.
    queue_limit
        Frames queued before the oldest ``weights`` frame is dropped.
    """

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
        self.outcome = Outcome.FAILED
        self.ended = asyncio.Event()
        self.queue = SendQueue(queue_limit)
        self.wake = asyncio.Event()

    @property
    def label(self) -> str:
        """The peer's id once known, else the address dialled, for log lines."""
        return self.peer_id or self.address or "unidentified peer"

    def put(self, frame: bytes, droppable: bool) -> int:
        """Queue ``frame`` for the writer; return how many frames were dropped."""
        dropped = self.queue.put(frame, droppable=droppable)
        self.wake.set()
        return dropped

    async def write_forever(self, sent: Callable[[Link, int], None]) -> None:
        """Send queued frames until the connection closes.

        ``sent`` is called with the link and the size of every frame sent.
        """
        while True:
            frame = self.queue.pop()
            if frame is None:
                self.wake.clear()
                await self.wake.wait()
                continue
            try:
                await self.ws.send(frame)
            except ConnectionClosed:
                return
            sent(self, len(frame))


def prefer_new(node_id: str, new: Link, old: Link) -> bool:
    """Tell whether ``new`` should replace ``old``, a link to the same peer.

    Both sides keep the link dialled by the smaller node id; of two links
    dialled by the same side, the newer one wins.
    """
    peer = new.peer_id or ""
    preferred = min(node_id, peer)

    def dialler(link: Link) -> str:
        return node_id if link.dialed else peer

    if dialler(new) == dialler(old):
        return True
    return dialler(new) == preferred
