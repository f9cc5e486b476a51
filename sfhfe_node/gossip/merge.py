"""Checking a peer's expert weights and blending them into one's own.

Free of I/O: arrays in, a verdict or new arrays out. A receiver calls
:func:`check_weights` on every ``weights`` message, then blends an accepted
one with the factor from :func:`blend_factor`.

Limitation: updates are applied one message at a time. Several peers are
combined only through their small, trust-scaled factors, not yet by a robust
rule (clipping or trimmed mean) across peers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from sfhfe_node.errors import ProtocolError

__all__ = [
    "NORM_RATIO",
    "NORM_SLACK",
    "WeightSpec",
    "check_weights",
    "params_norm",
    "blend_factor",
    "blend_params",
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


def blend_factor(base: float, trust: float, similarity: float) -> float:
    """Share of a peer's weights to mix in: ``base * trust * max(similarity, 0)``.

    ``base`` is the node's blend setting in [0, 1]; ``trust`` is clipped to
    [0, 1] and a negative similarity counts as none. The result is in [0, 1].
    """
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"blend base must be in [0, 1], got {base}")
    trust = min(max(trust, 0.0), 1.0)
    return base * trust * min(max(similarity, 0.0), 1.0)


def blend_params(
    own: Mapping[str, np.ndarray], incoming: Mapping[str, np.ndarray], factor: float
) -> dict[str, np.ndarray]:
    """Return ``own + factor * (incoming - own)`` for every parameter, as float32."""
    return {
        name: (value + factor * (incoming[name] - value)).astype(np.float32)
        for name, value in own.items()
    }
