"""Checkpoints are atomic, checked on load, and never run code."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from sfhfe_node.client.checkpoint import CheckpointStore
from sfhfe_node.learner import Learner


def test_round_trip(tmp_path: Path) -> None:
    """What was saved loads back equal, tensors included."""
    store = CheckpointStore(tmp_path)
    state = {"position": 12, "weights": torch.arange(4.0), "names": ["a", "b"]}
    store.save(state)
    loaded = store.load()
    assert loaded["position"] == 12 and loaded["names"] == ["a", "b"]
    assert torch.equal(loaded["weights"], state["weights"])


def test_torn_checkpoint_falls_back_to_previous(tmp_path: Path) -> None:
    """A checkpoint cut short by a crash is ignored for the one before it."""
    store = CheckpointStore(tmp_path)
    store.save({"position": 1})
    store.save({"position": 2})
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 2])
    assert store.load() == {"position": 1}


def test_flipped_byte_fails_the_digest(tmp_path: Path) -> None:
    """A single changed byte in the payload is detected."""
    store = CheckpointStore(tmp_path)
    store.save({"position": 1})
    store.save({"position": 2})
    data = bytearray(store.path.read_bytes())
    data[-10] ^= 0xFF
    store.path.write_bytes(bytes(data))
    assert store.load() == {"position": 1}


def test_no_checkpoint_loads_none(tmp_path: Path) -> None:
    """A fresh state directory has no checkpoint."""
    assert CheckpointStore(tmp_path).load() is None


class Planted:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    """A well-formed checkpoint whose payload holds code is not loaded."""
    store = CheckpointStore(tmp_path)
    buffer = io.BytesIO()
    torch.save({"position": Planted()}, buffer, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    store.save({"position": 0})
    payload = buffer.getvalue()
    header = struct.pack("<8s32sQ", b"SFHFECK1", hashlib.sha256(payload).digest(), len(payload))
    store.path.write_bytes(header + payload)
    assert not store.previous.exists()
    assert store.load() is None


def test_learner_with_peer_models_round_trips(tmp_path: Path) -> None:
    """A learner holding peers' models is checkpointed and restored exactly."""
    rng = np.random.default_rng(0)
    learner, peer = Learner(3, seed=0), Learner(3, seed=2)
    for _ in range(5):
        X = rng.normal(size=(32, 3))
        y = (X[:, 0] > 0).astype(np.float64)
        peer.step(X, y)
    for name in learner.weight_spec():
        learner.store_peer_expert("node-b", name, peer.export_expert(name))
    for _ in range(3):
        X = rng.normal(size=(32, 3))
        learner.step(X, (X[:, 0] > 0).astype(np.float64))
    store = CheckpointStore(tmp_path)
    store.save({"learner": learner.state_dict()})
    restored = Learner(3, seed=0)
    restored.load_state_dict(store.load()["learner"])
    assert restored.peer_models.status() == learner.peer_models.status()
    X = rng.normal(size=(32, 3))
    y = (X[:, 0] > 0).astype(np.float64)
    expected = learner.step(X, y)[0].proba
    np.testing.assert_array_equal(restored.step(X, y)[0].proba, expected)
