"""Checking a peer's expert weights and combining them with one's own.

Free of I/O: arrays in, a verdict or new arrays out. A receiver calls
:func:`check_weights` on every ``weights`` message and keeps the accepted ones
in a :class:`RoundBuffer`, the latest per peer and expert. Once per exchange
round it combines each expert's updates with :func:`combine`:

1. every update becomes a delta from the node's own weights, ``d_i = p_i - w``;
2. each delta is clipped to the norm ``tau = min(median_i |d_i|,
   clip_ratio * |w|)``: a peer far from everyone else counts no more than a
   typical one, and no peer moves the node by more than a share of its own
   size;
3. the clipped deltas are averaged with weights ``a_i = trust * similarity *
   min(samples_i / samples_own, 1)`` (:func:`update_weight`), each in [0, 1];
4. the node moves ``blend * sum(a) / (1 + sum(a))`` of the way along that
   average: its own weights count as one full vote, so one peer of full
   weight moves it at most ``blend / 2`` of a clipped delta, and a hostile
   peer among honest ones much less.

The sample count in a message is the sender's claim; the ratio is capped at 1
so that claiming more records buys no extra weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sfhfe_node.errors import ProtocolError

__all__ = [
    "NORM_RATIO",
    "NORM_SLACK",
    "RoundBuffer",
    "Update",
    "WeightSpec",
    "blend_params",
    "check_weights",
    "combine",
    "params_norm",
    "update_weight",
]

NORM_RATIO = 10.0
NORM_SLACK = 1.0

WeightSpec = Mapping[str, Mapping[str, tuple[int, ...]]]


def params_norm(params: Mapping[str, np.ndarray]) -> float:
    """L2 norm of all parameters taken together, summed in float64."""
    total = 0.0
    for value in params.values():
        flat = np.asarray(value).reshape(-1)
        total += float(np.dot(flat, flat.astype(np.float64)))
    return math.sqrt(total)


def check_weights(
    spec: WeightSpec,
    expert: str,
    params: Mapping[str, np.ndarray],
    own_norm: float | None = None,
    *,
    ratio: float = NORM_RATIO,
    slack: float = NORM_SLACK,
) -> None:
    """Accept ``params`` for ``expert`` or raise :class:`ProtocolError`.

    ``spec`` maps each expert to its parameter names and exact shapes. The
    parameter set must match it exactly, every array must be float32 and
    finite, and when ``own_norm`` is given the L2 norm of ``params`` must not
    exceed ``ratio * own_norm + slack`` (a peer may have grown its weights,
    not blown them up). Reasons: ``unknown_expert``, ``bad_shape``,
    ``bad_dtype``, ``not_finite``, ``norm_too_large``.
    """
    shapes = spec.get(expert)
    if shapes is None:
        raise ProtocolError("unknown_expert", f"expert {expert!r} is not known here")
    if set(params) != set(shapes):
        extra = sorted(set(params) - set(shapes))[:4]
        missing = sorted(set(shapes) - set(params))[:4]
        raise ProtocolError(
            "bad_shape",
            f"{expert} parameters differ: unexpected {extra}, missing {missing}",
        )
    for name, value in params.items():
        if value.dtype != np.float32:
            raise ProtocolError(
                "bad_dtype", f"{expert}.{name} has dtype {value.dtype}; need float32"
            )
        if tuple(value.shape) != tuple(shapes[name]):
            raise ProtocolError(
                "bad_shape",
                f"{expert}.{name} has shape {tuple(value.shape)}; "
                f"need {tuple(shapes[name])}",
            )
        if not np.isfinite(value).all():
            raise ProtocolError("not_finite", f"{expert}.{name} holds NaN or infinity")
    if own_norm is None:
        return
    norm = params_norm(params)
    bound = ratio * own_norm + slack
    if norm > bound:
        raise ProtocolError(
            "norm_too_large",
            f"{expert} norm {norm:.4g} exceeds {bound:.4g} ({ratio}x own {own_norm:.4g}"
            f" + {slack})",
        )


def update_weight(
    trust: float, similarity: float, samples: int, own_samples: int
) -> float:
    """Weight of one peer's update: trust x similarity x capped sample share.

    ``trust`` is clipped to [0, 1], a negative similarity counts as none, and
    the sample share ``samples / own_samples`` is capped at 1 (a node that
    has learned nothing yet takes its peers' records at face value, capped).
    The result is in [0, 1].
    """
    trust = min(max(trust, 0.0), 1.0)
    similarity = min(max(similarity, 0.0), 1.0)
    share = min(max(samples, 0) / max(own_samples, 1), 1.0)
    return trust * similarity * share


@dataclass(frozen=True)
class Update:
    """One accepted ``weights`` message waiting for the end of its round."""

    peer: str
    params: Mapping[str, np.ndarray]
    weight: float


class RoundBuffer:
    """The accepted updates of the current round, the latest per peer and expert.

    Bounded by construction: at most one update per (peer, expert), and the
    node only accepts updates from linked peers.
    """

    def __init__(self) -> None:
        self._updates: dict[str, dict[str, Update]] = {}

    def __len__(self) -> int:
        return sum(len(per_peer) for per_peer in self._updates.values())

    def add(self, expert: str, update: Update) -> None:
        """Keep ``update``, replacing an earlier one of the same peer and expert."""
        self._updates.setdefault(expert, {})[update.peer] = update

    def drop_peer(self, peer: str) -> None:
        """Forget every pending update of ``peer``."""
        for per_peer in self._updates.values():
            per_peer.pop(peer, None)

    def take(self) -> dict[str, list[Update]]:
        """Return the pending updates by expert and start a new round."""
        taken = {
            expert: list(per_peer.values())
            for expert, per_peer in self._updates.items()
            if per_peer
        }
        self._updates = {}
        return taken


def combine(
    own: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    blend: float,
    clip_ratio: float = 1.0,
) -> tuple[dict[str, np.ndarray], float]:
    """Robustly combine ``updates`` of one expert with the node's ``own`` weights.

    Returns ``(target, factor)``: the node should move ``factor`` of the way
    from its weights to ``target`` (``own`` plus the weighted mean of the
    clipped deltas), as ``blend_params(current, target, factor)`` does. The
    learner may have trained since ``own`` was read; moving toward a target
    rather than replacing the weights keeps that training. ``factor`` is 0.0
    when no update carries weight.
    """
    if not 0.0 <= blend <= 1.0 or not clip_ratio > 0:
        raise ValueError(
            f"combine needs 0 <= blend <= 1 and clip_ratio > 0; got {blend}, "
            f"{clip_ratio}"
        )
    weighted = [update for update in updates if update.weight > 0.0]
    total = sum(update.weight for update in weighted)
    if not weighted or blend == 0.0:
        return {name: value.copy() for name, value in own.items()}, 0.0
    deltas = [
        {name: np.asarray(update.params[name], np.float64) - value
         for name, value in own.items()}
        for update in weighted
    ]
    norms = [params_norm(delta) for delta in deltas]
    tau = min(float(np.median(norms)), clip_ratio * params_norm(own))
    mean = {name: np.zeros(value.shape, np.float64) for name, value in own.items()}
    for update, delta, norm in zip(weighted, deltas, norms):
        scale = update.weight / total * (min(1.0, tau / norm) if norm > 0 else 0.0)
        for name, value in delta.items():
            mean[name] += scale * value
    target = {
        name: (value + mean[name]).astype(np.float32) for name, value in own.items()
    }
    return target, blend * total / (1.0 + total)


def blend_params(
    own: Mapping[str, np.ndarray], incoming: Mapping[str, np.ndarray], factor: float
) -> dict[str, np.ndarray]:
    """Return ``own + factor * (incoming - own)`` for every parameter, as float32."""
    return {
        name: (value + factor * (incoming[name] - value)).astype(np.float32)
        for name, value in own.items()
    }
