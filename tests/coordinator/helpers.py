"""Builders shared by the coordinator tests: insights and a running server."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sfhfe_node.coordinator import CoordinatorConfig, run_coordinator
from tests.conftest import TIMEOUT

__all__ = ["expert", "make_insight", "running"]

_BASE: dict[str, Any] = {
    "schema": 1,
    "node_id": "n1",
    "seq": 0,
    "time": 1764000000.0,
    "task": "classification",
    "records": 320,
    "window": {"records": 320, "loss": 0.45, "accuracy": 0.8},
    "experts": {
        "linear": {
            "lr": 0.01,
            "loss_start": 0.6,
            "loss_end": 0.4,
            "usage": 0.3,
            "samples": 300,
        }
    },
    "drift": {"events": 0, "active": False},
    "memory_bytes": 100000,
    "embedding": [0.1, 0.2],
    "gossip": "ws://127.0.0.1:7070",
}


def make_insight(**fields: Any) -> dict[str, Any]:
    """A valid insight; keyword arguments replace top-level fields."""
    insight = copy.deepcopy(_BASE)
    insight.update(copy.deepcopy(fields))
    return insight


def expert(
    lr: float,
    loss_start: float = 0.6,
    loss_end: float = 0.4,
    usage: float = 0.5,
    samples: int = 100,
) -> dict[str, Any]:
    """Statistics of one expert for the ``experts`` field."""
    return {
        "lr": lr,
        "loss_start": loss_start,
        "loss_end": loss_end,
        "usage": usage,
        "samples": samples,
    }


@asynccontextmanager
async def running(config: CoordinatorConfig) -> AsyncIterator[str]:
    """Run a coordinator on 127.0.0.1 and yield its base URL."""
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_coordinator(config, stop, bound.set_result))
    try:
        await asyncio.wait(
            {bound, task}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{bound.result()}"
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
