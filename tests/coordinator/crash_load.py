"""A load process for the crash tests: post insights, log every acknowledgement.

Run as ``python -m tests.coordinator.crash_load PORT PREFIX NODES ACK_FILE``.
It posts msgpack insights for NODES nodes (``PREFIX-0`` ...), each node's
``seq`` counting up, and appends ``node_id seq`` to ACK_FILE, flushed, for
every reply of 200 before the next upload of that node. It stops after 2000
uploads per node, or once the coordinator has refused connections for 2 s.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO

import aiohttp
import msgpack

from tests.coordinator.helpers import make_insight

__all__ = ["main"]

MAX_PER_NODE = 2000
GIVE_UP_SECONDS = 2.0


async def _node(
    session: aiohttp.ClientSession, url: str, node_id: str, acks: IO[str]
) -> None:
    failing_since: float | None = None
    for seq in range(MAX_PER_NODE):
        body = msgpack.packb(make_insight(node_id=node_id, seq=seq))
        while True:
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/msgpack"}
                ) as reply:
                    await reply.read()
                    status = reply.status
            except aiohttp.ClientError:
                status = None
            if status == 200:
                acks.write(f"{node_id} {seq}\n")
                acks.flush()
                failing_since = None
                break
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > GIVE_UP_SECONDS:
                return
            await asyncio.sleep(0.05)


async def _run(port: int, prefix: str, nodes: int, ack_path: str) -> None:
    url = f"http://127.0.0.1:{port}/v1/insights"
    timeout = aiohttp.ClientTimeout(total=5)
    with open(ack_path, "a", encoding="ascii") as acks:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(
                *(_node(session, url, f"{prefix}-{i}", acks) for i in range(nodes))
            )


def main(argv: list[str]) -> int:
    """Run the load; arguments are PORT PREFIX NODES ACK_FILE."""
    port, prefix, nodes, ack_path = argv
    asyncio.run(_run(int(port), prefix, int(nodes), ack_path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
