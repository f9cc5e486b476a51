"""The link to the coordinator: upload insights from the outbox, apply meta.

The uplink sends the outbox's insights one at a time, oldest first. A reply of
200 removes the insight and hands the meta-parameters it carries to the
caller. A retryable failure (connection refused, time-out, 5xx, 429) keeps the
insight and waits for the next delay of an exponential backoff with jitter,
reset after a success; a 4xx reply means the insight itself is wrong, so it is
moved aside and counted, and the next one goes. The node keeps learning
throughout: nothing here blocks the learner.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack

from sfhfe_node.client.outbox import Outbox
from sfhfe_node.errors import InsightError, InvalidStateError
from sfhfe_node.logs import uplink_log
from sfhfe_node.retry import backoff_delays, is_retryable
from sfhfe_node.wire.insight import validate_meta

__all__ = ["Uplink"]

CONTENT_TYPE = "application/msgpack"


class Uplink:
    """Deliver outbox insights to ``server`` and report the meta-parameters.

    Parameters
    ----------
    server
        Base URL of the coordinator, e.g. ``http://10.0.0.1:8080``.
    outbox
        Where insights wait; the uplink removes them once acknowledged.
    on_meta
        Called with each validated meta document the coordinator returns.
    timeout
        Seconds allowed for one upload, connection included.
    token
        Bearer token sent with each request, or None.
    ssl_context
        TLS context for an ``https://`` coordinator (None: the system's CAs).
    """

    def __init__(
        self,
        server: str,
        outbox: Outbox,
        on_meta: Callable[[dict[str, Any]], None],
        *,
        timeout: float = 10.0,
        token: str | None = None,
        backoff_cap: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.outbox = outbox
        self.on_meta = on_meta
        self.timeout = timeout
        self.token = token
        self.backoff_cap = backoff_cap
        self.ssl_context = ssl_context
        self.state = "idle"
        self.acked = 0
        self.duplicates = 0
        self.rejected = 0
        self.retries = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start delivering in a background task."""
        if self.state != "idle":
            raise InvalidStateError(f"uplink cannot start: it is {self.state}")
        self.state = "running"
        self._task = asyncio.create_task(self._run(), name="uplink")

    def wake(self) -> None:
        """Tell the uplink that the outbox has something new."""
        self._wake.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until the outbox is empty; False if ``timeout`` passed first."""
        self.wake()
        try:
            async with asyncio.timeout(timeout):
                while len(self.outbox):
                    self._idle.clear()
                    self.wake()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop delivering; pending insights stay in the outbox. Idempotent."""
        if self.state == "closed":
            return
        self.state = "closed"
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
        async with aiohttp.ClientSession(
            headers=headers, timeout=timeout, connector=connector
        ) as session:
            while True:
                await self._deliver_all(session)
                self._idle.set()
                await self._wake.wait()
                self._wake.clear()

    async def _deliver_all(self, session: aiohttp.ClientSession) -> None:
        delays = backoff_delays(cap=self.backoff_cap)
        for seq in self.outbox.pending():
            while True:
                try:
                    await self._deliver(session, seq)
                except Exception as exc:  # classified below; the loop must survive
                    if not is_retryable(exc):
                        raise
                    self.retries += 1
                    self.last_error = _describe(exc)
                    delay = next(delays)
                    uplink_log.info(
                        "upload of insight %d failed (%s); retrying in %.1f s",
                        seq,
                        self.last_error,
                        delay,
                    )
                    self._idle.set()
                    await asyncio.sleep(delay)
                    continue
                delays = backoff_delays(cap=self.backoff_cap)
                break

    async def _deliver(self, session: aiohttp.ClientSession, seq: int) -> None:
        body = self.outbox.read(seq)
        async with session.post(self.server + "/v1/insights", data=body) as reply:
            payload = await reply.read()
            if 400 <= reply.status < 500 and reply.status not in (408, 429):
                self.rejected += 1
                self.outbox.reject(seq)
                uplink_log.warning(
                    "coordinator refused insight %d: %s %s",
                    seq,
                    reply.status,
                    payload[:200].decode("utf-8", "replace"),
                )
                return
            reply.raise_for_status()
        self.outbox.remove(seq)
        self.acked += 1
        self.last_error = None
        self._apply(payload, reply.headers.get("Content-Type", ""))

    def _apply(self, payload: bytes, content_type: str) -> None:
        try:
            if content_type.startswith("application/json"):
                reply = json.loads(payload)
            else:
                reply = msgpack.unpackb(payload, raw=False)
            if reply.get("duplicate"):
                self.duplicates += 1
            meta = validate_meta(reply["meta"])
        except (ValueError, KeyError, TypeError, AttributeError, InsightError) as exc:
            uplink_log.warning("coordinator reply carries no usable meta: %s", exc)
            return
        self.on_meta(meta)


def _describe(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientResponseError):
        return f"HTTP {error.status}"
    return str(error) or type(error).__name__
