"""A small :class:`GossipHost` over numpy arrays, and helpers for node tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from sfhfe_node.gossip.merge import blend_params, params_norm
from tests.conftest import TIMEOUT

__all__ = ["SPEC", "ArrayHost", "until"]

SPEC: dict[str, dict[str, tuple[int, ...]]] = {
    name: {
        "0.weight": (48, 8),
        "0.bias": (48,),
        "2.weight": (32, 48),
        "2.bias": (32,),
        "4.weight": (2, 32),
        "4.bias": (2,),
    }
    for name in ("geometry", "temporal", "drift")
}


class ArrayHost:
    """Experts as dicts of float32 arrays; imports blend in place and are logged."""

    def __init__(self, seed: int, embedding: list[float], usage: float = 1.0) -> None:
        rng = np.random.default_rng(seed)
        self.weights = {
            expert: {
                name: rng.normal(0.0, 0.5, shape).astype(np.float32)
                for name, shape in shapes.items()
            }
            for expert, shapes in SPEC.items()
        }
        self.vector = np.asarray(embedding, dtype=np.float32)
        self.usage = {expert: usage / (i + 1) for i, expert in enumerate(SPEC)}
        self.imports: list[tuple[str, float]] = []

    def embedding(self) -> np.ndarray:
        return self.vector

    def expert_usage(self) -> dict[str, float]:
        return dict(self.usage)

    def records(self) -> int:
        return 1000

    def weight_spec(self) -> dict[str, dict[str, tuple[int, ...]]]:
        return SPEC

    async def export_experts(
        self, names: list[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        return {
            name: {key: value.copy() for key, value in self.weights[name].items()}
            for name in names
        }

    async def import_expert(
        self, expert: str, params: dict[str, np.ndarray], factor: float
    ) -> None:
        self.weights[expert] = blend_params(self.weights[expert], params, factor)
        self.imports.append((expert, factor))

    def own_norm(self, expert: str) -> float:
        return params_norm(self.weights[expert])


async def until(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``check()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
