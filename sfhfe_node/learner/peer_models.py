"""Peers' models competing with the node's own, prequentially.

A node's own experts learn only from its own stream. What its peers send is
kept beside them: :class:`PeerModels` holds, per peer, a forward-only copy of
the peer's latest expert weights (a *slot*). On every batch each complete
slot scores the batch's rows through the node's own feature views, router
choices and gate, and the node predicts the mixture

    p = (1 - sum_j a_j) p_own + sum_j a_j p_j

where ``a_j`` is slot ``j``'s weight. The weights are learned online, on the
node's *future* records: a batch is predicted with the weights as they stood
before it, and only once its labels are known does each ``a_j`` take one
projected gradient step on the mixture's log-loss (Zinkevich's online
gradient descent, on the simplex capped at ``cap``). A new slot starts at
``a_j = 0``; a peer whose model does not predict this node's records better
than the mixture does never earns weight, and one that stops helping loses
it again at the pace of the step size. The own model always keeps at least
``1 - cap`` of the vote.

Weights arrive already checked by the gossip layer; :meth:`PeerModels.store`
checks them again (names, shapes, dtype, finite values) since nothing but the
learner's own state is trusted here. The slots are part of the learner's
state and are saved and restored with it.

Limitation: only classification mixes peers in; for regression and the
task ``"none"`` the peers' models are kept (they cost memory, not time) but
not used, since a peer's outputs are in units of its own target scaling.

Reference: M. Zinkevich, "Online convex programming and generalized
infinitesimal gradient ascent", ICML 2003.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner.exchange import check_blend
from sfhfe_node.learner.experts import ExpertBank
from sfhfe_node.learner.mixture import PROBA_FLOOR, mix

__all__ = ["PeerModels"]

_RATIO_CAP = 10.0  # bound of one row's gradient term, in units of the mixture


@dataclass
class _Slot:
    """One peer's latest weights, and what they earned here."""

    bank: ExpertBank
    components: torch.Tensor | None = None
    received: set[str] = field(default_factory=set)
    weight: float = 0.0
    updates: int = 0
    batches: int = 0
    age: int = 0  # updates stored into any slot since this one's last


class PeerModels:
    """Forward-only copies of peers' experts, mixed in by learned weights.

    Parameters:
        new_bank: builds an expert bank laid out like the node's own (its
            initial weights do not matter: a slot predicts only once every
            expert has been received).
        spec: expert -> parameter -> shape of the exchanged tensors
            (:meth:`Learner.weight_spec`).
        geometry: experts whose view is the projection on the principal
            components; a slot projects with the components its peer sent.
        slots: peers kept at most (default 4: three similar peers and an
            explorer). A new peer beyond that replaces the slot with the
            least weight, the stalest first among equals.
        lr: step size of the weights' gradient steps (default 0.1, per
            batch). Higher follows a peer that starts or stops helping
            sooner and wobbles more.
        cap: largest total weight of the peers, in [0, 1) (default 0.5).

    Example::

        >>> from sfhfe_node.learner import Learner
        >>> learner = Learner(2, seed=1)
        >>> models = learner.peer_models
        >>> len(models), models.total_weight
        (0, 0.0)
    """

    def __init__(
        self,
        new_bank: Callable[[], ExpertBank],
        spec: dict[str, dict[str, tuple[int, ...]]],
        geometry: tuple[str, ...],
        *,
        slots: int = 4,
        lr: float = 0.1,
        cap: float = 0.5,
    ) -> None:
        if slots < 1 or not lr > 0 or not 0.0 <= cap < 1.0:
            raise LearnerError(
                f"peer models need slots >= 1, lr > 0 and 0 <= cap < 1; got "
                f"{slots}, {lr}, {cap}"
            )
        self.new_bank = new_bank
        self.spec = spec
        self.geometry = geometry
        self.slots = slots
        self.lr = lr
        self.cap = cap
        self.helped = 0
        self.hurt = 0
        self._slots: dict[str, _Slot] = {}
        self._pending: tuple[list[str], np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def total_weight(self) -> float:
        """The peers' share of the vote now, in [0, cap]."""
        return float(sum(slot.weight for slot in self._slots.values()))

    def weights(self) -> dict[str, float]:
        """Each peer's weight now, by peer id."""
        return {peer: slot.weight for peer, slot in self._slots.items()}

    def store(self, peer: str, expert: str, params: dict[str, np.ndarray]) -> None:
        """Keep ``params`` as peer ``peer``'s latest weights of ``expert``.

        Raises :class:`LearnerError`, storing nothing, for an unknown expert
        or parameters that do not match its names, shapes and dtype or hold
        a value that is not finite.
        """
        if not isinstance(peer, str) or not peer:
            raise LearnerError("a peer model needs a peer id")
        check_blend(self.spec.get(expert), expert, params, 1.0)
        slot = self._slots.get(peer)
        if slot is None:
            slot = self._make_room(peer)
        head = {name: params[name] for name in slot.bank.spec(expert)}
        slot.bank.blend(expert, head, 1.0)
        if expert in self.geometry and "components" in params:
            slot.components = torch.from_numpy(params["components"].copy())
        slot.received.add(expert)
        slot.updates += 1
        for other in self._slots.values():
            other.age += 1
        slot.age = 0

    def forget(self, peer: str) -> None:
        """Drop peer ``peer``'s slot and the weight it earned."""
        self._slots.pop(peer, None)

    def _make_room(self, peer: str) -> _Slot:
        if len(self._slots) >= self.slots:
            victim = min(
                self._slots, key=lambda p: (self._slots[p].weight, -self._slots[p].age)
            )
            del self._slots[victim]
        slot = _Slot(self.new_bank())
        self._slots[peer] = slot
        return slot

    def _ready(self) -> list[str]:
        return [
            peer for peer, slot in self._slots.items()
            if len(slot.received) == len(self.spec)
        ]

    @torch.no_grad()
    def predict(
        self,
        views: dict[str, torch.Tensor],
        z: torch.Tensor,
        active: np.ndarray,
        gate: torch.Tensor,
        mask: torch.Tensor,
        own: np.ndarray,
        *,
        keep: bool = True,
    ) -> np.ndarray:
        """The mixed class probabilities of a batch, [n, classes] float32.

        ``views`` and ``z`` are the batch's feature views and standardised
        records, ``active`` and ``gate`` the router's choices and mixing
        weights, ``mask`` the class logit offsets and ``own`` the own
        mixture's probabilities, returned unchanged when no slot is
        complete. With ``keep`` the slots' probabilities are kept for
        :meth:`learn`.
        """
        if keep:
            self._pending = None
        ready = self._ready()
        if not ready:
            return own
        index = torch.from_numpy(active)
        scored = []
        for peer in ready:
            slot = self._slots[peer]
            outputs = slot.bank.forward(self._views_of(slot, views, z))
            probs = torch.softmax(outputs + mask, dim=2)
            scored.append(mix(probs, index, gate).numpy().astype(np.float64))
        peers = np.stack(scored)
        if keep:
            self._pending = (ready, own.astype(np.float64), peers)
        a = np.array([self._slots[peer].weight for peer in ready])
        if not a.any():
            return own
        mixed = (1.0 - a.sum()) * own + np.tensordot(a, peers, axes=1)
        return mixed.astype(np.float32)

    def _views_of(
        self, slot: _Slot, views: dict[str, torch.Tensor], z: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if slot.components is None or "geometry" not in views:
            return views
        width = slot.components.shape[1]
        rest = views["geometry"][:, width:]
        return {**views, "geometry": torch.cat([z @ slot.components, rest], 1)}

    def learn(self, y: np.ndarray) -> None:
        """Step every scored slot's weight on the labels ``y`` of the batch
        :meth:`predict` scored last (negative or NaN: unknown)."""
        if self._pending is None:
            return
        ready, own, peers = self._pending
        self._pending = None
        y = np.asarray(y, dtype=np.float64)
        known = np.isfinite(y) & (y >= 0) & (y < own.shape[1])
        if not known.any():
            return
        rows = np.flatnonzero(known)
        target = y[rows].astype(np.int64)
        p_own = own[rows, target]
        p_peers = peers[:, rows, target]  # [slots, rows]
        a = np.array([self._slots[peer].weight for peer in ready])
        p_mix = np.maximum((1.0 - a.sum()) * p_own + a @ p_peers, PROBA_FLOOR)
        ratio = np.clip((p_peers - p_own) / p_mix, -_RATIO_CAP, _RATIO_CAP)
        self._count(own[rows], peers[:, rows], a, target)
        stepped = np.maximum(a + self.lr * ratio.mean(axis=1), 0.0)
        stepped = _cap_sum(stepped, self.cap)
        for peer, value in zip(ready, stepped):
            slot = self._slots[peer]
            slot.weight = float(value)
            slot.batches += 1

    def _count(
        self, own: np.ndarray, peers: np.ndarray, a: np.ndarray, target: np.ndarray
    ) -> None:
        """Count the rows the peers' share turned right (helped) or wrong."""
        if not a.any():
            return
        mixed = (1.0 - a.sum()) * own + np.tensordot(a, peers, axes=1)
        own_right = own.argmax(axis=1) == target
        mixed_right = mixed.argmax(axis=1) == target
        self.helped += int((mixed_right & ~own_right).sum())
        self.hurt += int((own_right & ~mixed_right).sum())

    def status(self) -> dict[str, Any]:
        """What the peers' models earned, as plain data."""
        return {
            "weight": round(self.total_weight, 6),
            "helped": self.helped,
            "hurt": self.hurt,
            "peers": {
                peer: {
                    "weight": round(slot.weight, 6),
                    "updates": slot.updates,
                    "batches": slot.batches,
                    "complete": len(slot.received) == len(self.spec),
                }
                for peer, slot in self._slots.items()
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Every slot and counter, as tensors and plain values."""
        return {
            "helped": self.helped,
            "hurt": self.hurt,
            "slots": {
                peer: {
                    "flat": slot.bank.flat.detach().clone(),
                    "components": (
                        None if slot.components is None else slot.components.clone()
                    ),
                    "received": sorted(slot.received),
                    "numbers": [slot.weight, slot.updates, slot.batches, slot.age],
                }
                for peer, slot in self._slots.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (raises on a malformed part)."""
        slots = {}
        for peer, saved in state["slots"].items():
            if not isinstance(peer, str) or len(slots) >= self.slots:
                raise ValueError("peer model slots are malformed")
            slot = _Slot(self.new_bank())
            flat = saved["flat"]
            if not isinstance(flat, torch.Tensor) or flat.shape != slot.bank.flat.shape:
                raise ValueError(f"peer model {peer!r} has another layout")
            with torch.no_grad():
                slot.bank.flat.copy_(flat)
            components = saved["components"]
            if components is not None:
                slot.components = torch.as_tensor(components).clone()
            received = {str(name) for name in saved["received"]}
            if not received <= set(self.spec):
                raise ValueError(f"peer model {peer!r} names unknown experts")
            slot.received = received
            weight, updates, batches, age = saved["numbers"]
            if not 0.0 <= float(weight) <= 1.0:
                raise ValueError(f"peer model {peer!r} has weight {weight}")
            slot.weight = float(weight)
            slot.updates, slot.batches, slot.age = int(updates), int(batches), int(age)
            slots[peer] = slot
        self._slots = slots
        self.helped, self.hurt = int(state["helped"]), int(state["hurt"])
        self._pending = None


def _cap_sum(values: np.ndarray, cap: float) -> np.ndarray:
    """Scale non-negative ``values`` down so that they sum to at most ``cap``."""
    total = float(values.sum())
    return values * (cap / total) if total > cap else values
