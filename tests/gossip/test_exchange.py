"""Frame sizing and packing of a round's experts, without a loop."""

from __future__ import annotations

import numpy as np

from sfhfe_node.gossip.exchange import MIN_FRAME, frame_bytes, frame_cap, pack


def _expert(values: int) -> dict[str, np.ndarray]:
    return {"w": np.zeros(values, dtype=np.float32)}


def test_frame_cap_is_never_below_the_minimum() -> None:
    """Tiny experts still get a 64 KiB frame cap."""
    assert frame_cap({"tiny": {"w": (2,)}}) == MIN_FRAME


def test_experts_that_fit_travel_in_one_frame() -> None:
    """Experts whose sizes add up under the cap share a frame."""
    experts = {"a": _expert(10), "b": _expert(10)}
    assert pack(experts, 4096) == [experts]


def test_experts_over_the_cap_are_split_and_an_oversize_one_travels_alone() -> None:
    """Packing opens a new frame when the next expert would not fit."""
    experts = {"a": _expert(600), "b": _expert(600), "c": _expert(5000)}
    size = frame_bytes({"w": (600,)})
    groups = pack(experts, 256 + size + 10)
    assert [list(group) for group in groups] == [["a"], ["b"], ["c"]]
