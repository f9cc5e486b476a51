"""Dialling peers and redialling them, with capped jittered back-off.

A :class:`Dialer` keeps the addresses a node dials: the configured ones,
dialled for as long as the node runs, and learned ones (from discovery or
``peers`` messages), forgotten after ``forget_after`` failed dials in a row.
Each address has one dial loop. After a link ends the loop waits for the
next delay of its own generator, which restarts after a link that worked;
it stops for good when the address turns out to be the node itself, and
after a ``duplicate`` close it first waits for the kept link to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidURI, WebSocketException

from sfhfe_node.gossip.handler import LinkHandler
from sfhfe_node.gossip.links import Link, Outcome
from sfhfe_node.logs import gossip_log

if TYPE_CHECKING:
    from sfhfe_node.gossip.node import GossipNode

__all__ = ["Dialer"]


class Dialer:
    """The addresses one node dials, and the loop that dials each of them.

    Parameters
    ----------
    node
        The node served; its connection settings are read at every dial.
    links
        Runs every link dialled.
    configured
        Addresses dialled for as long as the node runs.
    running
        Tells whether the node still runs; a dial loop stops when it does not.
    delays
        Makes a fresh redial delay generator.
    """

    def __init__(
        self,
        node: GossipNode,
        links: LinkHandler,
        configured: list[str],
        running: Callable[[], bool],
        delays: Callable[[], Iterator[float]],
    ) -> None:
        self.node = node
        self.links = links
        self.configured = set(configured)
        self.addresses: list[str] = list(dict.fromkeys(configured))
        self.running = running
        self.delays = delays

    def add(self, address: str) -> bool:
        """Remember a learned ``address``; False if known or over the limit."""
        if address in self.addresses or address == self.node.advertise:
            return False
        limit = self.node.max_addresses
        if len(self.addresses) >= limit:
            gossip_log.debug("not dialling %s: already %d addresses", address, limit)
            return False
        self.addresses.append(address)
        gossip_log.info("new peer address %s", address)
        return True

    async def dial_forever(self, address: str) -> None:
        """Dial ``address`` and redial after every link, until told to stop."""
        node = self.node
        delays = self.delays()
        failures = 0
        secure = address.startswith("wss://")
        while self.running():
            link: Link | None = None
            cause = "link ended"
            try:
                async with connect(
                    address, max_size=node.max_frame, compression=None, proxy=None,
                    open_timeout=node.hello_timeout, close_timeout=node.close_timeout,
                    ssl=node.ssl_client if secure else None,
                    ping_interval=node.ping_interval, ping_timeout=node.ping_timeout,
                ) as ws:
                    link = Link(ws, True, address, node.send_queue)
                    await self.links.run(link)
            except InvalidURI as exc:
                gossip_log.info("not dialling %s: %s", address, exc)
                return
            except (OSError, TimeoutError, WebSocketException) as exc:
                cause = str(exc) or type(exc).__name__
            if not self.running():
                return
            outcome = link.outcome if link is not None else Outcome.FAILED
            if outcome is Outcome.SELF:
                gossip_log.info("not dialling %s again: it is this node", address)
                return
            if outcome is Outcome.DUPLICATE and link is not None:
                kept = self.links.links.get(link.peer_id or "")
                if kept is not None:
                    await kept.ended.wait()
            if outcome in (Outcome.ENDED, Outcome.DUPLICATE):
                delays, failures = self.delays(), 0
            else:
                failures += 1
            if address not in self.configured and failures >= node.forget_after:
                gossip_log.info(
                    "forgetting %s after %d failed dials", address, failures
                )
                self.addresses.remove(address)
                return
            cause = outcome.value if outcome is not Outcome.FAILED else cause
            delay = next(delays)
            gossip_log.info("redial %s in %.1f s after %s", address, delay, cause)
            await asyncio.sleep(delay)
