"""What a learner exchanges: expert weights with peers, settings with the
coordinator.

Gossip sends each expert's float32 parameters, with the principal components
for the experts that read the ``geometry`` view; these functions list, copy,
check and blend them. :func:`finite_items` keeps the usable entries of a
mapping of numbers the coordinator sent.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner.experts import ExpertBank
from sfhfe_node.learner.geometry import OnlinePCA

__all__ = [
    "blend_weights",
    "check_blend",
    "export_weights",
    "finite_items",
    "weight_spec_of",
]


def weight_spec_of(
    bank: ExpertBank,
    pca: OnlinePCA,
    names: tuple[str, ...],
    geometry: tuple[str, ...],
) -> dict[str, dict[str, tuple[int, ...]]]:
    """Expert -> parameter -> shape of the float32 tensors gossip exchanges.

    ``geometry`` names the experts that also exchange the PCA components.
    """
    spec = {name: bank.spec(name) for name in names}
    for name in geometry:
        spec[name]["components"] = tuple(pca.components.shape)
    return spec


def export_weights(
    bank: ExpertBank, pca: OnlinePCA, name: str, geometry: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Float32 copies of expert ``name``'s exchanged parameters."""
    params = bank.export(name)
    if name in geometry:
        params["components"] = pca.components.numpy().copy()
    return params


def check_blend(
    spec: dict[str, tuple[int, ...]] | None,
    name: str,
    params: dict[str, np.ndarray],
    factor: float,
) -> None:
    """Raise :class:`LearnerError` unless ``params`` and ``factor`` may be blended.

    ``spec`` is expert ``name``'s entry of :func:`weight_spec_of` (None for an
    unknown expert). The factor must be a number in [0, 1] and ``params``
    must hold exactly the parameters of ``spec``, each a float32 array of
    its shape with finite values only.
    """
    if spec is None:
        raise LearnerError(f"unknown expert {name!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        kind = type(factor).__name__
        raise LearnerError(f"blend factor must be a number, got {kind}")
    if not 0.0 <= factor <= 1.0:
        raise LearnerError(f"blend factor {factor} is outside [0, 1]")
    if not isinstance(params, dict) or set(params) != set(spec):
        got = sorted(map(str, params)) if isinstance(params, dict) else params
        raise LearnerError(
            f"expert {name} needs parameters {sorted(spec)}, got {got}"
        )
    for pname, shape in spec.items():
        value = params[pname]
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            raise LearnerError(f"{name}.{pname} must be a float32 array")
        if value.shape != shape:
            raise LearnerError(
                f"{name}.{pname} has shape {value.shape}; expected {shape}"
            )
        if not np.isfinite(value).all():
            raise LearnerError(f"{name}.{pname} holds values that are not finite")


def blend_weights(
    bank: ExpertBank,
    pca: OnlinePCA,
    name: str,
    params: dict[str, np.ndarray],
    factor: float,
    geometry: tuple[str, ...],
) -> None:
    """Blend checked ``params`` into expert ``name`` (see :func:`check_blend`)."""
    head = {pname: params[pname] for pname in bank.spec(name)}
    bank.blend(name, head, float(factor))
    if name in geometry:
        pca.blend(params["components"], float(factor))


def finite_items(mapping: Any) -> list[tuple[str, float]]:
    """The ``(name, value)`` pairs of ``mapping`` with a string name and a finite
    number as value (booleans excluded); none unless it is a dict."""
    if not isinstance(mapping, dict):
        return []
    items = []
    for name, value in mapping.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(name, str) and math.isfinite(value):
            items.append((name, float(value)))
    return items
